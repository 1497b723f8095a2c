"""`netdissect experiment rotation`: dissect randomly rotated bases of layers (METHODS A1)."""

from __future__ import annotations

from pathlib import Path

from .dissect import MODELS_HELP, _options, add_run_options


def add_parser(sub) -> None:
    """Register ``rotation`` on the experiment sub-command parser ``sub``."""
    p = sub.add_parser("rotation", help="unique detectors of randomly rotated bases (Bau et al. 2017, 3.2)",
                       description="Rotate each pixel's activation vector of the layers by R(alpha) = "
                                   "expm(alpha logm Q), Q uniform on SO(n), before the thresholds, and dissect "
                                   "every alpha and seed in one pass over the data. Writes a dissection run with "
                                   "the rotated layers, rotation.csv, rotation.json and rotation/index.html.")
    p.add_argument("--model", required=True, help=MODELS_HELP)
    p.add_argument("--weights", help="a state dict (.pt/.pth) or .safetensors file to load into the model")
    p.add_argument("--data", default="synthetic", help="a Broden-format folder or a data set name (default: "
                                                       "synthetic)")
    p.add_argument("--layers", nargs="+", required=True, help="layer names (see `netdissect layers MODEL`)")
    p.add_argument("--alphas", nargs="+", type=float, default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                   help="fractions of the rotation (default: 0 0.2 0.4 0.6 0.8 1)")
    p.add_argument("--seeds", type=int, default=1, help="random rotations to draw (seeds 1..N; default 1)")
    p.add_argument("--method", choices=("expm", "eigen-angle"), default="expm",
                   help="expm: R(alpha) = expm(alpha logm Q) (default); eigen-angle: the original code's "
                        "construction (angle magnitudes per Schur plane)")
    p.add_argument("--unpermute", action="store_true",
                   help="relabel rotated units by the greedy permutation of R(1), as the original scripts "
                        "(counts unchanged)")
    p.add_argument("--out", required=True, type=Path, help="run directory for the results")
    add_run_options(p)
    p.set_defaults(func=run_rotation)


def run_rotation(args) -> int:
    """``netdissect experiment rotation``: run, print the counts per alpha, write the page."""
    from ..engine.plan import check_run_dir, hold_run_dir
    from ..experiments.rotation import rotation
    from ..models import load_model
    from .common import print_table

    loaded = load_model(args.model, weights=args.weights, input_size=args.input_size)
    check_run_dir(args.out)
    with hold_run_dir(args.out, wait=args.wait):
        result = rotation(loaded, args.data, layers=args.layers, alphas=args.alphas, seeds=args.seeds,
                          method=args.method, unpermute=args.unpermute, out=args.out,
                          progress=not args.no_progress, page=not args.no_report, **_options(args))
    for convention in ("per-category", "top-label"):
        print(f"Unique detectors ({convention}; mean over {len(result.params['seeds'])} rotation(s)):")
        print_table(result.summary(convention), floatfmt="{:.2f}")
        print()
    print(f"Results: {result.run_dir} (rotation.csv, rotation.json)")
    if not args.no_report:
        print(f"Page: {result.run_dir / 'rotation' / 'index.html'}")
    return 0
