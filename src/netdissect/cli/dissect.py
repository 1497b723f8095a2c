"""`netdissect dissect`, `netdissect layers`, `netdissect models` and `netdissect demo`.

Heavy libraries (torch) are imported inside the command functions, so that
building the parser (and ``netdissect --help``) stays fast.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from ..config import ACTIVATION_CACHE, DENOMINATORS, PROTOCOLS, DissectConfig
from .common import print_summary, print_table, size_pair

DEMO_LAYERS = ["blocks.2", "blocks.4", "blocks.5", "bn2"]
DEMO_IMAGES = 600
_DEFAULTS = {f.name: f.default for f in fields(DissectConfig)}
MODELS_HELP = ("model spec: a built-in name, torchvision:NAME[:WEIGHTS], timm:NAME[:pretrained] or "
               "module:package.module:factory (list them with `netdissect models`)")


def add_parser(sub) -> None:
    """Register ``dissect``, ``layers``, ``models`` and ``demo`` on the sub-command parser ``sub``."""
    p = sub.add_parser("dissect", help="label every unit of the given layers with a concept",
                       description="Dissect layers of a model on a concept data set (or of a generator on its "
                                   "own samples) and write a run directory. Runs under torchrun for several "
                                   "processes: `torchrun --nproc-per-node N -m netdissect dissect ...`.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help=MODELS_HELP)
    what.add_argument("--generator", help="dissect a generator on its own samples (GAN dissection): a built-in "
                                          "name (face_dcgan, mnist_dcgan, scene_gan) or module:package.module:factory; "
                                          "needs --segmenter")
    p.add_argument("--weights", nargs="+", help="a state dict (.pt/.pth) or .safetensors file to load into the "
                                                 "model; several files or a quoted glob ('ckpt_*.pt') dissect each "
                                                 "checkpoint into OUT/<file stem>/ and plot unique detectors "
                                                 "against the training step (the last number of the file name)")
    p.add_argument("--layers", nargs="+", required=True, help="layer names (see `netdissect layers MODEL`)")
    p.add_argument("--data", default=None,
                   help="a Broden-format folder or a data set name (see `netdissect models`), with options as "
                        "NAME:KEY=VALUE,...; with --segmenter also a folder of plain photos (default: synthetic)")
    p.add_argument("--segmenter", help="make the concept labels with a segmenter: color, "
                                       "torchvision:NAME[:WEIGHTS], module:package.module:factory")
    p.add_argument("--samples", type=int, help="generator samples (default 1000)")
    p.add_argument("--out", required=True, type=Path, help="run directory for the results")
    add_run_options(p)
    p.set_defaults(func=run_dissect)

    p = sub.add_parser("layers", help="list a model's layers with their output shapes",
                       description="Dry-run the model on one image and list every module with its output shape.")
    p.add_argument("model", help=MODELS_HELP)
    p.add_argument("--weights", help="weights file to load first")
    p.add_argument("--size", type=size_pair, default=None, help="input size N or HxW (default: the model's, or 224)")
    p.add_argument("--all", action="store_true", help="also list layers without a spatial grid")
    p.set_defaults(func=run_layers)

    p = sub.add_parser("models", help="list the built-in models, generators, segmenters and data sets",
                       description="List what the registries hold: built-in models and model sources, "
                                   "generators, segmenters and named data sets.")
    p.set_defaults(func=run_models)

    p = sub.add_parser("demo", help="dissect EfficientNet-Lite0 (ImageNet) on synthetic concepts, offline",
                       description="Dissect the real EfficientNet-Lite0 ImageNet weights on the synthetic concept "
                                   "data set and print the best units.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory (default: runs/demo)")
    p.add_argument("--images", type=int, default=DEMO_IMAGES, help=f"synthetic images (default: {DEMO_IMAGES})")
    p.add_argument("--layers", nargs="+", default=DEMO_LAYERS, help=f"layers (default: {' '.join(DEMO_LAYERS)})")
    add_run_options(p)
    p.set_defaults(func=run_demo)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The method and running options shared by `dissect` and `demo` (defaults: DissectConfig's)."""
    d = _DEFAULTS
    g = p.add_argument_group("method")
    g.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None,
                   help="netdissect: CVPR 2017 (top 0.5%% of raw activations, category-conditioned IoU; the "
                        "default); pnas2020: top 1%% of upsampled activations, IoU over all pixels (the default "
                        "for --generator)")
    g.add_argument("--quantile", type=float, help="top fraction q of activations forming a unit's mask")
    g.add_argument("--iou-threshold", type=float, default=d["iou_threshold"],
                   help=f"detector cut-off (default {d['iou_threshold']})")
    g.add_argument("--denominator", choices=DENOMINATORS, help="which images count in the IoU's mask term")
    g.add_argument("--top-images", type=int, default=d["top_images"],
                   help=f"top-activating images kept per unit (default {d['top_images']})")
    g.add_argument("--seed", type=int, default=d["seed"],
                   help=f"seed of generator latents and of sampled thresholds (default {d['seed']})")
    g = p.add_argument_group("running")
    g.add_argument("--batch-size", type=int, default=d["batch_size"], help=f"default {d['batch_size']}")
    g.add_argument("--workers", type=int, help="data loading processes (default: half the CPU cores)")
    g.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available; "
                                    "under torchrun cuda:LOCAL_RANK)")
    g.add_argument("--input-size", type=size_pair, help="resize whole images to this size for the model")
    g.add_argument("--activation-cache", choices=ACTIVATION_CACHE, default=d["activation_cache"],
                   help="keep activations on disk for the second pass, or run the model twice")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g.add_argument("--no-report", action="store_true", help="do not write the HTML report (RUN_DIR/report/)")
    g.add_argument("--wait", action="store_true",
                   help="when another process is writing into the run directory, wait for it to finish "
                        "(default: stop at once, naming that process)")
    # how often the resumable state is saved (seconds); hidden: for tests and very slow batches
    g.add_argument("--checkpoint-seconds", type=float, default=d["checkpoint_seconds"], help=argparse.SUPPRESS)


def _options(args) -> dict:
    options = {
        "quantile": args.quantile,
        "iou_threshold": args.iou_threshold,
        "denominator": args.denominator,
        "top_images": args.top_images,
        "batch_size": args.batch_size,
        "num_workers": args.workers,
        "device": args.device,
        "activation_cache": args.activation_cache,
        "seed": args.seed,
        "checkpoint_seconds": args.checkpoint_seconds,
    }
    if args.protocol is not None:
        options["protocol"] = args.protocol
    return options


def run_dissect(args) -> int:
    """``netdissect dissect``: dissect a model on data, or a generator on its samples; print and report."""
    from ..engine.distributed import init_from_env
    from ..engine.plan import check_run_dir, hold_run_dir
    from ..errors import ConfigError
    from ..models import load_model
    from ..pipeline import dissect

    dist = init_from_env()
    weights = args.weights or []
    if len(weights) > 1 or any(ch in w for w in weights for ch in "*?["):  # a series of checkpoints
        return _run_series(args)
    args.weights = weights[0] if weights else None
    if args.generator and args.data:
        raise ConfigError("--generator dissects the generator on its own samples: leave out --data")
    if not args.generator and args.samples is not None:
        raise ConfigError("--samples is for --generator; with --data every image is used")
    check_run_dir(args.out)
    # the run directory is locked from before the dissection until its report is written
    with hold_run_dir(args.out, wait=args.wait, dist=dist):
        if args.generator:
            result = dissect(generator=args.generator, weights=args.weights, segmenter=args.segmenter,
                             samples=args.samples, layers=args.layers, out=args.out, progress=not args.no_progress,
                             **_options(args))
        else:
            loaded = load_model(args.model, weights=args.weights, input_size=args.input_size)
            result = dissect(loaded, args.data or "synthetic", layers=args.layers, out=args.out,
                             segmenter=args.segmenter, progress=not args.no_progress, **_options(args))
        if dist.is_main:
            print_summary(result)
            _report(result, args)
    return 0


def _run_series(args) -> int:
    """``netdissect dissect --weights A B ...`` (or a glob): one sub-run per checkpoint, and the series page."""
    from ..engine.plan import check_run_dir, hold_run_dir
    from ..errors import ConfigError
    from ..experiments.series import checkpoint_series

    if args.generator:
        raise ConfigError("--weights with several checkpoints is for --model, not --generator")
    check_run_dir(args.out)
    with hold_run_dir(args.out, wait=args.wait):
        series = checkpoint_series(args.model, args.data or "synthetic", weights=args.weights, layers=args.layers,
                                   out=args.out, progress=not args.no_progress, report=not args.no_report,
                                   **_options(args))
    t = series.table[series.table["convention"] == "per-category"]
    wide = t.pivot_table(index=["step", "layer"], columns="category", values="unique", sort=True).reset_index()
    wide.columns.name = None
    print("Unique detectors per category (per-category convention) by training step:")
    print_table(wide, floatfmt="{:.0f}")
    print(f"Series: {series.out / 'series.csv'}; page: {series.out / 'series' / 'index.html'}")
    return 0


def _report(result, args) -> None:
    if args.no_report:
        return
    from ..report import write_report

    index = write_report(result.run_dir, progress=not args.no_progress)
    print(f"Report: {index}")


def run_layers(args) -> int:
    """``netdissect layers MODEL``: dry-run the model and print its layers with their output shapes."""
    import pandas as pd
    import torch

    from ..hooks import layer_info
    from ..models import load_model

    loaded = load_model(args.model, weights=args.weights)
    size = args.size or loaded.preprocess.size or (224, 224)
    x = loaded.preprocess(torch.zeros(1, 3, *size, dtype=torch.uint8))
    table = []
    for info in layer_info(loaded.module, x):
        if not info.has_grid and not args.all:
            continue
        table.append({"layer": info.name, "type": info.type,
                      "output": "x".join(map(str, info.shape[1:])) if info.shape else "-",
                      "note": "runs %d times: not dissectable" % info.calls if info.calls > 1 else ""})
    print(f"{args.model} on a {size[0]}x{size[1]} input: {len(table)} layers")
    print_table(pd.DataFrame(table))
    return 0


def run_models(args) -> int:
    """``netdissect models``: print what the registries hold."""
    from ..data import list_datasets
    from ..models import list_generators, list_models, list_sources
    from ..segment import list_segmenters

    print("Built-in models:  " + ", ".join(list_models()))
    print("Model sources:    " + ", ".join(s + ":..." for s in list_sources()))
    print("Generators:       " + ", ".join(list_generators()) + ", module:...")
    print("Segmenters:       " + ", ".join(list_segmenters()))
    print("Named data sets:  " + ", ".join(list_datasets()) + " (or any Broden folder)")
    return 0


def run_demo(args) -> int:
    """``netdissect demo``: dissect EfficientNet-Lite0 (ImageNet) on synthetic concepts, offline."""
    from ..engine.plan import check_run_dir, hold_run_dir
    from ..models import load_model
    from ..pipeline import dissect

    print(f"Dissecting EfficientNet-Lite0 (real ImageNet weights) on {args.images} synthetic concept images, "
          f"layers {' '.join(args.layers)}.")
    loaded = load_model("efficientnet_lite0", input_size=args.input_size)
    check_run_dir(args.out)
    with hold_run_dir(args.out, wait=args.wait):
        result = dissect(loaded, f"synthetic:n={args.images}", layers=args.layers, out=args.out,
                         progress=not args.no_progress, **_options(args))
        print()
        print_summary(result)
        _report(result, args)
    return 0
