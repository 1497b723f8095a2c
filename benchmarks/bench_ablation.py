"""The unit ablation sweep over every unit of a layer, as a ratio to one full forward pass.

    .venv/bin/python benchmarks/bench_ablation.py [--layer blocks.6] [--images 32]

EfficientNet-Lite0 (real weights) on ImageNet sample photos; the target is a ratio
under units / 8. Prints the split method, times, the ratio and peak memory (RSS).
"""

import argparse
import resource
import time
from pathlib import Path

import torch

from netdissect.data.classes import ClassData
from netdissect.experiments.ablation import single_unit_selectors, sweep
from netdissect.experiments.split import split_model
from netdissect.models import load_model

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets" / "data" / "imagenet-samples"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", default="blocks.6")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method", default="auto")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model("efficientnet_lite0")
    model, pre = loaded.module, loaded.preprocess
    files = sorted(ASSETS.glob("*.jpg"))[: args.images]
    data = ClassData(tuple(files), tuple(range(len(files))), tuple(str(i) for i in range(1000)))
    xs = [(pre(torch.from_numpy(im)), torch.from_numpy(t)) for im, t in data.batches(args.batch_size)]
    with torch.no_grad():
        model(xs[0][0])  # warm up
        t0 = time.perf_counter()
        for x, _ in xs:
            model(x)
        full = time.perf_counter() - t0
    split = split_model(model, args.layer, method=args.method)
    units = split.head(xs[0][0][:1]).shape[1]
    t0 = time.perf_counter()
    counts = sweep(split, xs, single_unit_selectors(units), 1000, rows_per_chunk=512)
    swept = time.perf_counter() - t0
    ratio = swept / full
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"layer {args.layer}: {units} units, {len(files)} images, split method {split.method}")
    print(f"one full forward pass: {full:.2f} s; sweep over {units} single-unit ablations + baseline: {swept:.2f} s")
    print(f"ratio {ratio:.1f} full passes (target < units/8 = {units / 8:.0f}): "
          f"{'PASS' if ratio < units / 8 else 'FAIL'}; {ratio / units:.3f} passes per unit")
    print(f"peak RSS {rss:.0f} MiB; baseline top-1 on these images: {counts.correct[0].sum() / counts.n:.2f}")


if __name__ == "__main__":
    main()
