"""`netdissect compare RUN...`: several dissections side by side (METHODS A3, A4)."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    """Register ``compare`` on the sub-command parser ``sub``."""
    p = sub.add_parser("compare", help="compare dissection runs: unique detectors, IoU, concepts gained and lost",
                       description="Unique detectors per category under both counting conventions, detector "
                                   "share, best-IoU distributions, and the concepts each run gains or loses "
                                   "against the one before; one HTML page with plots and CSV tables.")
    p.add_argument("runs", nargs="+", type=Path, help="run directories, in order")
    p.add_argument("--names", nargs="+", help="a name per run (default: the folder names)")
    p.add_argument("--out", type=Path, default=Path("comparison"), help="output folder (default: comparison)")
    p.set_defaults(func=run_compare)


def run_compare(args) -> int:
    """``netdissect compare``: print the tables and write the page."""
    from ..experiments.compare import compare
    from .common import print_table

    result = compare(args.runs, names=args.names, out=args.out)
    t = result.unique
    for convention in ("per-category", "top-label"):
        wide = t[t["convention"] == convention].pivot_table(index=["run", "layer"], columns="category",
                                                            values="unique", sort=False).reset_index()
        wide.columns.name = None
        wide["total"] = wide.drop(columns=["run", "layer"]).sum(axis=1)
        print(f"Unique detectors ({convention}):")
        print_table(wide, floatfmt="{:.0f}")
        print()
    print("Detectors:")
    print_table(result.detectors)
    print()
    ch = result.changes
    if not ch.empty:
        counts = ch.groupby(["before", "after", "layer", "convention", "change"], sort=False).size()
        print("Concepts gained / lost:")
        print_table(counts.rename("concepts").reset_index())
        print()
    print(f"Page: {args.out / 'index.html'}")
    return 0
