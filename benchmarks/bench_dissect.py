"""Dissection speed and memory against the floor: one bare forward pass.

For each data set size, two fresh processes run on the same synthetic images
with the same batch size and data-loading workers:

- ``bare``: load and decode the images, preprocess, run the whole model once;
- ``dissect``: the full dissection of the layer (thresholds, IoU, results).

It prints images per second of each, their ratio (dissection over bare: 1.0
would mean dissection costs nothing beyond one forward pass), and each
process's peak resident memory, then the memory ratio between the largest
and the smallest size.  Figures are measured in this one run.

    python benchmarks/bench_dissect.py                     # ResNet-18 layer4, 500 and 2000 images
    python benchmarks/bench_dissect.py --sizes 200 --model efficientnet_lite0 --layer bn2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def measure(mode: str, model_spec: str, layer: str, n: int, batch_size: int, workers: int, cache: str) -> dict:
    import torch

    import netdissect
    from netdissect.data import open_dataset
    from netdissect.data.loader import batches

    torch.manual_seed(0)
    loaded = netdissect.load_model(model_spec)
    data = open_dataset(f"synthetic:n={n}")
    start = time.perf_counter()
    if mode == "bare":
        with torch.no_grad():
            for batch in batches(data, range(n), batch_size=batch_size, num_workers=workers):
                loaded.module(loaded.preprocess(batch.images))
    else:
        with tempfile.TemporaryDirectory() as out:
            netdissect.dissect(loaded, data, layers=[layer], out=out, progress=False, batch_size=batch_size,
                               num_workers=workers, activation_cache=cache)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "n": n, "seconds": seconds, "images_per_s": n / seconds, "peak_rss_mb": peak_kb / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="torchvision:resnet18", help="model spec (random weights are fine)")
    p.add_argument("--layer", default="layer4")
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 2000], help="data set sizes")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cache", default="auto", choices=["auto", "disk", "recompute"])
    p.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        mode, n = args.child[0], int(args.child[1])
        print(json.dumps(measure(mode, args.model, args.layer, n, args.batch_size, args.workers, args.cache)))
        return

    print(f"model {args.model}, layer {args.layer}, 224x224 synthetic images, batch {args.batch_size}, "
          f"{args.workers} loader worker(s), {os.cpu_count()} CPU cores, torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    rows = []
    for n in args.sizes:
        for mode in ("bare", "dissect"):
            cmd = [sys.executable, __file__, "--child", mode, str(n), "--model", args.model, "--layer", args.layer,
                   "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--cache", args.cache]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"  {mode:8s} n={n:5d}: {r['seconds']:7.1f} s  {r['images_per_s']:6.1f} img/s  "
                  f"peak RSS {r['peak_rss_mb']:7.1f} MB", flush=True)
    print()
    print(f"{'images':>7} {'bare img/s':>11} {'dissect img/s':>14} {'ratio':>6} {'dissect peak MB':>16}")
    by = {(r["mode"], r["n"]): r for r in rows}
    for n in args.sizes:
        bare, dis = by[("bare", n)], by[("dissect", n)]
        print(f"{n:7d} {bare['images_per_s']:11.1f} {dis['images_per_s']:14.1f} "
              f"{dis['images_per_s'] / bare['images_per_s']:6.2f} {dis['peak_rss_mb']:16.1f}")
    if len(args.sizes) > 1:
        lo, hi = by[("dissect", min(args.sizes))], by[("dissect", max(args.sizes))]
        print(f"\npeak memory, {max(args.sizes)} vs {min(args.sizes)} images: "
              f"{hi['peak_rss_mb'] / lo['peak_rss_mb']:.3f}x ({hi['peak_rss_mb'] - lo['peak_rss_mb']:+.1f} MB)")


if __name__ == "__main__":
    main()
