"""Random rotation of the basis and comparison of networks, on real weights (METHODS A1, A3).

Steps (finished runs in the work folder are reused):

1. rotation of EfficientNet-Lite0 (ImageNet) ``blocks.5`` (192 units) and
   ``bn2`` (the activated output of the last conv, 1280 units) on
   ``synthetic:n=N``;
2. build a small CamVid + DTD concept set with the converters (CamVid's test
   split, K images per DTD10 class), and rotate the same layers on it;
3. dissect on that concept set EfficientNet-Lite0 with random weights and
   SqueezeNet-Places365 (``fire9``), and compare them with the ImageNet
   network (``netdissect compare``).

    python benchmarks/rotation_experiment.py [--work runs/rotation_experiment] [--images 300] [--dtd-per-class 20]
        [--assets ../shared/assets] [--seeds 2]

Prints unique detectors per alpha (mean over seeds) and the comparison tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> None:
    from netdissect.cli import main

    print("$ netdissect " + " ".join(cmd), flush=True)
    t = time.time()
    code = main(cmd)
    print(f"[{time.time() - t:7.1f} s, exit {code}]\n", flush=True)
    if code:
        sys.exit(code)


def build_concepts(args) -> Path:
    """CamVid test split (233 images) + K images per DTD10 class, converted at 224 and merged."""
    camvid, dtd, merged = args.work / "camvid_test_224", args.work / "dtd_224", args.work / "camvid_dtd_224"
    data = args.assets / "data"
    if not camvid.is_dir():
        run(["data", "convert", "segmentation", str(data / "camvid" / "test"), str(camvid), "--classes",
             str(data / "camvid" / "classes.txt"), "--size", "224", "--workers", "1"])
    if not dtd.is_dir():
        subset = args.work / "dtd_subset"
        for cls in sorted(p for p in (data / "dtd10").iterdir() if p.is_dir()):
            (subset / cls.name).mkdir(parents=True, exist_ok=True)
            for f in sorted(cls.glob("*.jpg"))[: args.dtd_per_class]:
                link = subset / cls.name / f.name
                if not link.exists():
                    os.symlink(f.resolve(), link)
        run(["data", "convert", "folders", str(subset), str(dtd), "--category", "texture", "--size", "224",
             "--workers", "1"])
    if not merged.is_dir():
        run(["data", "convert", "merge", str(camvid), str(dtd), str(merged)])
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "rotation_experiment")
    parser.add_argument("--assets", type=Path, default=ROOT.parent / "shared" / "assets")
    parser.add_argument("--images", type=int, default=300, help="synthetic images")
    parser.add_argument("--dtd-per-class", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", nargs="+", default=["synthetic", "camvid", "compare"])
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    common = ["--workers", "1", "--batch-size", "32", "--no-progress", "--no-report"]
    rot = ["--alphas", "0", "0.25", "0.5", "0.75", "1", "--seeds", str(args.seeds)]
    if "synthetic" in args.steps:
        run(["experiment", "rotation", "--model", "efficientnet_lite0", "--data", f"synthetic:n={args.images}",
             "--layers", "blocks.5", "bn2", *rot, "--out", str(args.work / "rot_synthetic"), *common])
    merged = build_concepts(args) if ("camvid" in args.steps or "compare" in args.steps) else None
    if "camvid" in args.steps:
        run(["experiment", "rotation", "--model", "efficientnet_lite0", "--data", str(merged),
             "--layers", "blocks.5", "bn2", *rot, "--out", str(args.work / "rot_camvid_dtd"), *common])
    if "compare" in args.steps:
        runs = {"lite0_imagenet": ("efficientnet_lite0", None, ["blocks.5", "bn2"]),
                "lite0_random": ("efficientnet_lite0_random", None, ["blocks.5", "bn2"]),
                "squeezenet_places365": ("squeezenet_places365", None, ["fire9"])}
        for name, (model, weights, layers) in runs.items():
            out = args.work / f"cmp_{name}"
            if not (out / "summary.json").is_file():
                run(["dissect", "--model", model, "--data", str(merged), "--layers", *layers, "--out", str(out),
                     *common] + (["--weights", weights] if weights else []))
        run(["compare", *[str(args.work / f"cmp_{n}") for n in runs], "--names", *runs, "--out",
             str(args.work / "comparison")])


if __name__ == "__main__":
    main()
