"""`netdissect dissect`, `netdissect layers` and `netdissect demo`."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..capture import layer_shapes
from ..config import ACTIVATION_CACHE, PROTOCOLS
from ..data import DATASETS
from ..models import BUILTIN_MODELS, MODEL_SOURCES, load_model
from ..stats.tally import DENOMINATORS
from .common import print_summary, print_table, size_pair

DEMO_LAYERS = ["blocks.2", "blocks.4", "blocks.5", "bn2"]
DEMO_IMAGES = 600


def add_parser(sub) -> None:
    models_help = (f"model spec: a built-in name ({', '.join(sorted(BUILTIN_MODELS))}) or "
                   f"{' | '.join(s + ':...' for s in sorted(MODEL_SOURCES))}, e.g. torchvision:resnet18")
    p = sub.add_parser("dissect", help="label every unit of the given layers with a concept",
                       description="Dissect layers of a model on a concept data set and write a run directory.")
    p.add_argument("--model", required=True, help=models_help)
    p.add_argument("--weights", help="a state dict (.pt/.pth) or .safetensors file to load into the model")
    p.add_argument("--layers", nargs="+", required=True, help="layer names (see `netdissect layers MODEL`)")
    p.add_argument("--data", default="synthetic",
                   help=f"a Broden-format folder or a data set name ({', '.join(sorted(DATASETS))}), "
                        "with options as NAME:KEY=VALUE,... (default: synthetic)")
    p.add_argument("--out", required=True, type=Path, help="run directory for the results")
    add_run_options(p)
    p.set_defaults(func=run_dissect)

    p = sub.add_parser("layers", help="list a model's layers with their output shapes",
                       description="Dry-run the model on one image and list every module with its output shape.")
    p.add_argument("model", help=models_help)
    p.add_argument("--weights", help="weights file to load first")
    p.add_argument("--size", type=size_pair, default=None, help="input size N or HxW (default: the model's, or 224)")
    p.add_argument("--all", action="store_true", help="also list layers without a spatial grid")
    p.set_defaults(func=run_layers)

    p = sub.add_parser("demo", help="dissect EfficientNet-Lite0 (ImageNet) on synthetic concepts, offline",
                       description="Dissect the real EfficientNet-Lite0 ImageNet weights on the synthetic concept "
                                   "data set and print the best units.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory (default: runs/demo)")
    p.add_argument("--images", type=int, default=DEMO_IMAGES, help=f"synthetic images (default: {DEMO_IMAGES})")
    p.add_argument("--layers", nargs="+", default=DEMO_LAYERS, help=f"layers (default: {' '.join(DEMO_LAYERS)})")
    add_run_options(p)
    p.set_defaults(func=run_demo)


def add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("method")
    g.add_argument("--protocol", choices=sorted(PROTOCOLS), default="netdissect",
                   help="netdissect: CVPR 2017 (top 0.5%% of raw activations, category-conditioned IoU); "
                        "pnas2020: top 1%% of 56x56-upsampled activations, IoU over all pixels")
    g.add_argument("--quantile", type=float, help="top fraction q of activations forming a unit's mask")
    g.add_argument("--iou-threshold", type=float, default=0.04, help="detector cut-off (default 0.04)")
    g.add_argument("--denominator", choices=DENOMINATORS, help="which images count in the IoU's mask term")
    g.add_argument("--top-images", type=int, default=10, help="top-activating images kept per unit")
    g = p.add_argument_group("running")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--workers", type=int, help="data loading processes (default: half the CPU cores)")
    g.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    g.add_argument("--input-size", type=size_pair, help="resize whole images to this size for the model")
    g.add_argument("--activation-cache", choices=ACTIVATION_CACHE, default="auto",
                   help="keep activations on disk for the second pass, or run the model twice")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g.add_argument("--no-report", action="store_true", help="do not write the HTML report (RUN_DIR/report/)")


def _options(args) -> dict:
    return {
        "protocol": args.protocol,
        "quantile": args.quantile,
        "iou_threshold": args.iou_threshold,
        "denominator": args.denominator,
        "top_images": args.top_images,
        "batch_size": args.batch_size,
        "num_workers": args.workers,
        "device": args.device,
        "activation_cache": args.activation_cache,
    }


def run_dissect(args) -> int:
    from ..dissect import dissect

    loaded = load_model(args.model, weights=args.weights, input_size=args.input_size)
    result = dissect(loaded, args.data, layers=args.layers, out=args.out, progress=not args.no_progress,
                     **_options(args))
    print_summary(result)
    _report(result, args)
    return 0


def _report(result, args) -> None:
    if args.no_report:
        return
    from ..report import write_report

    index = write_report(result.run_dir, progress=not args.no_progress)
    print(f"Report: {index}")


def run_layers(args) -> int:
    import pandas as pd

    loaded = load_model(args.model, weights=args.weights)
    size = args.size or loaded.preprocess.size or (224, 224)
    x = loaded.preprocess(torch.zeros(1, 3, *size, dtype=torch.uint8))
    rows = layer_shapes(loaded.module, x)
    table = []
    for name, kind, shape, calls in rows:
        grid = shape is not None and (len(shape) == 4 or len(shape) == 3)
        if not grid and not args.all:
            continue
        table.append({"layer": name, "type": kind, "output": "x".join(map(str, shape[1:])) if shape else "-",
                      "note": "runs %d times: not dissectable" % calls if calls > 1 else ""})
    print(f"{args.model} on a {size[0]}x{size[1]} input: {len(table)} layers")
    print_table(pd.DataFrame(table))
    return 0


def run_demo(args) -> int:
    from ..dissect import dissect

    print(f"Dissecting EfficientNet-Lite0 (real ImageNet weights) on {args.images} synthetic concept images, "
          f"layers {' '.join(args.layers)}.")
    loaded = load_model("efficientnet_lite0", input_size=args.input_size)
    result = dissect(loaded, f"synthetic:n={args.images}", layers=args.layers, out=args.out,
                     progress=not args.no_progress, **_options(args))
    print()
    print_summary(result)
    _report(result, args)
    return 0
