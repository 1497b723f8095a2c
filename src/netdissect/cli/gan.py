"""`netdissect gan ablate|insert|ace` and `netdissect edit`: interventions on a generator's units.

Bau et al. 2020 (PNAS), "Dissecting a GAN" (METHODS B3, B5).  Units come
from a dissection run of the generator (``--run``, ranked by IoU with
``--concept``) or are given (``--units``, 0-based).  Heavy libraries are
imported inside the command functions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _common(p: argparse.ArgumentParser, *, concept: bool = True) -> None:
    p.add_argument("--generator", required=True, help="a built-in generator (face_dcgan, mnist_dcgan, scene_gan) or "
                                                      "module:package.module:factory")
    p.add_argument("--weights", help="the generator's weights (state dict or .safetensors)")
    p.add_argument("--layer", required=True, help="the layer to edit (a layer of the dissection run)")
    p.add_argument("--segmenter", default="color", help="segmenter spec that measures the concept (default color)")
    if concept:
        p.add_argument("--concept", required=True, help="concept name of the segmenter (e.g. red-c)")
    p.add_argument("--run", type=Path, help="dissection run directory of the generator: units ranked by IoU")
    p.add_argument("--units", help="comma-separated 0-based channel indices instead of --run (the report's and "
                                   "tally.csv's unit numbers are 1-based: subtract 1)")
    p.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    p.add_argument("--batch-size", type=int, default=32, help="latents per batch (default 32)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--out", required=True, type=Path, help="output folder (PNG, CSV, JSON)")


def add_parser(sub) -> None:
    """Register ``gan`` (with ``ablate``, ``insert``, ``ace``) and ``edit`` on the sub-command parser ``sub``."""
    gan = sub.add_parser("gan", help="ablate, insert or optimise a generator's concept units",
                         description="Interventions on a dissected generator (Bau et al. 2020, PNAS).")
    gsub = gan.add_subparsers(dest="gan_command", metavar="ACTION")
    gsub.required = True

    p = gsub.add_parser("ablate", help="zero the top-k units of a concept and measure its pixels (k = 0..30)")
    _common(p)
    p.add_argument("--samples", type=int, default=200, help="generator samples (default 200)")
    p.add_argument("--max-k", type=int, default=30, help="largest k (default 30)")
    p.set_defaults(func=run_ablate)

    p = gsub.add_parser("insert", help="set the top-k units high in each cell and tally the concept added")
    _common(p)
    p.add_argument("--samples", type=int, default=50, help="generator samples (default 50)")
    p.add_argument("--k", type=int, default=20, help="how many top units to insert (default 20)")
    p.add_argument("--quantile", type=float, default=0.995, help="insertion value: this per-unit quantile "
                                                                 "(default 0.995)")
    p.set_defaults(func=run_insert)

    p = gsub.add_parser("ace", help="average causal effect of the top-k units; optimise a soft unit set")
    _common(p)
    p.add_argument("--samples", type=int, default=200, help="evaluation samples (default 200, seed 11)")
    p.add_argument("--k", type=int, default=20, help="size of the hard unit sets compared (default 20)")
    p.add_argument("--optimize", action="store_true", help="also optimise a soft unit set (Adam on alpha)")
    p.add_argument("--epochs", type=int, default=10, help="optimisation epochs (default 10)")
    p.add_argument("--train", type=int, default=1000, help="training samples holding the concept (default 1000)")
    p.add_argument("--search", type=int, default=10000, help="latents searched for them (default 10000)")
    p.add_argument("--lam", type=float, default=0.005, help="L2 penalty (default 0.005)")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    p.add_argument("--score", default="auto", help="differentiable score: color (colour segmenter), "
                                                   "ink[:THRESHOLD], or auto (from --segmenter)")
    p.set_defaults(func=run_ace)

    p = sub.add_parser("edit", help="invert an image into a generator and switch units off or on in a region",
                       description="Invert an image into the generator (z, then the layer's features), switch "
                                   "units off or on inside a mask, regenerate; writes before/after PNGs.")
    _common(p, concept=False)
    p.add_argument("--image", required=True, type=Path, help="the image to edit")
    p.add_argument("--concept", help="with --run: edit the concept's top --k units")
    p.add_argument("--k", type=int, default=10, help="how many top units of --concept (default 10)")
    p.add_argument("--mode", choices=["off", "on"], default="off", help="switch units off (0) or on (their "
                                                                        "99.5th percentile)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--mask", type=Path, help="a PNG: bright pixels are the region")
    where.add_argument("--box", help="x0,y0,x1,y1 in image pixels")
    p.add_argument("--steps", type=int, default=300, help="Adam steps for z and for the features (default 300)")
    p.set_defaults(func=run_edit)


def _setup(args):
    import torch

    from ..errors import ConfigError
    from ..generators import LayerSplit
    from ..models import load_generator
    from ..segment import load_segmenter

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gen = load_generator(args.generator, weights=args.weights)
    split = LayerSplit(gen, args.layer, device=device)
    seg = load_segmenter(args.segmenter).to(device)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {args.batch_size}")
    return split, seg


def _units(args, k: int | None = None) -> list[int]:
    from ..errors import ConfigError
    from ..generators import rank_units

    if (args.run is None) == (args.units is None):
        raise ConfigError("give exactly one of --run (a dissection run of the generator) and --units")
    if args.units is not None:
        try:
            units = [int(u) for u in args.units.split(",") if u.strip()]
        except ValueError:
            raise ConfigError(f"--units {args.units!r} must be comma-separated integers") from None
        return units if k is None else units[:k]
    if not getattr(args, "concept", None):
        raise ConfigError("--run needs --concept (the concept whose top units are used)")
    units, _ = rank_units(args.run, args.layer, args.concept)
    return [int(u) for u in (units if k is None else units[:k])]


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def run_ablate(args) -> int:
    """`netdissect gan ablate`: the ablation curve, its table and strips."""
    from ..generators import ablation_sweep
    from ..generators.figures import save_ablation_curve, save_strip

    split, seg = _setup(args)
    units = _units(args, args.max_k)
    ks = list(range(0, min(args.max_k, len(units)) + 1))
    res = ablation_sweep(split, seg, args.concept, units, ks=ks, samples=args.samples, seed=args.seed,
                         batch_size=args.batch_size, progress=True)
    table = res.table()
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "ablation.csv", index=False)
    _write_json(args.out / "ablation.json", {"layer": args.layer, "concept": res.concept, "units": units,
                                             "samples": args.samples, "seed": args.seed})
    save_ablation_curve(table, args.out / "ablation.png", title=f"{res.concept} units of {args.layer}")
    if res.strip is not None:
        save_strip(res.strip, args.out / "ablation_strip.png")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {args.out}/ablation.csv, ablation.png, ablation_strip.png")
    return 0


def run_insert(args) -> int:
    """`netdissect gan insert`: concept pixels added per cell and per context."""
    import numpy as np

    from ..generators import insertion_sweep, unit_quantiles
    from ..generators.figures import save_cell_map, save_strip

    split, seg = _setup(args)
    units = _units(args, args.k)
    values = unit_quantiles(split, q=args.quantile, samples=max(args.samples, 100), seed=args.seed,
                            batch_size=args.batch_size)
    res = insertion_sweep(split, seg, args.concept, units, values, samples=args.samples, seed=args.seed,
                          batch_size=args.batch_size, progress=True)
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = res.by_context()
    ctx.to_csv(args.out / "insertion_context.csv", index=False)
    np.savetxt(args.out / "insertion_cells.csv", res.cell_map(), delimiter=",", fmt="%.4f")
    _write_json(args.out / "insertion.json", {"layer": args.layer, "concept": res.concept, "units": units,
                                              "values": [float(v) for v in res.values], "quantile": args.quantile,
                                              "samples": args.samples, "seed": args.seed,
                                              "cell_pixels": res.cell_pixels})
    save_cell_map(res.cell_map(), args.out / "insertion_map.png",
                  title=f"{res.concept} pixels added per insertion")
    if res.strip is not None:
        save_strip(res.strip, args.out / "insertion_strip.png")
    print(ctx.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {args.out}/insertion_context.csv, insertion_map.png, insertion_strip.png")
    return 0


def soft_score(spec: str, segmenter, concept: str):
    """The differentiable score named by ``--score`` (``auto`` follows the segmenter).

    Parameters
    ----------
    spec : str
        ``auto``, ``color`` or ``ink[:THRESHOLD]`` (threshold a grey level 0..254).
    segmenter : Segmenter
        The hard segmenter (for ``auto``).
    concept : str
        The concept scored.

    Returns
    -------
    callable
        (N, C, H, W) in [0, 1] -> (N, h, w).

    Raises
    ------
    ConfigError
        For an unknown score or one that does not fit the segmenter.
    """
    from ..errors import ConfigError
    from ..generators import SoftColorScore, SoftInkScore

    if spec == "auto":
        spec = segmenter.spec().split("?")[0]
        if spec == "ink":
            spec = f"ink:{getattr(segmenter, 'threshold', 127)}"
    name, _, arg = spec.partition(":")
    if name == "color":
        return SoftColorScore(concept)
    if name == "ink":
        if concept != "ink":
            raise ConfigError(f"--score ink scores the concept 'ink', not {concept!r}")
        return SoftInkScore((int(arg) + 0.5) / 255 if arg else 0.5)
    raise ConfigError(f"--score {spec!r} is not one of auto, color, ink[:THRESHOLD]")


def run_ace(args) -> int:
    """`netdissect gan ace`: ACE of the IoU top-k set (and of the optimised set with --optimize)."""
    import numpy as np

    from ..generators import average_causal_effect, optimize_units, rank_units
    from ..generators.ace import find_samples, insertion_values
    from ..generators.split import concept_number

    split, seg = _setup(args)
    ranked = _units(args)
    number = concept_number(seg, args.concept)
    train = find_samples(split, seg, number, count=min(args.train, 200), search=args.search, seed=10,
                         batch_size=args.batch_size)
    values = insertion_values(split, seg, number, train, seed=10, batch_size=args.batch_size)[1].numpy()
    evaluate = dict(samples=args.samples, seed=11, batch_size=args.batch_size)
    out = {"layer": args.layer, "concept": args.concept, "k": args.k, "eval_samples": args.samples,
           "values": [float(v) for v in values]}
    iou_set = ranked[:args.k]
    r = average_causal_effect(split, seg, args.concept, iou_set, values, **evaluate)
    out["iou_top"] = {"units": iou_set, "ace": r.ace, "interval99": list(r.interval),
                      "inserted": float(r.inserted.mean()), "ablated": float(r.ablated.mean())}
    print(f"IoU top-{args.k}: ACE {r.ace:.4f} (99% {r.interval[0]:.4f}..{r.interval[1]:.4f}); "
          f"inserted {r.inserted.mean():.4f}, ablated {r.ablated.mean():.4f}")
    if args.optimize:
        init = None
        if args.run is not None:
            order, iou = rank_units(args.run, args.layer, args.concept)
            init = np.zeros(split.feature_shape[0], np.float32)
            init[order] = iou / max(float(iou.max()), 1e-12)
        opt = optimize_units(split, seg, args.concept, soft_score(args.score, seg, args.concept), init=init,
                             lam=args.lam, lr=args.lr, epochs=args.epochs, train=args.train, search=args.search,
                             progress=True)
        top = opt.top(args.k)
        r2 = average_causal_effect(split, seg, args.concept, top, values, **evaluate)
        out["optimized_top"] = {"units": top, "ace": r2.ace, "interval99": list(r2.interval),
                                "inserted": float(r2.inserted.mean()), "ablated": float(r2.ablated.mean()),
                                "overlap_with_iou_top": len(set(top) & set(iou_set)), "losses": opt.losses}
        args.out.mkdir(parents=True, exist_ok=True)
        np.save(args.out / "alpha.npy", opt.alpha)
        print(f"optimised top-{args.k}: ACE {r2.ace:.4f} (99% {r2.interval[0]:.4f}..{r2.interval[1]:.4f}); "
              f"{len(set(top) & set(iou_set))} of {args.k} units shared with the IoU set")
    _write_json(args.out / "ace.json", out)
    print(f"wrote {args.out}/ace.json")
    return 0


def run_edit(args) -> int:
    """`netdissect edit`: invert, edit inside the mask, write the images."""
    import numpy as np
    from PIL import Image

    from ..generators import edit_features, invert, load_mask, unit_quantiles
    from ..generators.figures import save_strip

    split, _ = _setup(args)
    units = _units(args, args.k)
    mask = load_mask(split, png=args.mask, box=args.box)
    inv = invert(split, args.image, z_steps=args.steps, feature_steps=args.steps, seed=args.seed)
    values = unit_quantiles(split, samples=200, seed=args.seed) if args.mode == "on" else None
    edited = edit_features(inv.features, units, mask, args.mode, values)
    images = {"original": split.to_images(inv.target),
              "reconstruction": split.to_images(split.render(inv.features, inv.z)),
              "edited": split.to_images(split.render(edited, inv.z))}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, im in images.items():
        Image.fromarray(im[0].permute(1, 2, 0).cpu().numpy()).save(args.out / f"{name}.png")
    save_strip(np.stack([im[0].permute(1, 2, 0).cpu().numpy() for im in images.values()])[None],
               args.out / "before_after.png")
    _write_json(args.out / "edit.json", {"layer": args.layer, "units": units, "mode": args.mode,
                                         "z_error": inv.z_error, "error": inv.error,
                                         "mask_cells": mask.tolist()})
    print(f"inversion error (MSE, [0, 1] pixels): z {inv.z_error:.5f}, features {inv.error:.5f}")
    print(f"wrote {args.out}/original.png, reconstruction.png, edited.png, before_after.png")
    return 0
