"""Dissection speed and memory against the floor: one bare forward pass.

Two cases; every figure comes from a fresh process, and within a case all
processes use the same data, batch size and data-loading workers:

- ``synthetic``: ResNet-18 (torchvision, random weights) ``layer4`` on
  synthetic images, at several data set sizes (peak memory should not grow
  with the data);
- ``mixed``: EfficientNet-Lite0 ``blocks.4 blocks.5 conv_head`` (112, 192
  and 1280 units) on 534 real images: CamVid val + test (pixel-level objects
  and colours) and the first 20 images of each DTD10 class (image-level
  textures), converted with ``netdissect data convert`` into ``--work`` the
  first time (skipped, with a message, when ``--assets`` is missing).

The processes:

- ``bare``: load and decode the images, preprocess, run the whole model once
  (the loop a user would write; data loading included);
- ``bare+tuned``: the same after :func:`netdissect.engine.memory.tune_allocator`
  (a floor with the allocator setting a dissection may use);
- ``dissect``: the full dissection (thresholds, IoU, results).

For each it prints images per second, CPU seconds in user and system mode
(loader workers included), minor page faults and peak resident memory, then
the ratio of dissection to each floor (images per second; 1.0 would mean
dissection costs nothing beyond one forward pass).  High system time with
millions of page faults is allocator churn: large tensors mapped and unmapped
every batch.  Figures are measured in this one run; on a shared machine they
move with its load (each line says how much CPU other processes used while it
ran).  A benchmark, not a test: nothing fails on time.

    python benchmarks/bench_dissect.py                          # both cases
    python benchmarks/bench_dissect.py --cases mixed --tuned-dissect
    python benchmarks/bench_dissect.py --cases mixed --threads 1
    python benchmarks/bench_dissect.py --cases synthetic --sizes 200 --model efficientnet_lite0 --layer bn2
    python benchmarks/bench_dissect.py --device cuda --quick    # on a GPU: synthetic case, bare floor
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIXED_LAYERS = ["blocks.4", "blocks.5", "conv_head"]
DTD_PER_CLASS = 20


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy (Linux), to tell how loaded it was."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> tuple[float, float, int]:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + kids.ru_utime, me.ru_stime + kids.ru_stime, me.ru_minflt + kids.ru_minflt


def measure(spec: dict) -> dict:
    """Run one process's measurement (``spec`` from :func:`child_spec`)."""
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    import netdissect
    from netdissect.data import open_dataset
    from netdissect.data.loader import batches

    if spec["mode"] == "bare+tuned" or (spec["mode"] == "dissect" and spec.get("tuned_dissect")):
        from netdissect.engine.memory import tune_allocator

        tune_allocator()
    torch.manual_seed(0)
    device = torch.device(spec.get("device", "cpu"))
    loaded = netdissect.load_model(spec["model"])
    loaded.module.to(device)
    data = open_dataset(spec["data"])
    n = len(data)
    busy0, (user0, sys0, flt0) = _busy_seconds(), _own_cpu()
    start = time.perf_counter()
    if spec["mode"] == "dissect":
        with tempfile.TemporaryDirectory() as out:
            netdissect.dissect(loaded, data, layers=spec["layers"], out=out, progress=False,
                               batch_size=spec["batch_size"], num_workers=spec["workers"],
                               activation_cache=spec["cache"], device=str(device))
    else:
        with torch.no_grad():
            for batch in batches(data, range(n), batch_size=spec["batch_size"], num_workers=spec["workers"]):
                loaded.module(loaded.preprocess(batch.images.to(device)))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    busy1, (user1, sys1, flt1) = _busy_seconds(), _own_cpu()
    own = (user1 - user0) + (sys1 - sys0)
    return {
        "mode": spec["mode"], "n": n, "seconds": seconds, "images_per_s": n / seconds,
        "user_s": user1 - user0, "sys_s": sys1 - sys0, "minflt": flt1 - flt0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "others_cpu_s": None if busy0 is None else max(0.0, (busy1 - busy0) - own),
    }


def run_child(spec: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"benchmark process failed: {spec['mode']} on {spec['data']}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_header() -> None:
    print(f"  {'process':11s} {'images':>6} {'seconds':>8} {'img/s':>7} {'user s':>7} {'sys s':>6} "
          f"{'minor faults':>12} {'peak MB':>8} {'others s':>8}")


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        others = "" if r["others_cpu_s"] is None else f"{r['others_cpu_s']:8.1f}"
        print(f"  {r['mode']:11s} {r['n']:6d} {r['seconds']:8.1f} {r['images_per_s']:7.1f} {r['user_s']:7.1f} "
              f"{r['sys_s']:6.1f} {r['minflt']:12d} {r['peak_rss_mb']:8.1f} {others}"
              + ("" if r.get("peak_gpu_mb") is None else f"  GPU peak {r['peak_gpu_mb']:.0f} MB"), flush=True)


def run_case(title: str, base: dict, data_specs: list[str], floors: list[str]) -> dict[str, list[dict]]:
    print(title)
    print_header()
    out = {}
    for data in data_specs:
        rows = []
        for mode in [*floors, "dissect"]:
            rows.append(run_child({**base, "mode": mode, "data": data}))
            print_rows(rows[-1:])
        dis = rows[-1]
        for floor in rows[:-1]:
            print(f"  ratio dissect / {floor['mode']}: {dis['images_per_s'] / floor['images_per_s']:.2f}")
        out[data] = rows
    return out


def build_mixed(assets: Path, work: Path) -> Path | None:
    """The CamVid + DTD10 Broden folder under ``work`` (built on first use); None without the assets."""
    camvid, dtd = assets / "data" / "camvid", assets / "data" / "dtd10"
    out = work / "mixed"
    if (out / "index.csv").is_file():
        return out
    if not (camvid / "classes.txt").is_file() or not dtd.is_dir():
        return None
    print(f"building the CamVid + DTD10 concept set in {out} (once)", flush=True)
    work.mkdir(parents=True, exist_ok=True)
    src_camvid, src_dtd = work / "src_camvid", work / "src_dtd"
    for d in (src_camvid, src_dtd, work / "camvid", work / "dtd"):
        shutil.rmtree(d, ignore_errors=True)
    src_camvid.mkdir()
    for split in ("val", "test"):
        (src_camvid / split).symlink_to(camvid / split, target_is_directory=True)
    for cls in sorted(p for p in dtd.iterdir() if p.is_dir()):
        (src_dtd / cls.name).mkdir(parents=True)
        for image in sorted(p for p in cls.iterdir() if p.is_file())[:DTD_PER_CLASS]:
            (src_dtd / cls.name / image.name).symlink_to(image)
    convert = [sys.executable, "-m", "netdissect", "data", "convert"]
    classes = str(camvid / "classes.txt")
    for cmd in ([*convert, "segmentation", str(src_camvid), str(work / "camvid"), "--classes", classes],
                [*convert, "folders", str(src_dtd), str(work / "dtd")],
                [*convert, "merge", str(work / "camvid"), str(work / "dtd"), str(out), "--overwrite"]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stdout + done.stderr)
            raise SystemExit(f"building the mixed case failed: {' '.join(cmd)}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=["synthetic", "mixed"], choices=["synthetic", "mixed"])
    p.add_argument("--model", default="torchvision:resnet18",
                   help="synthetic case: model spec (random weights are fine)")
    p.add_argument("--layer", nargs="+", default=["layer4"], help="synthetic case: layer(s)")
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 2000], help="synthetic case: data set sizes")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cache", default="auto", choices=["auto", "disk", "recompute"])
    p.add_argument("--threads", type=int, default=0, help="torch threads in every process (0: torch's default)")
    p.add_argument("--floors", nargs="+", default=["bare", "bare+tuned"], choices=["bare", "bare+tuned"],
                   help="forward-only processes to compare against")
    p.add_argument("--tuned-dissect", action="store_true",
                   help="call tune_allocator() in the dissect process as well (for a pipeline that does not yet)")
    p.add_argument("--assets", type=Path, default=REPO.parent / "shared" / "assets",
                   help="shared assets (data/camvid, data/dtd10) for the mixed case")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "netdissect-bench",
                   help="where the mixed case's concept set is built")
    p.add_argument("--device", default="cpu", help="torch device of every process (cuda: the GPU check)")
    p.add_argument("--quick", action="store_true", help="the synthetic case against the bare floor only")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.cases, args.floors = ["synthetic"], ["bare"]

    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return

    import torch

    threads = args.threads or torch.get_num_threads()
    print(f"batch {args.batch_size}, {args.workers} loader worker(s), {os.cpu_count()} CPU cores, "
          f"torch threads {threads}, activation cache {args.cache}, device {args.device}"
          + (", dissect process with tune_allocator()" if args.tuned_dissect else "") + "\n")
    common = {"batch_size": args.batch_size, "workers": args.workers, "cache": args.cache, "threads": args.threads,
              "tuned_dissect": args.tuned_dissect, "device": args.device}
    if "synthetic" in args.cases:
        base = {**common, "model": args.model, "layers": args.layer}
        title = f"synthetic: {args.model} {' '.join(args.layer)}, 224x224 synthetic images"
        results = run_case(title, base, [f"synthetic:n={n}" for n in args.sizes], args.floors)
        if len(args.sizes) > 1:
            lo = results[f"synthetic:n={min(args.sizes)}"][-1]
            hi = results[f"synthetic:n={max(args.sizes)}"][-1]
            print(f"  dissection peak memory, {max(args.sizes)} vs {min(args.sizes)} images: "
                  f"{hi['peak_rss_mb'] / lo['peak_rss_mb']:.3f}x ({hi['peak_rss_mb'] - lo['peak_rss_mb']:+.1f} MB)")
        print()
    if "mixed" in args.cases:
        folder = build_mixed(args.assets, args.work)
        if folder is None:
            print(f"mixed: skipped, no CamVid / DTD10 under {args.assets}/data")
        else:
            base = {**common, "model": "efficientnet_lite0", "layers": MIXED_LAYERS}
            title = (f"mixed: efficientnet_lite0 {' '.join(MIXED_LAYERS)}, CamVid val+test + "
                     f"{DTD_PER_CLASS} per DTD10 class ({folder})")
            run_case(title, base, [str(folder)], args.floors)


if __name__ == "__main__":
    main()
