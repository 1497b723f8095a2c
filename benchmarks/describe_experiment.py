"""Real runs of `netdissect describe` (CLIP-Dissect) with real weights, on this machine's CPU.

1. ImageNet final layer.  EfficientNet-Lite0's 1000 ``classifier`` outputs
   described with EfficientNet-Lite2 as a closed-vocabulary image-text model
   (``classifier:efficientnet_lite2``: image embedding = its class
   probabilities, word embedding = one-hot class), vocabulary = the 1000
   ImageNet class names, probe = the 1000 ImageNet samples of
   ``../shared/assets/data/imagenet-samples`` (one photo per class), read
   three ways: the folder as `netdissect describe --probe DIR` reads it (whole
   image resized to 224x224), the standard evaluation crop (shorter side 256,
   centre 224x224), and that crop plus its mirror image (2000 images).  For
   every similarity function: top-1 / top-5 accuracy of the description
   against unit k's class name, and the mean cosine of description and name
   in the image-text model's text space (one-hot: equal to top-1 here).
   WPMI and SoftWPMI also with ``top_k`` = the images per class (1 or 2),
   since their defaults (28, 100) assume many images of each concept.
2. Synthetic concepts.  EfficientNet-Lite0 ``blocks.5`` dissected on
   ``synthetic:n=N`` (IoU labels), then described on the same images with the
   project's ``synthetic_clip`` model and the data set's 52 concept words:
   how often the best word equals / contains the IoU label, for detectors
   and for the other units.

    python benchmarks/describe_experiment.py [--out runs/describe-experiment] [--synthetic 1000] [--skip-imagenet]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import netdissect
from netdissect.data.memory import ArrayConcepts
from netdissect.data.protocol import ConceptTable
from netdissect.imagetext import load_image_text

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
SIMILARITIES = ["cos", "cos3", "rank_reorder", "wpmi", "soft_wpmi"]


def crop_probe(folder: Path, flip: bool) -> ArrayConcepts:
    """Shorter side resized to 256 (bicubic), centre 224x224 crop; with ``flip`` each image's mirror follows it."""
    images = []
    for path in sorted(folder.glob("*.jpg")):
        im = Image.open(path).convert("RGB")
        w, h = im.size
        s = 256 / min(w, h)
        im = im.resize((max(224, round(w * s)), max(224, round(h * s))), Image.Resampling.BICUBIC)
        w, h = im.size
        left, top = (w - 224) // 2, (h - 224) // 2
        a = np.asarray(im.crop((left, top, left + 224, top + 224)))
        images.append(a)
        if flip:
            images.append(a[:, ::-1].copy())
    x = np.stack(images)
    return ArrayConcepts(x, np.zeros((len(x), 0, 1, 1), np.int32), ConceptTable([], ()),
                         name="imagenet-crop-flip" if flip else "imagenet-crop")


def accuracy_of(model_spec: str, probe: ArrayConcepts, classes: int, batch: int = 50) -> float:
    """Top-1 accuracy of a classifier on a probe whose image i (or pair i) shows class i."""
    loaded = netdissect.load_model(model_spec)
    per = len(probe) // classes
    hits = 0
    with torch.no_grad():
        for start in range(0, len(probe), batch):
            x = torch.from_numpy(probe.images[start:start + batch]).permute(0, 3, 1, 2)
            pred = loaded.module(loaded.preprocess(x)).argmax(1)
            truth = torch.arange(start, start + len(x)) // per
            hits += int((pred == truth).sum())
    return hits / len(probe)


def imagenet(out: Path, workers: int) -> list[dict]:
    folder = ASSETS / "data" / "imagenet-samples"
    if not folder.is_dir():
        print(f"{folder} not found: skipping the ImageNet run")
        return []
    it = load_image_text("classifier:efficientnet_lite2")
    truth = list(it.classes)
    probes = {"folder, squashed to 224": str(folder), "centre crop 224": crop_probe(folder, False),
              "centre crop + mirror": crop_probe(folder, True)}
    rows = []
    for name, probe in probes.items():
        key = name.split(",")[0].split(" ")[0] + ("-flip" if "mirror" in name else "")
        per_class = len(probe) // 1000 if not isinstance(probe, str) else 1
        runs = [(sim, {}) for sim in SIMILARITIES]
        runs += [("wpmi", {"top_k": per_class}), ("soft_wpmi", {"top_k": per_class})]
        for sim, params in runs:
            t0 = time.perf_counter()
            label = sim + "".join(f" {k}={v}" for k, v in params.items())
            d = netdissect.describe("efficientnet_lite0", probe, layers=["classifier"], image_text=it,
                                    concepts="model", similarity=sim, similarity_params=params,
                                    method="words-" + label.replace(" ", "-").replace("=", ""),
                                    out=out / f"imagenet-{key}", top=5, num_workers=workers, progress=False)
            m = d.evaluate(truth, text_model=it)
            rows.append({"probe": name, "similarity": label, **m, "seconds": round(time.perf_counter() - t0, 1),
                         "images": d.info["images"]})
            print(f"  {name:26s} {label:18s} top-1 {m['top1']:.3f}  top-5 {m['top5']:.3f}  "
                  f"mean cos {m['mean_cos']:.3f}  ({rows[-1]['seconds']} s)", flush=True)
    crop = probes["centre crop 224"]
    for spec in ("efficientnet_lite0", "efficientnet_lite2"):
        print(f"  {spec} top-1 on the centre-crop probe: {accuracy_of(spec, crop, 1000):.3f}")
    return rows


def top5_agreement(result, description) -> dict:
    """Share of detectors / other units whose IoU label is among their five best words (chance: 5 / words)."""
    iou = result.labels
    if "method" in iou:
        iou = iou[iou["method"] == "iou"]
    words = description.labels
    merged = iou.merge(words, on=["layer", "unit"], suffixes=("_iou", ""))
    cols = ["label"] + [f"label_{i}" for i in range(2, 6) if f"label_{i}" in merged]
    hit = merged.apply(lambda r: r["label_iou"] in {r[c] for c in cols}, axis=1)
    det = merged["detector"].astype(bool)
    return {"detectors_top5": float(hit[det].mean()), "others_top5": float(hit[~det].mean())}


def synthetic(out: Path, n: int, workers: int) -> list[dict]:
    data = f"synthetic:n={n}"
    run = out / f"synthetic-{n}"
    t0 = time.perf_counter()
    result = netdissect.dissect("efficientnet_lite0", data, layers=["blocks.5"], out=run, num_workers=workers,
                                progress=False)
    print(f"  dissected blocks.5 on {data} in {time.perf_counter() - t0:.0f} s: "
          f"{int(result.labels['detector'].sum())} of {len(result.labels)} units are detectors")
    rows = []
    for sim in SIMILARITIES:
        t0 = time.perf_counter()
        d = netdissect.describe("efficientnet_lite0", data, layers=["blocks.5"], image_text="synthetic_clip",
                                concepts="synthetic", similarity=sim, out=run, num_workers=workers, progress=False)
        a = d.agreement().iloc[0].to_dict()
        a.update(similarity=sim, seconds=round(time.perf_counter() - t0, 1), **top5_agreement(result, d))
        rows.append(a)
        print(f"  {sim:13s} detectors: equal {a['detectors_equal']:.3f} contains {a['detectors_contains']:.3f} "
              f"top-5 {a['detectors_top5']:.3f} (of {a['detectors']});  others: equal {a['others_equal']:.3f} "
              f"contains {a['others_contains']:.3f} top-5 {a['others_top5']:.3f} (of {a['others']})  "
              f"({a['seconds']} s)", flush=True)
    # the commonest words and IoU labels, for the note
    words = netdissect.Description.load(run, "words-soft_wpmi").labels
    iou = result.labels
    print("  soft_wpmi's commonest words:", words["label"].value_counts().head(8).to_dict())
    print("  IoU labels of the detectors:", iou[iou["detector"]]["label"].value_counts().head(8).to_dict())
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "describe-experiment")
    p.add_argument("--synthetic", type=int, default=1000, help="synthetic images (0: skip that run)")
    p.add_argument("--skip-imagenet", action="store_true")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    out = {"torch_threads": torch.get_num_threads()}
    if not args.skip_imagenet:
        print("1. EfficientNet-Lite0 classifier (1000 units) described with classifier:efficientnet_lite2:")
        out["imagenet"] = imagenet(args.out, args.workers)
    if args.synthetic:
        print(f"2. EfficientNet-Lite0 blocks.5 on synthetic:n={args.synthetic}, words from synthetic_clip:")
        out["synthetic"] = synthetic(args.out, args.synthetic, args.workers)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
