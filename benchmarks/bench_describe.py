"""Benchmark: describing 1,280 units over 1,000 probe images (issue 11).

Target: `netdissect.describe` of EfficientNet-Lite0's ``conv_head`` (1,280
units) over the 1,000 ImageNet samples, with ``classifier:efficientnet_lite2``
as the image-text model and its 1,000 class names as the words, costs less
than the floor plus one second, the floor being one pass over the same
images that decodes them (same loader, same workers) and runs both models
once: Lite0 up to ``conv_head`` and Lite2's ``encode_images``.

Printed, all measured in this one run: the floor (before and after the
describe run, the better counts) with its parts, the describe run end to end
with its similarity step, their ratio and difference, the similarity step
alone at CLIP-Dissect's scale (1,280 units x 20,000 words x 1,000 images,
random matrices) for each function, and the peak resident memory of each
phase (VmHWM, reset between phases).

    python benchmarks/bench_describe.py [--images DIR] [--workers 1] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import torch

import netdissect
from netdissect.describing import ImagesOnly
from netdissect.engine.memory import tuned_allocator
from netdissect.engine.sources import ConceptSource, open_images
from netdissect.hooks import Trace
from netdissect.imagetext import load_image_text
from netdissect.labeling.similarity import get_similarity

ROOT = Path(__file__).resolve().parents[1]


def reset_peak() -> None:
    """Reset this process's peak resident set (Linux: ``clear_refs`` 5), so VmHWM measures what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def floor(source, lite0, it, batch_size: int, workers: int, tuned: bool = False) -> dict[str, float]:
    """One pass: decode, Lite0 to conv_head, Lite2 embeddings; seconds of each part and in all.

    With ``tuned``, under the allocator setting the engine's passes use (large freed blocks kept).
    """
    with ExitStack() as stack:
        if tuned:
            stack.enter_context(tuned_allocator())
        return _floor(source, lite0, it, batch_size, workers)


def _floor(source, lite0, it, batch_size: int, workers: int) -> dict[str, float]:
    parts = {"decode": 0.0, "lite0": 0.0, "lite2": 0.0}
    t_all = time.perf_counter()
    t = time.perf_counter()
    with Trace(lite0.module, ["conv_head"], grid=False) as trace, torch.no_grad():
        for batch in source.batches(range(len(source)), batch_size=batch_size, num_workers=workers):
            parts["decode"] += time.perf_counter() - t
            t = time.perf_counter()
            trace.run(source.model_input(batch, torch.device("cpu")))
            parts["lite0"] += time.perf_counter() - t
            t = time.perf_counter()
            it.encode_images(batch.images)
            parts["lite2"] += time.perf_counter() - t
            t = time.perf_counter()
    parts["total"] = time.perf_counter() - t_all
    return parts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "assets" / "data" / "imagenet-samples")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--words", type=int, default=20000, help="words of the similarity-only measurement")
    args = p.parse_args(argv)
    if not args.images.is_dir():
        print(f"{args.images} not found; pass --images DIR")
        return 2
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"workers {args.workers}, batch {args.batch_size}")
    lite0 = netdissect.load_model("efficientnet_lite0")
    it = load_image_text("classifier:efficientnet_lite2")
    source = ConceptSource(ImagesOnly(open_images(args.images)), lite0.preprocess)
    n = len(source)

    reset_peak()
    before = floor(source, lite0, it, args.batch_size, args.workers)
    floor_peak = peak_mib()
    with tempfile.TemporaryDirectory() as tmp:
        reset_peak()
        t = time.perf_counter()
        d = netdissect.describe(lite0, str(args.images), layers=["conv_head"], image_text=it, concepts="model",
                                similarity="soft_wpmi", out=Path(tmp) / "run", batch_size=args.batch_size,
                                num_workers=args.workers, progress=False)
        describe_s = time.perf_counter() - t
        describe_peak = peak_mib()
        sim_s = d.info["similarity_seconds"]
        units = d.info["units"]["conv_head"]
    after = floor(source, lite0, it, args.batch_size, args.workers)
    tuned = floor(source, lite0, it, args.batch_size, args.workers, tuned=True)
    best = min(before["total"], after["total"])
    print(f"\n{units} units, {n} probe images, {d.info['words']} words (soft_wpmi, top {d.info['top']})")
    for name, f in (("floor (before)", before), ("floor (after)", after)):
        print(f"  {name:16s} {f['total']:7.2f} s  (decode {f['decode']:.2f}, lite0 {f['lite0']:.2f}, "
              f"lite2 {f['lite2']:.2f})")
    print(f"  floor (tuned)    {tuned['total']:7.2f} s  (the same pass with the engine's allocator setting)")
    print(f"  describe         {describe_s:7.2f} s  (similarity and writing {sim_s:.2f} s)")
    print(f"  describe - tuned floor = {describe_s - tuned['total']:+.2f} s")
    print(f"  describe / floor = {describe_s / best:.3f};  describe - floor = {describe_s - best:+.2f} s "
          f"(target: < +1 s) -> {'met' if describe_s < best + 1 else 'NOT met'}")
    print(f"  peak RSS: floor {floor_peak:.0f} MiB, describe {describe_peak:.0f} MiB")

    print(f"\nsimilarity step alone: 1280 units x {args.words} words x 1000 images (random), "
          f"budget N x (U + M) = {1000 * (1280 + args.words) * 4 / 2**20:.0f} MiB")
    g = torch.Generator().manual_seed(0)
    P = torch.rand(1000, args.words, generator=g) * 0.3
    Q = torch.randn(1000, 1280, generator=g).relu()
    for name in ("cos", "cos3", "wpmi", "soft_wpmi", "rank_reorder"):
        f = get_similarity(name)
        reset_peak()
        base = peak_mib()
        t = time.perf_counter()
        f.top(P, Q, 5)
        print(f"  {name:13s} {time.perf_counter() - t:7.2f} s   peak RSS +{peak_mib() - base:.0f} MiB "
              f"(chunks of {f.width(1000, 1280, args.words)} words)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
