"""DISCOVER's claim at toy scale: do LWTA networks have more, sharper concept detectors than ReLU networks?

Trains the same small ResNet (netdissect.lwta.nets.SmallResNet, width 16) from
scratch with ReLU and with stochastic LWTA U in {2, 4, 8} to classify the
scene of the synthetic concept images (6 scenes, 64 px), then for each model
reports accuracy (sampled and argmax winners), activation sparsity, and on
held-out synthetic images: IoU detectors, unique detectors and mean best IoU
(Network Dissection) of layer3/layer4, and how often the CLIP-Dissect words
(netdissect.describe with image_text="synthetic_clip") agree with the IoU
labels.  Everything is resumable: run it again to continue.

    .venv/bin/python benchmarks/lwta_experiment.py --out runs/lwta_experiment

Result of ``--train 1000 --val 200 --probe 300 --epochs 6`` (SGD 0.05, cosine, flips; one CPU thread on
a shared 2-core machine, about 13 minutes in all; IoU detectors > 0.04 on 300 held-out synthetic images;
unique = per-category convention; words = synthetic_clip, soft_wpmi)::

    model  val acc (sample/argmax)  active  layer   detectors/units  unique  mean best IoU  words=IoU label
    relu   0.870 / 0.870            0.481   layer3  14/64            4       0.031          0.203
    relu                                    layer4  21/128           5       0.026          0.125
    lwta2  0.835 / 0.810            0.500   layer3   2/64            2       0.011          0.219
    lwta2                                   layer4   6/128           2       0.016          0.109
    lwta4  0.735 / 0.455            0.250   layer3   0/64            0       0.005          0.109
    lwta4                                   layer4   1/128           1       0.010          0.156
    lwta8  0.400 / 0.240            0.125   layer3   0/64            0       0.011          0.062
    lwta8                                   layer4   3/128           1       0.016          0.070

At this scale DISCOVER's claim does not hold: the LWTA networks, trained for the same 6 epochs from
scratch, are less accurate (the more so the larger U; they learn more slowly) and have fewer IoU
detectors and lower mean best IoU than the ReLU network; word/IoU agreement is not higher either.
Sparsity is exactly 1/U.  A fair test needs LWTA networks trained to convergence (DISCOVER: 90 epochs
of Places365) and a probe set with richer concepts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from netdissect import describe, dissect
from netdissect.data.imageio import write_rgb
from netdissect.data.synthetic import NUMBER, SyntheticConcepts
from netdissect.lwta import configure
from netdissect.lwta.measure import image_batches, sparsity
from netdissect.lwta.train import FolderClassification, TrainConfig, evaluate, train
from netdissect.models import load_model

NET = "module:netdissect.lwta.nets:small_resnet"
SCENE_NAME = {number: name for name, number in NUMBER.items() if name.endswith("-s")}


def scene_folder(root: Path, n_train: int, n_val: int, size: int) -> Path:
    """Synthetic concept images sorted into train/val folders by scene (seeds 101 and 102; dissection uses 0)."""
    done = root / "done.txt"
    if done.exists():
        return root
    for split, n, seed in (("train", n_train, 101), ("val", n_val, 102)):
        ds = SyntheticConcepts(n=n, seed=seed, size=size)
        for i in range(n):
            s = ds[i]
            folder = root / split / SCENE_NAME[int(s.image_labels[0])]
            folder.mkdir(parents=True, exist_ok=True)
            write_rgb(folder / f"{i:05d}.png", s.image)
    done.write_text("ok\n")
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/lwta_experiment"))
    p.add_argument("--U", type=int, nargs="+", default=[1, 2, 4, 8], help="1 = the ReLU baseline")
    p.add_argument("--train", type=int, default=1500)
    p.add_argument("--val", type=int, default=300)
    p.add_argument("--probe", type=int, default=300, help="synthetic images for dissection and description")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = scene_folder(args.out / "data", args.train, args.val, args.size)
    probe = f"synthetic:n={args.probe},size={args.size}"
    config = TrainConfig(epochs=args.epochs, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9,
                         weight_decay=5e-4, schedule="cosine", size=args.size, augment="flip", seed=0)
    rows = []
    for U in args.U:
        t0 = time.time()
        spec = f"lwta:{NET}?U={'off' if U == 1 else U}"
        name = "relu" if U == 1 else f"lwta{U}"
        loaded = load_model(spec)
        result = train(loaded.module, data, args.out / name / "train", config=config, device="cpu",
                       preprocess=loaded.preprocess)
        weights = result.weights
        t_train = time.time() - t0
        val = FolderClassification(data, "val", size=args.size, preprocess=loaded.preprocess)
        model = load_model(spec, weights=weights)
        acc_sample = evaluate(model.module, val, device="cpu")["acc"]
        configure(model.module, mode="argmax")
        acc_argmax = evaluate(model.module, val, device="cpu")["acc"]
        configure(model.module, mode="sample")
        sp = sparsity(model.module, image_batches(probe, model.preprocess, limit=64))
        run = args.out / name / "dissect"
        d = dissect(spec, probe, weights=weights, layers=["layer3", "layer4"], out=run, progress=False,
                    device="cpu", batch_size=50)
        desc = describe(load_model(spec, weights=weights), probe, layers=["layer3", "layer4"],
                        image_text="synthetic_clip", out=run, progress=False, device="cpu", batch_size=50)
        agree = desc.agreement().set_index("layer")
        for layer in ("layer3", "layer4"):
            labels = d.labels[d.labels["layer"] == layer]
            uniq = d.unique_detectors(layer)
            a = agree.loc[layer]
            words_equal = (a["detectors"] * (0 if pd.isna(a["detectors_equal"]) else a["detectors_equal"])
                           + a["others"] * (0 if pd.isna(a["others_equal"]) else a["others_equal"])) / a["units"]
            rows.append({
                "model": name, "U": U, "val_acc_sample": acc_sample, "val_acc_argmax": acc_argmax,
                "active_share": float(sp["active"].iloc[-1]), "layer": layer, "units": len(labels),
                "detectors": int(labels["detector"].sum()),
                "unique": int(sum(uniq.values())) if isinstance(uniq, dict) else int(uniq),
                "mean_best_iou": float(labels["iou"].mean()),
                "words=iou (all)": float(words_equal),
                "words=iou (detectors)": float(a["detectors_equal"]),
                "winner_rule": json.dumps(d.info.options.get("lwta", "relu")),
                "minutes": round((time.time() - t0) / 60, 1), "train_minutes": round(t_train / 60, 1),
            })
        print(pd.DataFrame(rows[-2:]).drop(columns=["winner_rule"]).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "results.csv", index=False)
    print()
    print(table.drop(columns=["winner_rule"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nwinner rules recorded by the dissections:")
    for name, rule in table.groupby("model", sort=False)["winner_rule"].first().items():
        print(f"  {name}: {rule}")


if __name__ == "__main__":
    main()
