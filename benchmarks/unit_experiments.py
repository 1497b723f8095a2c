"""Real runs of the unit experiments on EfficientNet-Lite0 (real ImageNet weights).

    .venv/bin/python benchmarks/unit_experiments.py explain [--run RUN]
    .venv/bin/python benchmarks/unit_experiments.py dtd --per-class 30 [--run RUN_DTD]
    .venv/bin/python benchmarks/unit_experiments.py imagenet
    .venv/bin/python benchmarks/unit_experiments.py adversarial --images 100

explain: five ImageNet sample photos, layer bn2 (exact GAP + linear split).
dtd: a linear probe on bn2's pooled features, trained on the first half of each DTD10 class; units of
blocks.6 ranked by ablation on that half and tested on the other; with a dissection run of blocks.6 on
DTD10 (netdissect data convert folders + netdissect dissect) it says whether a class's top units are
labelled with that texture.
imagenet: the real ImageNet head on the 1000 sample photos (one per class): each class's top bn2 units (by
the exact contribution w_ck * F_k, in-sample and held out) ablated; drop of the class's probability vs random
units of the same count.
adversarial: PGD (and CW-L2) targeted at five classes; units ranked by exact single-unit ablation of bn2
on each class's sample photo (in-sample: there is one photo per class).
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from netdissect.data.classes import ClassData
from netdissect.experiments.ablation import ablation
from netdissect.models import load_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "assets" / "data"
IMAGENET, DTD = SHARED / "imagenet-samples", SHARED / "dtd10"
OUT = Path("runs/unit-experiments")


def imagenet_data(n=None):
    from netdissect.imagetext.classifier import imagenet_classes

    files = sorted(IMAGENET.glob("*.jpg"))
    data = ClassData(tuple(files), tuple(range(len(files))), tuple(imagenet_classes()))
    return data if n is None else data.subset(list(range(0, 1000, 1000 // n))[:n])


def batches(data, pre, bs=16):
    return lambda: ((pre(torch.from_numpy(im)), torch.from_numpy(t)) for im, t in data.batches(bs))


def run_explain(args):
    from netdissect.experiments.explain import explain_file
    from netdissect.results import DissectionData

    loaded = load_model("efficientnet_lite0")
    data = imagenet_data()
    run = DissectionData.load(args.run) if args.run else None
    for i in (1, 207, 409, 530, 950):  # goldfish, golden retriever, analog clock, digital clock, orange
        e = explain_file(loaded, "bn2", data.paths[i], run=run, class_names=data.classes, top=4)
        e.save(OUT / "explain", stem=data.paths[i].stem)
        err = abs(e.contributions.sum() - (e.logit - e.bias))
        units = ", ".join(f"u{r.unit} {r.contribution:+.2f} {r.label or '-'}"
                          + (f" ({r.iou:.2f})" if r.label else "") for r in e.units.itertuples())
        print(f"{data.paths[i].stem}: predicted {e.class_name} logit {e.logit:.3f} (bias {e.bias:.3f}, "
              f"|sum - (logit - bias)| = {err:.1e}); top: {units}")


def run_dtd(args):
    torch.set_num_threads(2)
    torch.manual_seed(0)  # the probe's initialisation
    loaded = load_model("efficientnet_lite0")
    base, pre = loaded.module, loaded.preprocess
    full = ClassData.from_folders(DTD)
    keep = [i for c in range(10) for i in [j for j, t in enumerate(full.targets) if t == c][: args.per_class]]
    data = full.subset(keep)
    train, test = data.split(0.5)
    t0 = time.perf_counter()
    with torch.no_grad():
        feats = torch.cat([base.forward_features(x).mean((2, 3)) for x, _ in batches(train, pre)()])
    y = torch.tensor(train.targets)
    probe = nn.Linear(feats.shape[1], 10)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(probe(feats), y).backward()
        opt.step()
    base.classifier = probe
    base.eval()
    print(f"probe trained on {len(train)} images ({time.perf_counter() - t0:.0f} s), "
          f"train accuracy {(probe(feats).argmax(1) == y).float().mean():.2f}")
    t0 = time.perf_counter()
    result = ablation(base, "blocks.6", batches(train, pre), batches(test, pre), data.classes, ns=(1, 2, 4, 8, 20, 64))
    print(f"ablation of blocks.6 ({result.info['units']} units; split {result.method}): "
          f"{time.perf_counter() - t0:.0f} s")
    iou = labels = None
    if args.run:
        from netdissect.results import DissectionData

        run = DissectionData.load(args.run)
        t = run.labels[run.labels["layer"] == "blocks.6"].sort_values("unit")
        iou, labels = t["iou"].to_numpy(), t["label"].tolist()
        tex = run.iou("blocks.6")
    result.save(OUT / "dtd-ablation", iou=iou, labels=labels)
    s = result.class_summary(4).merge(result.class_summary(20)[["class", "top20_ablated", "only_top20_kept"]])
    hits = expected = 0.0
    for r in s.itertuples():
        line = (f"{r.class_name:12s} BA test {r.baseline:.3f}; top-4 ablated {r.top4_ablated:.3f}, top-20 ablated "
                f"{r.top20_ablated:.3f}; only top-20 kept {r.only_top20_kept:.3f}")
        if labels is not None:
            c = r[1]
            top = result.top_units(c, 4)
            named = [labels[u] for u in top]
            line += f"; top-4 units {[u + 1 for u in top]} labels {named}"
            if r.class_name in tex.columns:
                own = tex[r.class_name].to_numpy()
                rank_of = [int((own > own[u]).sum()) + 1 for u in top]
                # units whose dissection label is this texture: where they fall in the class's importance order
                lab = [u for u in range(len(labels)) if labels[u] == r.class_name]
                pos = {int(u): i + 1 for i, u in enumerate(result.units_ranked[c])}
                ranks = sorted(pos[u] for u in lab)
                line += (f"; their rank by IoU with '{r.class_name}' {rank_of} of {len(own)}; "
                         f"{len(lab)} units labelled '{r.class_name}', importance ranks "
                         f"{ranks[:6]}{' ...' if len(ranks) > 6 else ''} (median "
                         f"{np.median(ranks) if ranks else float('nan'):.0f} of {len(own)})")
                hits += sum(labels[u] == r.class_name for u in top)
                expected += 4 * len(lab) / len(labels)
        print(line)
    if iou is not None:
        print(f"top-4 units labelled with their class's texture: {hits:.0f} of {4 * len(s)} "
              f"(chance {expected:.1f})")
        table = result.importance_vs_iou(iou)
        print(table.to_string(index=False))
        counts = np.bincount(result.units_ranked[:, :4].ravel(), minlength=len(iou))
        from scipy.stats import spearmanr

        rho, pval = spearmanr(counts, iou)
        print(f"Spearman(classes a unit is top-4 for, its best IoU) over {len(iou)} units: {rho:.3f} (p={pval:.2g})")


def run_imagenet(args):
    """Ablate each ImageNet class's top bn2 units on its sample photo (exact: bn2 -> GAP -> linear).

    With bn2 feeding a global average pool and the linear classifier, zeroing unit k moves every logit by
    exactly -w_ck * F_k (F_k = the unit's pooled activation), so each ablation is computed from the pooled
    features with no further pass; a few are checked against real forwards with the units zeroed.
    """
    import json

    from netdissect.experiments.ablation import ablate_batched
    from netdissect.experiments.split import split_model

    torch.set_num_threads(2)
    loaded = load_model("efficientnet_lite0")
    model, pre = loaded.module, loaded.preprocess
    data = imagenet_data()
    split = split_model(model, "bn2")
    t0 = time.perf_counter()
    out = OUT / "imagenet-ablation"
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "pooled.npy"  # the one expensive step: 1000 photos to bn2
    if cache.is_file():
        pooled = torch.from_numpy(np.load(cache))
    else:
        with torch.no_grad():
            pooled = torch.cat([split.head(x).mean((2, 3)) for x, _ in batches(data, pre, 25)()]).double()
        np.save(cache, pooled.numpy())  # (1000, 1280), image i = class i
    w, b = model.classifier.weight.detach().double(), model.classifier.bias.detach().double()
    logits = pooled @ w.T + b
    print(f"{len(data)} photos through the network to bn2 and pooled: {time.perf_counter() - t0:.0f} s")
    k, units = pooled.shape
    cls = torch.arange(k)
    p_base = torch.softmax(logits, 1)[cls, cls]
    print(f"top-1 accuracy {(logits.argmax(1) == cls).float().mean():.3f}; own-class probability mean "
          f"{p_base.mean():.3f}, median {p_base.median():.3f}")
    contrib = w * pooled  # (1000, 1280): row c = w_c,k * F_k(photo of c), exact logit drop of ablating k
    loo = (pooled.sum(0, keepdim=True) - pooled) / (k - 1)  # mean pooled features of the other 999 photos
    rankings = {"in-sample w_ck*F_k(photo)": torch.argsort(-contrib, 1),
                "held-out w_ck*mean F_k(other photos)": torch.argsort(-(w * loo), 1),
                "weight w_ck": torch.argsort(-w, 1)}
    gen = torch.Generator().manual_seed(0)

    def own_prob(sel):  # sel (1000, U) bool: ablated units per class photo -> p_c on photo c
        z = logits - (pooled * sel) @ w.T
        return torch.softmax(z, 1)[cls, cls]

    # check the exact formula against real forwards (zeroing the units at bn2) on a few photos
    check = [1, 207, 409, 530, 950]
    with torch.no_grad():
        x = torch.cat([pre(torch.from_numpy(np.stack([data.load(i)]).transpose(0, 3, 1, 2))) for i in check])
        f = split.head(x)
        order = rankings["in-sample w_ck*F_k(photo)"]
        sel = torch.zeros(len(check), units, dtype=torch.bool)
        for j, c in enumerate(check):
            sel[j, order[c, :20]] = True
        real = torch.stack([split.tail(ablate_batched(f[j:j + 1], sel[j:j + 1]), x[j:j + 1])[0]
                            for j in range(len(check))]).double()
        full = torch.zeros(k, units, dtype=torch.bool)
        full[check] = sel
        pred = logits[check] - (pooled[check] * sel) @ w.T
    print(f"exact formula vs real forward with the top-20 zeroed, {len(check)} photos: max |logit difference| "
          f"{(real - pred).abs().max():.1e}")
    ns, draws = (1, 2, 4, 8, 20, 64, 128), 20
    random_drop = {}  # n -> (1000,) drop averaged over `draws` random unit sets per photo
    for n in ns:
        rand = torch.zeros(k, dtype=torch.float64)
        for _ in range(draws):
            r = torch.rand(k, units, generator=gen).argsort(1)[:, :n]
            rand += (p_base - own_prob(torch.zeros(k, units, dtype=torch.bool).scatter_(1, r, True))) / draws
        random_drop[n] = rand
    rows = []
    for name, order in rankings.items():
        for n in ns:
            sel = torch.zeros(k, units, dtype=torch.bool)
            sel.scatter_(1, order[:, :n], True)
            drop = p_base - own_prob(sel)
            rand = random_drop[n]
            still = (logits - (pooled * sel) @ w.T).argmax(1) == cls
            rows.append({"ranking": name, "n": n, "drop_mean": float(drop.mean()), "drop_median": float(drop.median()),
                         "random_drop_mean": float(rand.mean()), "random_drop_median": float(rand.median()),
                         "p_after_mean": float((p_base - drop).mean()),
                         "top1_kept": float(still.double().mean())})
    import pandas as pd

    table = pd.DataFrame(rows)
    table.to_csv(out / "drops.csv", index=False)
    (out / "summary.json").write_text(json.dumps({
        "layer": "bn2", "images": k, "units": units, "random_draws": draws,
        "top1": float((logits.argmax(1) == cls).double().mean()), "p_base_mean": float(p_base.mean()),
        "p_base_median": float(p_base.median())}, indent=2))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def run_adversarial(args):
    from netdissect.experiments.adversarial import adversarial

    torch.set_num_threads(2)
    loaded = load_model("efficientnet_lite0")
    model, pre = loaded.module, loaded.preprocess
    data = imagenet_data()
    # exact single-unit ablation importance at bn2 for each class, on its own photo (probability metric)
    from netdissect.experiments.ablation import single_unit_selectors, sweep
    from netdissect.experiments.split import split_model

    targets = [409, 530, 817, 950, 980]  # analog clock, digital clock, sports car, orange, volcano
    split = split_model(model, "bn2")
    sub = data.subset(targets)
    counts = sweep(split, batches(sub, pre)(), single_unit_selectors(1280), 1000)
    prob = counts.probability()
    ranked = np.zeros((1000, 1280), int)
    imp = prob[1:] - prob[0][None]
    ranked[targets] = np.argsort(imp[:, targets].T, axis=1)
    # sources: the model's own ranking for any other class, by exact contribution on the data mean
    picks = [i for i in range(0, 1000, 1000 // args.images) if i not in targets][: args.images]
    images = torch.from_numpy(np.stack([data.load(i) for i in picks]).transpose(0, 3, 1, 2)).float() / 255
    with torch.no_grad():
        f = torch.cat([split.head(pre(torch.from_numpy(np.stack([data.load(i) for i in picks[j:j + 16]])
                                                   .transpose(0, 3, 1, 2)))) for j in range(0, len(picks), 16)])
    contrib = model.classifier.weight.detach()[:, None, :] * f.mean((2, 3))[None]  # (1000, N, U)
    mean_contrib = contrib.mean(1)
    others = [c for c in range(1000) if c not in targets]
    ranked[others] = torch.argsort(-mean_contrib[others], dim=1).numpy()
    tg = [targets[i % 5] for i in range(len(picks))]
    runs = (("pgd", {"eps": 4 / 255, "steps": args.steps}, len(picks)),
            ("cw", {"c": args.cw_c, "steps": args.cw_steps, "lr": args.cw_lr}, args.cw_images))
    for method, opts, n in [r for r in runs if r[0] in args.methods]:
        t0 = time.perf_counter()
        r = adversarial(model, "bn2", images[:n], tg[:n], ranked, mean=pre.mean, std=pre.std, method=method,
                        batch_size=20, **opts)
        r.save(OUT / f"adversarial-{method}", list(data.classes))
        print(f"{method}: {n} images, success {r.success_rate:.0%}, mean L2 {r.perturbation.mean():.3f}, "
              f"{time.perf_counter() - t0:.0f} s")
        print(r.groups.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        ok = r.adv_predictions == r.targets  # a failed attack leaves its image unchanged (CW) or partly moved
        if 1 < ok.sum() < len(ok):
            from netdissect.experiments.adversarial import group_changes

            print(f"successful attacks only ({ok.sum()} images):")
            print(group_changes(r.changes[ok], r.targets[ok], r.sources[ok], ranked, 4)
                  .to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["explain", "dtd", "imagenet", "adversarial"])
    ap.add_argument("--run", help="dissection run directory")
    ap.add_argument("--per-class", type=int, default=120)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cw-steps", type=int, default=30)
    ap.add_argument("--cw-images", type=int, default=20)
    ap.add_argument("--cw-c", type=float, default=1.0)
    ap.add_argument("--cw-lr", type=float, default=0.01)
    ap.add_argument("--methods", nargs="+", choices=["pgd", "cw"], default=["pgd", "cw"],
                    help="attacks to run (adversarial)")
    args = ap.parse_args()
    {"explain": run_explain, "dtd": run_dtd, "imagenet": run_imagenet,
     "adversarial": run_adversarial}[args.what](args)


if __name__ == "__main__":
    main()
