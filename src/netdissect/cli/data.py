"""`netdissect data ...`: concept data tools."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="concept data tools (synthetic data, ...)",
                       description="Create, convert and check concept data sets.")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data_sub.required = True

    s = data_sub.add_parser("synthetic", help="write the synthetic concept data set in Broden format",
                            description="Generate the deterministic synthetic concept data set and write it as a "
                                        "Broden-format folder that any Broden tool can read.")
    s.add_argument("out", type=Path, help="folder to create")
    s.add_argument("--n", type=int, default=1000, help="number of images (default 1000)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=224, help="image side; labels are half that (default 224)")
    s.add_argument("--format", choices=["jpg", "png"], default="jpg", help="image file format")
    s.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    s.set_defaults(func=run_synthetic)


def run_synthetic(args) -> int:
    from ..data.broden import write_broden
    from ..data.synthetic import SyntheticConcepts

    ds = SyntheticConcepts(n=args.n, seed=args.seed, size=args.size)
    out = write_broden(ds, args.out, image_format=args.format, overwrite=args.overwrite, progress=True)
    print(f"wrote {len(ds)} images with {len(ds.concepts)} concepts to {out}")
    return 0
