"""`netdissect report RUN_DIR`: write the HTML report of a finished run."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="write the HTML report of a finished run (RUN_DIR/report/index.html)",
        description="Write a self-contained HTML report of a finished dissection: an overview of every layer, "
                    "a unit gallery per layer with each unit's top images and region, and a concept index. "
                    "It opens from the file system, with no network.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run directory (with summary.json)")
    p.add_argument("--out", type=Path, help="report folder (default: RUN_DIR/report; replaced when it exists)")
    p.add_argument("--no-images", action="store_true",
                   help="skip the image strips (the data set is not opened)")
    p.add_argument("--thumb", type=int, default=96, help="thumbnail height in pixels (default 96)")
    p.add_argument("--columns", type=int, default=5, help="thumbnails per row of a unit's strip (default 5)")
    p.add_argument("--quality", type=int, default=75, help="JPEG quality of the strips, 1-95 (default 75)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_report)


def run_report(args) -> int:
    from ..report import write_report

    index = write_report(args.run_dir, out=args.out, images=not args.no_images, thumb=args.thumb,
                         columns=args.columns, quality=args.quality, progress=not args.no_progress)
    print(f"Report: {index}")
    print(f"Open it in a browser: {index.resolve().as_uri()}")
    return 0
