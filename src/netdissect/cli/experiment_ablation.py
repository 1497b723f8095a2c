"""`netdissect experiment ablation`: unit ablation for classifiers (PNAS 2020)."""

from __future__ import annotations

from pathlib import Path

from .dissect import MODELS_HELP


def add_data_options(p) -> None:
    """The classification data options shared by ablation and adversarial."""
    p.add_argument("--data", required=True, type=Path,
                   help="a folder per class (ROOT/<class>/*.jpg) or a list file of 'path class_index' lines")
    p.add_argument("--classes", type=Path, help="class names file, one per line (with a list file; default: "
                                                "ImageNet's for 1000 outputs)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")


def load_class_data(args, outputs: int):
    """The ClassData named by ``--data`` (and ``--classes``)."""
    from ..data.classes import ClassData
    from .explain import class_names_for

    if args.data.is_dir():
        return ClassData.from_folders(args.data)
    names = class_names_for(outputs, args.classes)
    return ClassData.from_list(args.data, classes=names)


def default_out(args, name: str) -> Path:
    """``--out``, else ``RUN/experiments/NAME`` with ``--run`` (linked from the run's report).

    Raises
    ------
    ConfigError
        Without ``--out`` and ``--run``.
    """
    from ..errors import ConfigError
    from ..report.links import EXPERIMENTS_DIR

    if args.out is not None:
        return args.out
    if getattr(args, "run", None) is None:
        raise ConfigError("give --out (or --run, to write into RUN/experiments/)")
    return Path(args.run) / EXPERIMENTS_DIR / name


def link_page(page: Path, run: Path | None = None) -> None:
    """Link ``page`` from its run's report when it lies under ``RUN/experiments/``; say so, or how to."""
    from ..report.links import EXPERIMENTS_DIR, link_experiments, run_of_page

    owner = run_of_page(page)
    if owner is not None:
        listing = link_experiments(owner)
        print(f"Linked from {owner}: {listing}" + (" and the report" if (owner / "report" / "index.html").is_file()
                                                   else " (the report will list it when made)"))
    elif run is not None:
        print(f"Not linked from {run}'s report: pages are linked when written under {run / EXPERIMENTS_DIR}/")


def batches_of(data, loaded, batch_size: int, device: str):
    """A callable returning fresh (x, targets) batches of ``data`` for ``loaded``'s preprocessing."""
    import torch

    pre = loaded.preprocess

    def make():
        for images, targets in data.batches(batch_size, pre.crop_size, pre.resize_size):
            yield pre(torch.from_numpy(images)).to(device), torch.from_numpy(targets).to(device)

    return make


def model_outputs(loaded) -> int:
    """How many outputs the model has (one dry run)."""
    import torch

    size = loaded.preprocess.crop_size
    with torch.no_grad():
        return int(loaded.module(torch.zeros(1, 3, size, size)).shape[-1])


def add_parser(sub) -> None:
    """Register ``ablation`` on the experiment sub-command parser ``sub``."""
    p = sub.add_parser("ablation", help="unit ablation: per-class balanced accuracy (PNAS 2020)",
                       description="Rank each class's units by single-unit ablation on the first part of every "
                                   "class, and test ablating the top n and all but the top n on the rest. The "
                                   "network runs to the layer once per batch; only the rest runs per ablation.")
    p.add_argument("--model", required=True, help=MODELS_HELP + "; its outputs are the data's classes")
    p.add_argument("--weights", help="weights file to load into the model")
    p.add_argument("--layer", required=True, help="the layer whose units are ablated")
    add_data_options(p)
    p.add_argument("--split", type=float, default=0.5, help="share of each class used to rank (default 0.5)")
    p.add_argument("--same-split", action="store_true", help="rank and test on all images (in-sample)")
    p.add_argument("--metric", choices=["balanced_accuracy", "probability"], default="balanced_accuracy")
    p.add_argument("--ns", type=int, nargs="+", default=[1, 2, 4, 8, 20, 64, 128, 256],
                   help="sizes n of the top-unit sets")
    p.add_argument("--run", type=Path, help="a dissection run of the layer: labels and IoU for the tables and "
                                            "the 'important to many classes' plot")
    p.add_argument("--out", type=Path, help="output folder (default with --run: RUN/experiments/ablation-LAYER, "
                                            "linked from the run's report)")
    p.set_defaults(func=run_ablation)


def run_ablation(args) -> int:
    """Run ``netdissect experiment ablation``."""
    import numpy as np

    from ..experiments.ablation import ablation
    from ..models import load_model
    from ..results import DissectionData

    out = default_out(args, f"ablation-{args.layer}")
    loaded = load_model(args.model, weights=args.weights)
    loaded.module.to(args.device)
    data = load_class_data(args, model_outputs(loaded))
    rank, test = (data, data) if args.same_split else data.split(args.split)
    result = ablation(loaded.module, args.layer, batches_of(rank, loaded, args.batch_size, args.device),
                      batches_of(test, loaded, args.batch_size, args.device), data.classes, metric=args.metric,
                      ns=args.ns)
    iou = labels = None
    if args.run is not None:
        run = DissectionData.load(args.run)
        run.layer_dir(args.layer)
        t = run.labels[run.labels["layer"] == args.layer].sort_values("unit")
        iou, labels = t["iou"].to_numpy(np.float64), t["label"].tolist()
    page = result.save(out, iou=iou, labels=labels)
    print(f"model split: {result.method}; {result.info['units']} units, {len(data.classes)} classes")
    print(result.class_summary().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"Wrote {page}")
    link_page(page, args.run)
    return 0
