"""Real runs of the unit experiments on EfficientNet-Lite0 (real ImageNet weights).

    .venv/bin/python benchmarks/unit_experiments.py explain [--run RUN]
    .venv/bin/python benchmarks/unit_experiments.py dtd --per-class 30 [--run RUN_DTD]
    .venv/bin/python benchmarks/unit_experiments.py adversarial --images 100

explain: five ImageNet sample photos, layer bn2 (exact GAP + linear split).
dtd: a linear probe on bn2's pooled features, trained on the first half of each DTD10 class; units of
blocks.6 ranked by ablation on that half and tested on the other; with a dissection run of blocks.6 on
DTD10 (netdissect data convert folders + netdissect dissect) it says whether a class's top units are
labelled with that texture.
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
    for r in s.itertuples():
        line = (f"{r.class_name:12s} BA test {r.baseline:.3f}; top-4 ablated {r.top4_ablated:.3f}, top-20 ablated "
                f"{r.top20_ablated:.3f}; only top-20 kept {r.only_top20_kept:.3f}")
        if labels is not None:
            top = result.top_units(r[1], 4)
            named = [labels[u] for u in top]
            if r.class_name in tex.columns:
                own = tex[r.class_name].to_numpy()
                rank_of = [int((own > own[u]).sum()) + 1 for u in top]
                line += f"; top-4 labels {named}; their rank by IoU with '{r.class_name}' {rank_of} of {len(own)}"
        print(line)
    if iou is not None:
        print(result.importance_vs_iou(iou).to_string(index=False))


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
    for method, opts, n in (("pgd", {"eps": 4 / 255, "steps": args.steps}, len(picks)),
                            ("cw", {"c": 1.0, "steps": args.cw_steps, "lr": 0.01}, args.cw_images)):
        t0 = time.perf_counter()
        r = adversarial(model, "bn2", images[:n], tg[:n], ranked, mean=pre.mean, std=pre.std, method=method,
                        batch_size=20, **opts)
        r.save(OUT / f"adversarial-{method}", list(data.classes))
        print(f"{method}: {n} images, success {r.success_rate:.0%}, mean L2 {r.perturbation.mean():.3f}, "
              f"{time.perf_counter() - t0:.0f} s")
        print(r.groups.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["explain", "dtd", "adversarial"])
    ap.add_argument("--run", help="dissection run directory")
    ap.add_argument("--per-class", type=int, default=120)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cw-steps", type=int, default=30)
    ap.add_argument("--cw-images", type=int, default=20)
    args = ap.parse_args()
    {"explain": run_explain, "dtd": run_dtd, "adversarial": run_adversarial}[args.what](args)


if __name__ == "__main__":
    main()
