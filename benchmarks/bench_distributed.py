"""Multi-process dissection (torch.distributed, gloo on CPU): 1 process against N processes.

Every configuration runs in fresh processes on the same synthetic images with
the same batch size and loader workers, and times the dissection alone (from
a barrier after start-up to the returned result, slowest rank):

- ``1 process``: the usual run, torch's default threads;
- ``1 process, T threads``: the same with the threads each rank of the
  multi-process run gets (``torchrun`` gives each worker OMP_NUM_THREADS=1);
  its run directory is bit-identical to the multi-process one;
- ``N processes``: ranks in a gloo process group, each ``cores // N``
  threads (at least 1).

It prints seconds, images per second, the speed-up over one process, each
rank's peak resident memory, and whether the N-process ``tally.csv`` equals
the one-process one with the same threads.  On a machine with as many cores
as threads in use, N processes cannot beat one much: the figure shows the
cost of sharding and merging, not a speed-up.

    python benchmarks/bench_distributed.py                       # ResNet-18 layer4, 256 images, 2 processes
    python benchmarks/bench_distributed.py --images 512 --processes 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(rank: int, world: int, port: int, threads: int, out: str, args) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    import netdissect

    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    loaded = netdissect.load_model(args.model)
    data = netdissect.open_dataset(f"synthetic:n={args.images},size={args.size}")
    if world > 1:
        dist.barrier()
    start = time.perf_counter()
    netdissect.dissect(loaded, data, layers=[args.layer], out=out, progress=False, batch_size=args.batch_size,
                       num_workers=args.workers, activation_cache=args.cache)
    seconds = time.perf_counter() - start
    if world > 1:
        dist.destroy_process_group()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rank": rank, "seconds": seconds, "peak_rss_mb": peak_mb}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, threads: int, out: Path, args) -> list[dict]:
    port = free_port()
    common = ["--model", args.model, "--layer", args.layer, "--images", str(args.images), "--size", str(args.size),
              "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--cache", args.cache]
    procs = [subprocess.Popen([sys.executable, __file__, *common, "--child", str(r), str(world), str(port),
                               str(threads), str(out)], stdout=subprocess.PIPE, text=True)
             for r in range(world)]
    rows = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"a rank failed (exit {p.returncode})")
        rows.append(json.loads(stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="torchvision:resnet18", help="model spec (random weights are fine)")
    p.add_argument("--layer", default="layer4")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--size", type=int, default=224, help="image side")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="data loading processes per rank")
    p.add_argument("--cache", default="auto", choices=["auto", "disk", "recompute"])
    p.add_argument("--processes", type=int, nargs="+", default=[2], help="process counts to compare with one")
    p.add_argument("--child", nargs=5, metavar=("RANK", "WORLD", "PORT", "THREADS", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        rank, world, port, threads = (int(v) for v in args.child[:4])
        child(rank, world, port, threads, args.child[4], args)
        return

    import torch  # the default thread count of one process

    from netdissect.paths import encode_name

    cores = os.cpu_count() or 1
    default_threads = torch.get_num_threads()
    print(f"model {args.model}, layer {args.layer}, {args.images} synthetic images {args.size}x{args.size}, "
          f"batch {args.batch_size}, {args.workers} loader worker(s) per rank, cache {args.cache}, {cores} CPU cores")
    print(f"{'run':>24} {'seconds':>8} {'img/s':>7} {'speed-up':>9}  peak RSS per rank (MB)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def show(name: str, rows: list[dict], base: float | None) -> float:
            seconds = max(r["seconds"] for r in rows)
            speed = f"{base / seconds:9.2f}" if base else f"{'1.00':>9}"
            peaks = "  ".join(f"{r['peak_rss_mb']:.0f}" for r in sorted(rows, key=lambda r: r["rank"]))
            print(f"{name:>24} {seconds:8.1f} {args.images / seconds:7.1f} {speed}  {peaks}", flush=True)
            return seconds

        base = show(f"1 process, {default_threads} threads", launch(1, default_threads, root / "one", args), None)
        for world in args.processes:
            threads = max(1, cores // world)
            same = root / f"one-{threads}"
            if not same.exists():
                show(f"1 process, {threads} thread{'s' * (threads > 1)}", launch(1, threads, same, args), base)
            out = root / f"world-{world}"
            show(f"{world} processes x {threads} thr", launch(world, threads, out, args), base)
            tally = f"layers/{encode_name(args.layer)}/tally.csv"
            equal = (same / tally).read_bytes() == (out / tally).read_bytes()
            print(f"{'':>24} tally.csv of {world} processes equals 1 process with {threads} thread(s): {equal}")


if __name__ == "__main__":
    main()
