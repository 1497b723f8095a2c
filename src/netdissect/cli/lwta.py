"""`netdissect lwta convert|train|sparsity|explain`: stochastic LWTA networks (DISCOVER, NeurIPS 2023).

Heavy libraries (torch) are imported inside the command functions, so that
building the parser stays fast.
"""

from __future__ import annotations

from pathlib import Path

from .common import print_table

LWTA_SPEC_HELP = ("model spec; LWTA models load as lwta:SPEC?U=4[&mode=argmax][&seed=S][&classes=N] "
                  "(U=off keeps the activations: the baseline with the same head)")


def add_parser(sub) -> None:
    """Register ``lwta`` and its sub-commands on the sub-command parser ``sub``."""
    p = sub.add_parser("lwta", help="stochastic local winner-takes-all networks: convert, train, measure, explain",
                       description="DISCOVER (Panousis et al., NeurIPS 2023): replace a model's activations by "
                                   "stochastic LWTA layers, train it, measure its sparsity and explain single "
                                   "predictions by the labels of the winning units.")
    lsub = p.add_subparsers(dest="lwta_command", metavar="ACTION")
    lsub.required = True

    c = lsub.add_parser("convert", help="replace a model's activations by LWTA(U); print what changed; save it")
    c.add_argument("--model", required=True, help="model spec (the unconverted model)")
    c.add_argument("--weights", help="weights to load into the unconverted model")
    c.add_argument("--U", type=int, required=True, help="units per competing block")
    c.add_argument("--mode", choices=("sample", "argmax"), default="sample", help="test-time winner (default sample)")
    c.add_argument("--out", type=Path, help="save the converted state dict (.safetensors or .pt)")
    c.set_defaults(func=run_convert)

    t = lsub.add_parser("train", help="train a classifier on folder data (a folder per class), resumable")
    t.add_argument("--model", required=True, help=LWTA_SPEC_HELP)
    t.add_argument("--weights", help="initial weights")
    t.add_argument("--data", required=True, help="DIR/CLASS/*.jpg, or DIR/train/CLASS and DIR/val/CLASS")
    t.add_argument("--out", required=True, type=Path, help="run folder (checkpoint.pt every epoch; resumes)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine")
    t.add_argument("--step-size", type=int, default=30, help="epochs per step of the step schedule")
    t.add_argument("--gamma", type=float, default=0.1, help="step schedule factor")
    t.add_argument("--warmup-epochs", type=int, default=0)
    t.add_argument("--size", type=int, default=224, help="image side")
    t.add_argument("--augment", choices=("none", "flip", "crop-flip"), default="crop-flip")
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--kl-weight", type=float, default=0.0, help="LWTA KL term to the uniform prior (0: off)")
    t.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on the GPU")
    t.add_argument("--val-fraction", type=float, default=0.2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", help="torch device (default: cuda if available)")
    t.add_argument("--workers", type=int, default=0, help="data loading processes")
    t.set_defaults(func=run_train)

    s = lsub.add_parser("sparsity", help="share of non-zero outputs per activation layer (1/U for LWTA)")
    s.add_argument("--model", required=True, help=LWTA_SPEC_HELP)
    s.add_argument("--weights")
    s.add_argument("--data", required=True, help="images: synthetic:n=100,size=64, a Broden folder or a photo folder")
    s.add_argument("--limit", type=int, default=256, help="images used (default 256)")
    s.add_argument("--size", type=int, help="side for a photo folder (default 224)")
    s.add_argument("--batch-size", type=int, default=32)
    s.set_defaults(func=run_sparsity)

    e = lsub.add_parser("explain", help="one image: the winning units of a layer with their labels")
    e.add_argument("--model", required=True, help=LWTA_SPEC_HELP)
    e.add_argument("--weights")
    e.add_argument("--image", required=True, type=Path, help="an image file")
    e.add_argument("--layer", required=True)
    e.add_argument("--run", type=Path, help="run directory of a dissection and/or describe of this model")
    e.add_argument("--method", help="word table of the run (default: its only one)")
    e.add_argument("--U", type=int, help="block size (default: the layer's LWTA)")
    e.add_argument("--pool", choices=("mean", "max"), default="mean")
    e.add_argument("--top", type=int, default=20, help="rows printed and shown (default 20)")
    e.add_argument("--html", type=Path, help="write an HTML card here")
    e.set_defaults(func=run_explain)


def run_convert(args) -> int:
    """``netdissect lwta convert``: print the replaced modules; save the state dict."""
    from ..lwta import convert
    from ..lwta.train import save_weights
    from ..models import load_model

    loaded = load_model(args.model, weights=args.weights)
    changes = convert(loaded.module, args.U, mode=args.mode)
    print(f"Replaced {len(changes)} activation modules of {args.model} by LWTA(U={args.U}):")
    for change in changes:
        print(f"  {change}")
    if args.out:
        save_weights(loaded.module, args.out)
        print(f"Saved {args.out}; load it with --model 'lwta:{args.model}?U={args.U}' --weights {args.out}")
    return 0


def run_train(args) -> int:
    """``netdissect lwta train``: train (or resume), print the history."""
    import pandas as pd

    from ..lwta.train import TrainConfig, train
    from ..models import load_model

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                         momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
                         step_size=args.step_size, gamma=args.gamma, warmup_epochs=args.warmup_epochs,
                         size=args.size, augment=args.augment, label_smoothing=args.label_smoothing,
                         kl_weight=args.kl_weight, amp=not args.no_amp, val_fraction=args.val_fraction,
                         seed=args.seed)
    loaded = load_model(args.model, weights=args.weights)
    result = train(loaded.module, args.data, args.out, config=config, preprocess=loaded.preprocess,
                   device=args.device, num_workers=args.workers)
    print_table(pd.DataFrame(result.history))
    print(f"Weights: {result.weights}  (--model '{args.model}' --weights {result.weights})")
    return 0


def run_sparsity(args) -> int:
    """``netdissect lwta sparsity``: print the share of non-zero outputs per layer."""
    from ..lwta.measure import image_batches, sparsity
    from ..models import load_model

    loaded = load_model(args.model, weights=args.weights)
    table = sparsity(loaded.module, image_batches(args.data, loaded.preprocess, batch_size=args.batch_size,
                                                  limit=args.limit, size=args.size))
    print_table(table, floatfmt="{:.4f}")
    return 0


def run_explain(args) -> int:
    """``netdissect lwta explain``: print the winners of a layer for one image; write the HTML card."""
    from ..lwta.measure import explain, explanation_html
    from ..models import load_model

    loaded = load_model(args.model, weights=args.weights)
    table = explain(loaded.module, args.image, args.layer, preprocess=loaded.preprocess, run_dir=args.run,
                    method=args.method, U=args.U, pool=args.pool)
    print(f"Winning units of {args.layer} for {args.image} ({len(table)} blocks), by value:")
    print_table(table.head(args.top))
    if args.html:
        args.html.write_text(explanation_html(table, args.image, layer=args.layer, title=f"{args.model}: "
                                              f"{args.image.name}", top=args.top))
        print(f"Card: {args.html}")
    return 0


