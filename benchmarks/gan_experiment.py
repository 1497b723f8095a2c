"""Generator unit experiments on real weights (issue 10; Bau et al. 2020, PNAS, "Dissecting a GAN").

1. Face DCGAN (../shared/assets/weights/face_dcgan), colour segmenter: dissect ``main.5`` (256 x 8x8);
   which units draw which colours; ablate the top-k units of the commonest colour (k = 0..30) and
   insert the top 20 in each cell; ACE of the IoU top-20 set against an optimised soft set.
2. MNIST DCGAN (../shared/assets/weights/mnist_dcgan), ink segmenter + the LeNet-5 classifier
   (image-level digit class): dissect ``layer_stack.6`` (64 x 7x7); ablate the top ink units and
   the top units of a digit class (does the classifier stop seeing that digit?).
3. Scene GAN (the built-in ``scene_gan``, trained by scripts/train_scene_gan.py on synthetic concept scenes)
   and its object segmenter ``scene_seg``: dissect ``main.5`` (64 x 8x8); which units draw which objects;
   remove objects by ablating their top units (k = 0..20) and insert the top units of an object in each cell,
   tallied by what the cell held before (does a tree appear on grass but not in the sky?).

Usage: .venv/bin/python benchmarks/gan_experiment.py [--samples 200] [--out runs/gan] [--only face|mnist|scene]
Prints the figures; writes PNG strips and curves under --out.
"""

from __future__ import annotations

import argparse
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

import netdissect
from netdissect.generators import (
    LayerSplit,
    SoftColorScore,
    ablation_sweep,
    average_causal_effect,
    insertion_sweep,
    optimize_units,
    rank_units,
    unit_quantiles,
)
from netdissect.generators.ace import find_samples, insertion_values
from netdissect.generators.figures import save_ablation_curve, save_cell_map, save_strip
from netdissect.models import load_generator
from netdissect.segment import InkSegmenter, load_segmenter

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "weights"


def lenet() -> nn.Module:
    """LeNet-5 as stored in mnist_lenet (input 1x32x32 in [0, 1], log-probabilities of 10 digits)."""
    net = nn.Module()
    net.convnet = nn.Sequential(OrderedDict(
        c1=nn.Conv2d(1, 6, 5), r1=nn.ReLU(), s2=nn.MaxPool2d(2), c3=nn.Conv2d(6, 16, 5), r3=nn.ReLU(),
        s4=nn.MaxPool2d(2), c5=nn.Conv2d(16, 120, 5), r5=nn.ReLU()))
    net.fc = nn.Sequential(OrderedDict(f6=nn.Linear(120, 84), r6=nn.ReLU(), f7=nn.Linear(84, 10),
                                       sig7=nn.LogSoftmax(dim=-1)))
    net.forward = lambda x: net.fc(net.convnet(x).flatten(1))
    sd = torch.load(ASSETS / "mnist_lenet" / "lenet_test_acc_0.991.pth", map_location="cpu", weights_only=True)
    net.load_state_dict(sd)
    return net.eval()


def show_units(run, layer: str, top: int = 8) -> list[str]:
    labels = run.labels[run.labels["layer"] == layer]
    det = labels[labels["detector"]]
    counts = det["label"].value_counts()
    print(f"  {layer}: {len(det)}/{len(labels)} detector units; per concept: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for concept in counts.index[:top]:
        units, iou = rank_units(run, layer, concept)
        print(f"    {concept:9s} top units (0-based) " + ", ".join(f"{u}:{i:.3f}" for u, i in zip(units[:5], iou[:5])))
    return list(counts.index)


def ablate(split, seg, run, layer, concept, out: Path, samples: int, max_k: int = 30, name: str = ""):
    units, _ = rank_units(run, layer, concept)
    t = time.perf_counter()
    res = ablation_sweep(split, seg, concept, units[:max_k], ks=range(max_k + 1), samples=samples, batch_size=50)
    table = res.table()
    print(f"  ablation of {concept} units ({samples} samples, {time.perf_counter() - t:.1f}s):")
    for k in (0, 1, 2, 4, 8, 20, 30):
        if k <= max_k:
            r = table.iloc[k]
            print(f"    k={k:2d}: {concept} fraction {r['mean']:.4f} (99% {r['low99']:.4f}..{r['high99']:.4f}), "
                  f"drop {r['drop']:+.3f} (99% {r['drop_low99']:+.3f}..{r['drop_high99']:+.3f})")
    save_ablation_curve(table, out / f"{name}ablation_{concept}.png", title=f"{concept} units of {layer}")
    if res.strip is not None:
        save_strip(res.strip, out / f"{name}ablation_{concept}_strip.png")
    return res


def face(args, out: Path):
    print("== face DCGAN, colour segmenter ==")
    gen = load_generator("face_dcgan", weights=ASSETS / "face_dcgan" / "generator.safetensors")
    layer = "main.5"
    t = time.perf_counter()
    run = netdissect.dissect(generator=gen, segmenter="color", layers=[layer], samples=args.samples,
                             out=out / "face_run", batch_size=50, num_workers=0, progress=False)
    print(f"  dissection of {layer} on {args.samples} samples: {time.perf_counter() - t:.1f}s")
    concepts = show_units(run, layer)
    seg = load_segmenter("color")
    split = LayerSplit(gen, layer)
    print(f"  split mode: {split.mode}")
    for concept in concepts[:2]:
        ablate(split, seg, run, layer, concept, out, args.samples, name="face_")
    concept = concepts[0]
    units, _ = rank_units(run, layer, concept)
    values = unit_quantiles(split, samples=args.samples)
    t = time.perf_counter()
    ins = insertion_sweep(split, seg, concept, units[:20], values, samples=args.insert_samples, batch_size=50)
    print(f"  insertion of the top 20 {concept} units, {args.insert_samples} samples x 64 cells "
          f"({time.perf_counter() - t:.1f}s); concept label pixels added per insertion (cell = "
          f"{ins.cell_pixels:.0f} px), by context:")
    print(ins.by_context().to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    save_cell_map(ins.cell_map(), out / f"face_insert_{concept}_map.png", title=f"{concept} pixels added")
    save_strip(ins.strip, out / f"face_insert_{concept}_strip.png")
    # ACE: IoU top-20 against a soft set optimised briefly (CPU budget: far below the paper's defaults)
    number = seg.concepts.by_name(concept).number
    train = find_samples(split, seg, number, count=args.ace_train, search=400, seed=10)
    k = insertion_values(split, seg, number, train, seed=10)[1]
    _, iou = rank_units(run, layer, concept)
    init = np.zeros(split.feature_shape[0], np.float32)
    init[units] = iou / iou.max()
    t = time.perf_counter()
    opt = optimize_units(split, seg, concept, SoftColorScore(concept), init=init, epochs=args.ace_epochs,
                         train=args.ace_train, search=400, accumulate=5)
    a1 = average_causal_effect(split, seg, concept, list(units[:20]), k, samples=100, seed=11)
    a2 = average_causal_effect(split, seg, concept, opt.top(20), k, samples=100, seed=11)
    print(f"  ACE on {concept} (100 samples of seed 11; optimisation {args.ace_epochs} epochs x {args.ace_train} "
          f"samples, {time.perf_counter() - t:.1f}s):")
    print(f"    IoU top-20      ACE {a1.ace:.4f} (99% {a1.interval[0]:.4f}..{a1.interval[1]:.4f})")
    print(f"    optimised top-20 ACE {a2.ace:.4f} (99% {a2.interval[0]:.4f}..{a2.interval[1]:.4f}); "
          f"{len(set(opt.top(20)) & set(units[:20].tolist()))}/20 units shared; losses {np.round(opt.losses, 4)}")


def mnist(args, out: Path):
    print("== MNIST DCGAN, ink segmenter + LeNet-5 digit classes ==")
    gen = load_generator("mnist_dcgan", weights=ASSETS / "mnist_dcgan" / "generator.pth")
    seg = InkSegmenter(127, classifier=lenet())
    layer = "layer_stack.6"
    t = time.perf_counter()
    run = netdissect.dissect(generator=gen, segmenter=seg, layers=[layer], samples=args.samples,
                             out=out / "mnist_run", batch_size=50, num_workers=0, progress=False)
    print(f"  dissection of {layer} on {args.samples} samples: {time.perf_counter() - t:.1f}s")
    concepts = show_units(run, layer, top=11)
    split = LayerSplit(gen, layer)
    ablate(split, seg, run, layer, "ink", out, args.samples, name="mnist_")
    digits = [c for c in concepts if c.startswith("digit-")]
    if digits:
        ablate(split, seg, run, layer, digits[0], out, args.samples, max_k=10, name="mnist_")


def scene(args, out: Path):
    print("== scene GAN (built in), scene_seg object segmenter ==")
    gen = load_generator("scene_gan")
    seg = load_segmenter("scene_seg")
    layer = "main.5"
    samples = args.scene_samples
    t = time.perf_counter()
    run = netdissect.dissect(generator=gen, segmenter=seg, layers=[layer], samples=samples,
                             out=out / "scene_run", batch_size=100, num_workers=0, progress=False)
    print(f"  dissection of {layer} on {samples} samples: {time.perf_counter() - t:.1f}s")
    concepts = show_units(run, layer, top=16)
    split = LayerSplit(gen, layer)
    # what the samples hold, as the segmenter sees it
    z = split.latents(0, range(samples))
    with torch.no_grad():
        labels = seg.segment(split.to_images(gen.module(z))).pixel_labels[:, 0]
    names = {n: seg.concepts[n].name for n in seg.concepts.numbers()}
    share = {names[n]: ((labels == n).double().mean(), (labels == n).flatten(1).any(1).double().mean())
             for n in sorted(names)}
    print("  share of pixels / of samples holding each object: "
          + ", ".join(f"{k} {a:.3f}/{b:.2f}" for k, (a, b) in share.items()))
    # foreground objects by their best unit's IoU (detectors or not: the question is whether any unit draws them)
    best = {c: float(rank_units(run, layer, c)[1][0]) for c in ("house", "tree", "car", "person", "flower", "ball",
                                                               "sun", "box")}
    print("  best unit IoU of each foreground object: " + ", ".join(f"{k} {v:.3f}" for k, v in best.items()))
    foreground = sorted(best, key=best.get, reverse=True)[:2]
    chosen = foreground + [c for c in concepts if c not in best][:1]
    for concept in chosen:
        ablate(split, seg, run, layer, concept, out, samples, max_k=20, name="scene_")
    values = unit_quantiles(split, samples=samples)
    for concept in chosen[:2]:
        units, _ = rank_units(run, layer, concept)
        t = time.perf_counter()
        ins = insertion_sweep(split, seg, concept, units[:args.scene_k], values, samples=args.insert_samples * 5,
                              batch_size=100, strip_cells=[(2, 2), (4, 4), (6, 1), (6, 6)])
        print(f"  insertion of the top {args.scene_k} {concept} units, {args.insert_samples * 5} samples x 64 cells "
              f"({time.perf_counter() - t:.1f}s); {concept} label pixels added per insertion (cell = "
              f"{ins.cell_pixels:.0f} px), by what the cell's centre held before:")
        print(ins.by_context().to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        cm = ins.cell_map()
        print("  mean pixels added by cell row (top to bottom): " + ", ".join(f"{v:.2f}" for v in cm.mean(axis=1)))
        save_cell_map(cm, out / f"scene_insert_{concept}_map.png", title=f"{concept} pixels added")
        save_strip(ins.strip, out / f"scene_insert_{concept}_strip.png")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--insert-samples", type=int, default=20)
    p.add_argument("--ace-train", type=int, default=20)
    p.add_argument("--ace-epochs", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/gan"))
    p.add_argument("--scene-samples", type=int, default=500)
    p.add_argument("--scene-k", type=int, default=10, help="scene GAN: top units inserted (of 64)")
    p.add_argument("--only", choices=["face", "mnist", "scene"], default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "face"):
        face(args, args.out)
    if args.only in (None, "mnist"):
        mnist(args, args.out)
    if args.only in (None, "scene"):
        scene(args, args.out)


if __name__ == "__main__":
    main()
