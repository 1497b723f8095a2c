"""`netdissect report RUN_DIR`: write the HTML report of a finished run."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    """Register ``report`` on the sub-command parser ``sub``."""
    p = sub.add_parser(
        "report", help="write the HTML report of a finished run (RUN_DIR/report/index.html)",
        description="Write a self-contained HTML report of a finished dissection: an overview of every layer, "
                    "a unit gallery per layer with each unit's top images and region, and a concept index. "
                    "It opens from the file system, with no network.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run directory (with summary.json)")
    p.add_argument("--out", type=Path, help="report folder (default: RUN_DIR/report; replaced when it exists)")
    p.add_argument("--no-images", action="store_true",
                   help="skip the image strips (the data set is not opened)")
    p.add_argument("--data", metavar="DIR",
                   help="take the images from this Broden folder or data spec instead of the one in the run's "
                        "config.json (e.g. when the data folder has moved); for a run with --segmenter, the "
                        "folder of its photos")
    p.add_argument("--thumb", type=int, default=96, help="thumbnail height in pixels (default 96)")
    p.add_argument("--columns", type=int, default=5, help="thumbnails per row of a unit's strip (default 5)")
    p.add_argument("--quality", type=int, default=75, help="JPEG quality of the strips, 1-95 (default 75)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--wait", action="store_true",
                   help="when another process is writing into RUN_DIR, wait for it to finish (default: stop at once, "
                        "naming that process)")
    p.set_defaults(func=run_report)


def run_report(args) -> int:
    """``netdissect report RUN_DIR``: (re)write the HTML report of a finished run."""
    from ..report import write_report

    # When the run's data cannot be opened the report is written without images and the
    # reason is logged as a warning (stderr); --data points at where the data is now.
    dataset = _open_data(args.run_dir, args.data, args.no_images) if args.data is not None else None
    index = write_report(args.run_dir, out=args.out, dataset=dataset, images=not args.no_images, thumb=args.thumb,
                         columns=args.columns, quality=args.quality, progress=not args.no_progress, wait=args.wait)
    print(f"Report: {index}")
    print(f"Open it in a browser: {index.resolve().as_uri()}")
    return 0


def _open_data(run_dir: Path, data: str, no_images: bool):
    """The data set named by ``--data``, opened as the run's own source kind would open it."""
    import json

    from ..errors import ConfigError

    if no_images:
        raise ConfigError("--data and --no-images exclude each other: --data says where to take the images from")
    try:
        config = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    info = config.get("source") if isinstance(config, dict) else None
    kind = info.get("kind", "concepts") if isinstance(info, dict) else "concepts"
    if kind == "concepts":
        from ..data import open_dataset

        return open_dataset(data)
    if kind == "segmented":
        from ..engine.sources import open_source

        return open_source({**info, "data": data})
    raise ConfigError(f"--data does not apply to this run: its images come from a {kind} source, not a data folder")
