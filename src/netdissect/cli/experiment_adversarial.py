"""`netdissect experiment adversarial`: which units a targeted attack moves (PNAS 2020)."""

from __future__ import annotations

from pathlib import Path

from .dissect import MODELS_HELP
from .experiment_ablation import add_data_options, link_page, load_class_data, model_outputs


def add_parser(sub) -> None:
    """Register ``adversarial`` on the experiment sub-command parser ``sub``."""
    p = sub.add_parser("adversarial", help="targeted attacks (PGD, CW-L2) and the units they move (PNAS 2020)",
                       description="Attack each image towards a target class and measure |change| of every "
                                   "unit's peak activation; averages over the target's, the source's and the "
                                   "other units with 99% intervals. PGD needs torchattacks "
                                   "(pip install 'netdissect[experiments]').")
    p.add_argument("--model", required=True, help=MODELS_HELP)
    p.add_argument("--weights", help="weights file to load into the model")
    p.add_argument("--layer", required=True, help="the layer whose units are measured")
    add_data_options(p)
    p.add_argument("--ablation", required=True, type=Path,
                   help="an ablation output folder of the same layer (its importance.npy ranks the units)")
    p.add_argument("--targets", required=True, type=int, nargs="+", help="target class indices (images are "
                                                                         "given them in turn)")
    p.add_argument("--images", type=int, default=100, help="images attacked (default 100)")
    p.add_argument("--method", choices=["pgd", "cw"], default="pgd")
    p.add_argument("--eps", type=float, default=8 / 255, help="PGD radius (default 8/255)")
    p.add_argument("--steps", type=int, default=10, help="attack steps (default 10)")
    p.add_argument("--c", type=float, default=1.0, help="CW constant (default 1)")
    p.add_argument("--out", required=True, type=Path, help="output folder (under RUN/experiments/ of a dissection "
                                                           "run: linked from that run's report)")
    p.set_defaults(func=run_adversarial)


def run_adversarial(args) -> int:
    """Run ``netdissect experiment adversarial``."""
    import json

    import numpy as np
    import torch

    from ..errors import ConfigError
    from ..experiments.adversarial import adversarial
    from ..models import load_model

    if args.images < 1:
        raise ConfigError(f"--images {args.images}: must be at least 1")
    path = args.ablation / "importance.npy"
    if not path.is_file():
        raise ConfigError(f"--ablation {args.ablation}: no importance.npy (run `netdissect experiment ablation`)")
    summary = args.ablation / "summary.json"
    ranked_layer = json.loads(summary.read_text()).get("layer") if summary.is_file() else None
    if ranked_layer is not None and ranked_layer != args.layer:
        raise ConfigError(f"--ablation {args.ablation} ranked the units of layer {ranked_layer!r}, not --layer "
                          f"{args.layer!r}: give an ablation of the same layer")
    loaded = load_model(args.model, weights=args.weights)
    loaded.module.to(args.device)
    data = load_class_data(args, model_outputs(loaded))
    order = args.ablation / "units_ranked.npy"  # with its ties broken; older folders: from importance.npy
    ranked = (np.load(order, allow_pickle=False) if order.is_file()
              else np.argsort(np.load(path, allow_pickle=False).T, axis=1, kind="stable"))
    if ranked.shape[0] != len(data.classes):
        raise ConfigError(f"--ablation {args.ablation} ranked units for {ranked.shape[0]} classes, but --data "
                          f"{args.data} has {len(data.classes)}")
    pre = loaded.preprocess
    n = min(args.images, len(data))
    targets = [args.targets[i % len(args.targets)] for i in range(n)]
    picks = [i for i in range(len(data)) if data.targets[i] not in args.targets][:n]
    if not picks:
        raise ConfigError(f"--data {args.data}: no image outside the target classes {args.targets} to attack")
    images = torch.from_numpy(np.stack([data.load(i, pre.crop_size, pre.resize_size) for i in picks])
                              .transpose(0, 3, 1, 2)).float().div(255).to(args.device)
    result = adversarial(loaded.module, args.layer, images, targets[:len(picks)], ranked, mean=pre.mean, std=pre.std,
                         method=args.method, eps=args.eps, steps=args.steps, c=args.c, batch_size=args.batch_size)
    page = result.save(args.out, list(data.classes))
    print(f"{args.method}: success {result.success_rate:.1%} on {len(picks)} images")
    print(result.groups.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"Wrote {page}")
    link_page(page)
    return 0
