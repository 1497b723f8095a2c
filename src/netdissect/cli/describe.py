"""`netdissect describe`: describe units in words with an image-text model (CLIP-Dissect).

Heavy libraries (torch) are imported inside the command function, so that
building the parser stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import print_table, size_pair

SIMILARITIES_HELP = "cos, cos3, rank_reorder, wpmi, soft_wpmi (CLIP-Dissect's default)"
IMAGE_TEXT_DEFAULT = "open_clip:ViT-B-16:openai"


def add_parser(sub) -> None:
    """Register ``describe`` on the sub-command parser ``sub``."""
    p = sub.add_parser(
        "describe", help="describe every unit of the given layers in words (CLIP-Dissect)",
        description="Describe units in words with an image-text model (CLIP-Dissect, Oikarinen & Weng 2023): one "
                    "pass over unlabelled probe images, then each unit gets the words whose image-text similarity "
                    "best matches its activations. Into the run directory of a dissection, the words sit beside "
                    "the IoU labels (and the report shows both).")
    p.add_argument("--model", required=True, help="model spec (see `netdissect models`)")
    p.add_argument("--weights", help="a state dict (.pt/.pth) or .safetensors file to load into the model")
    p.add_argument("--layers", nargs="+", required=True,
                   help="layer names: feature maps, transformer blocks or linear layers (`netdissect layers MODEL "
                        "--all`)")
    p.add_argument("--probe", required=True,
                   help="probe images: a folder of photos (PATH or PATH?size=N), a Broden folder or data set "
                        "spec (synthetic:n=500); labels are not used")
    p.add_argument("--concepts", default=None,
                   help="the words: wordfreq[:N] (20,000 common English words; alias 20k), imagenet, classes:FILE, "
                        "broden:DIR or a data spec (its concept names), words:FILE or a file of one word per line, "
                        "model (the image-text model's own words; the default for a closed-vocabulary model, "
                        "else wordfreq)")
    p.add_argument("--similarity", default="soft_wpmi", help=f"similarity function: {SIMILARITIES_HELP}")
    p.add_argument("--image-text", default=IMAGE_TEXT_DEFAULT,
                   help=f"image-text model: open_clip:ARCH:PRETRAINED, hf:MODEL_ID, classifier:MODEL_SPEC (a "
                        f"closed vocabulary of class names), synthetic_clip (default {IMAGE_TEXT_DEFAULT})")
    p.add_argument("--pool", choices=("mean", "max"), default="mean",
                   help="how a feature map becomes one number per image (default mean)")
    p.add_argument("--tokens", choices=("cls", "mean"), default="cls",
                   help="how transformer tokens become one number per image (default cls)")
    p.add_argument("--top", type=int, default=5, help="words kept per unit (default 5)")
    p.add_argument("--method", help="name of the label table (default words-SIMILARITY); another name keeps "
                                    "tables of several vocabularies side by side")
    p.add_argument("--out", required=True, type=Path, help="run directory (may hold a dissection)")
    g = p.add_argument_group("running")
    g.add_argument("--batch-size", type=int, default=32, help="default 32")
    g.add_argument("--workers", type=int, help="data loading processes (default: half the CPU cores)")
    g.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    g.add_argument("--input-size", type=size_pair, help="resize whole images to this size for the model")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g.add_argument("--no-report", action="store_true",
                   help="do not rewrite the HTML report of a dissection in the same run directory")
    g.add_argument("--wait", action="store_true",
                   help="when another process is writing into the run directory, wait for it to finish")
    g.add_argument("--checkpoint-seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    p.set_defaults(func=run_describe)


def run_describe(args) -> int:
    """``netdissect describe``: describe units in words; print the first units of each layer; rewrite the report."""
    from ..describing import describe
    from ..engine.distributed import init_from_env
    from ..engine.plan import check_run_dir, hold_run_dir
    from ..errors import ConfigError
    from ..models import load_model

    dist = init_from_env()
    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    check_run_dir(args.out)
    with hold_run_dir(args.out, wait=args.wait, dist=dist):
        loaded = load_model(args.model, weights=args.weights, input_size=args.input_size)
        result = describe(loaded, args.probe, layers=args.layers, concepts=args.concepts,
                          similarity=args.similarity, image_text=args.image_text, pool=args.pool,
                          tokens=args.tokens, out=args.out, method=args.method, top=args.top,
                          batch_size=args.batch_size, num_workers=args.workers, device=args.device,
                          progress=not args.no_progress, checkpoint_seconds=args.checkpoint_seconds)
        if dist.is_main:
            _print(result)
            if result.has_dissection and not args.no_report:
                from ..report import write_report

                print(f"Report: {write_report(result.run_dir, progress=not args.no_progress)}")
    return 0


def _print(result) -> None:
    info = result.info
    print(f"Words for {len(result.labels)} units ({info['similarity']} over {info['words']} words of "
          f"{info['vocabulary']!r}, image-text model {info['image_text']!r}, {info['images']} probe images):")
    rows = result.labels.groupby("layer", sort=False).head(8)
    cols = [c for c in ("layer", "unit", "label", "score", "label_2", "label_3") if c in rows.columns]
    print_table(rows[cols])
    if result.has_dissection:
        print()
        print("Agreement with the IoU labels (share of units whose best word equals / contains the IoU concept):")
        print_table(result.agreement(), floatfmt="{:.2f}")
    print()
    print(f"Labels: {result.run_dir / 'labels'} (method {result.method})")
