"""`netdissect data ...`: concept data tools.

Usage::

    netdissect data synthetic OUT [--n 1000]
    netdissect data download broden1_224 [--dest DIR] [--url MIRROR] [--sha256 HEX]
    netdissect data convert segmentation SRC OUT --classes classes.txt [--category object]
    netdissect data convert ade20k SRC OUT
    netdissect data convert folders SRC OUT [--category texture|scene]
    netdissect data convert merge SRC [SRC ...] OUT
    netdissect data info DIR [--scan]
    netdissect data check DIR
"""

from __future__ import annotations

import sys
from pathlib import Path


def add_parser(sub) -> None:
    """Add the ``data`` command and its sub-commands to ``sub`` (an argparse sub-parsers object)."""
    p = sub.add_parser("data", help="concept data tools (download, convert, merge, check, ...)",
                       description="Download, create, convert, merge, inspect and check concept data sets "
                                   "in Broden format.")
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

    _add_download(data_sub)
    _add_convert(data_sub)

    i = data_sub.add_parser("info", help="summarise a Broden folder",
                            description="Images, splits, concepts per category, images per category and (with "
                                        "--scan) the share of pixels each category labels.")
    i.add_argument("dir", help="a Broden folder (or a data spec such as broden1_224)")
    i.add_argument("--scan", action="store_true",
                   help="read every label file to measure pixel coverage and image counts (else: recorded stats)")
    i.add_argument("--top", type=int, default=5, help="most frequent concepts shown per category (default 5)")
    i.add_argument("--workers", type=int, default=4, help="reader threads for --scan (default 4)")
    i.set_defaults(func=run_info)

    c = data_sub.add_parser("check", help="check every file of a Broden folder",
                            description="Read every file of a Broden folder and report each problem on its own "
                                        "line: missing or unreadable files, wrong sizes, unknown label codes, "
                                        "labels outside their categories, inconsistent CSV files. Exits with "
                                        "status 1 when a problem is found.")
    c.add_argument("dir", help="a Broden folder (or a data spec such as broden1_224)")
    c.add_argument("--workers", type=int, default=4, help="reader threads (default 4)")
    c.add_argument("--max-problems", type=int, default=200,
                   help="print at most this many problems (all are counted; default 200)")
    c.set_defaults(func=run_check)


def _add_download(data_sub) -> None:
    from ..data.download import DATA_ENV, KNOWN_DATASETS

    d = data_sub.add_parser(
        "download", help="download and extract a concept data set (Broden)",
        description="Download a concept data set into the data root (the --dest folder, else $" + DATA_ENV +
                    ", else ~/.cache/netdissect/data), resuming an interrupted transfer, verifying its checksum "
                    "when known, and extracting it safely. Known: " +
                    "; ".join(f"{k}: {v.description}" for k, v in KNOWN_DATASETS.items()) + ".")
    d.add_argument("name", nargs="?", help=f"data set name ({', '.join(KNOWN_DATASETS)}), or any folder name "
                                           f"with --url")
    d.add_argument("--url", help="download from this URL instead (a mirror, or any zip of a Broden folder)")
    d.add_argument("--dest", type=Path, help="data root to put the folder in")
    d.add_argument("--sha256", help="expected SHA-256 of the zip (checked in addition to any known checksum)")
    d.add_argument("--keep-zip", action="store_true", help="keep the zip after extracting it")
    d.add_argument("--retries", type=int, default=3, help="automatic resumes of an interrupted transfer (default 3)")
    d.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")
    d.add_argument("--list", action="store_true", help="list the known data sets and where they are")
    d.set_defaults(func=run_download)


def _common_convert_args(p, size: bool = True) -> None:
    if size:
        p.add_argument("--size", type=int, default=224,
                       help="image side in pixels, any size from 2 (Broden's are 224 and 227); labels are half "
                            "of it, rounded down (default 224)")
        p.add_argument("--fit", choices=["stretch", "crop"], default="stretch",
                       help="stretch: resize the whole image to a square, no cropping (default); "
                            "crop: keep the centred square")
        p.add_argument("--no-color", dest="colors", action="store_false",
                       help="do not add the pixel-level colour category")
    p.add_argument("--format", choices=["jpg", "png"], default="jpg", help="image file format (default jpg)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    p.add_argument("--workers", type=int, default=0, help="loader processes (default 0: in this process)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def _add_convert(data_sub) -> None:
    from ..data.convert import DEFAULT_IGNORE

    c = data_sub.add_parser(
        "convert", help="convert labelled data (segmentation, ADE20K, class folders) to Broden format, or merge",
        description="Convert a labelled data set into a Broden folder: images resized to --size, labels to half "
                    "of it by nearest neighbour, plus a pixel-level colour category. The output is written to "
                    "OUT.partial and renamed to OUT only when complete.")
    conv = c.add_subparsers(dest="convert_kind", metavar="KIND")
    conv.required = True

    s = conv.add_parser(
        "segmentation", help="image and label-map folders plus a class list (CamVid, VOC, ...)",
        description="SRC holds images/ and labels/ (or split subfolders each holding them: SRC/train/images, "
                    "SRC/train/labels, ...). Label maps hold class indices (grey or palette PNG); the class list "
                    "names them, one per line ('name', value = line position) or 'value name'.")
    s.add_argument("src", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--classes", type=Path, required=True, help="class list file")
    s.add_argument("--category", default="object", help="category of the classes (default object)")
    s.add_argument("--ignore", nargs="*", default=list(DEFAULT_IGNORE), metavar="NAME",
                   help=f"class names meaning 'no label' (default: {' '.join(DEFAULT_IGNORE)})")
    s.add_argument("--ignore-value", type=int, action="append", default=[], metavar="N",
                   help="a label value meaning 'no label' (e.g. 255); repeatable")
    s.add_argument("--images", default="images", help="name of the image folders (default images)")
    s.add_argument("--labels", default="labels", help="name of the label folders (default labels)")
    s.add_argument("--label-suffix", default="", help="label file stem suffix: img.jpg <-> img<SUFFIX>.png")
    _common_convert_args(s)
    s.set_defaults(func=run_convert)

    a = conv.add_parser(
        "ade20k", help="ADE20K in its own format (_seg.png, _parts_N.png, .json)",
        description="SRC is searched for *_seg.png with .jpg and .json beside each: objects from _seg.png "
                    "(class = R/10*256+G), parts from _parts_N.png, the scene from the JSON.")
    a.add_argument("src", type=Path)
    a.add_argument("out", type=Path)
    _common_convert_args(a)
    a.set_defaults(func=run_convert)

    f = conv.add_parser(
        "folders", help="one folder per class, as image-level texture or scene concepts (DTD, ...)",
        description="Every image in SRC/<class>/ carries the image-level concept <class> (scenes get the suffix "
                    "-s, as in Broden).")
    f.add_argument("src", type=Path)
    f.add_argument("out", type=Path)
    f.add_argument("--category", default="texture", help="category of the classes (texture, scene, ...; "
                                                         "default texture)")
    f.add_argument("--suffix", default=None, help="appended to each class name (default: -s for scene, else none)")
    f.add_argument("--split", default="train", help="split column value (default train)")
    _common_convert_args(f)
    f.set_defaults(func=run_convert)

    m = conv.add_parser(
        "merge", help="merge Broden folders into one data set with one label table",
        description="Concepts of the same name unify (the colour category appears once); labels are "
                    "renumbered. All sources need the same image size.")
    m.add_argument("sources", type=Path, nargs="+", metavar="SRC", help="Broden folders to merge")
    m.add_argument("out", type=Path, metavar="OUT", help="the output folder")
    _common_convert_args(m, size=False)
    m.set_defaults(func=run_convert)


def run_synthetic(args) -> int:
    """``netdissect data synthetic``: write the synthetic data set as a Broden folder; returns 0."""
    from ..data.broden import write_broden
    from ..data.synthetic import SyntheticConcepts

    ds = SyntheticConcepts(n=args.n, seed=args.seed, size=args.size)
    out = write_broden(ds, args.out, image_format=args.format, overwrite=args.overwrite, progress=True)
    print(f"wrote {len(ds)} images with {len(ds.concepts)} concepts to {out}")
    return 0


def run_download(args) -> int:
    """``netdissect data download``: list the known data sets, or download one; returns 0.

    Raises
    ------
    ConfigError
        When neither a name nor ``--list`` is given.
    """
    from ..data.download import KNOWN_DATASETS, data_root, download_dataset, is_complete
    from ..errors import ConfigError

    root = args.dest.expanduser() if args.dest else data_root()
    if args.list:
        for name, known in KNOWN_DATASETS.items():
            where = root / name
            state = "downloaded" if is_complete(where) else "not downloaded"
            print(f"{name:14s} {state:15s} {where}\n  {known.description}\n  {known.url}")
        return 0
    if not args.name:
        raise ConfigError("give a data set name (e.g. broden1_224), or --list")
    folder = download_dataset(args.name, root, url=args.url, sha256=args.sha256, keep_zip=args.keep_zip,
                              retries=args.retries, timeout=args.timeout, progress=True)
    print(f"{args.name}: {folder}")
    print(f"use it with --data {args.name}" + (f":root={root}" if args.dest else "") + f" or --data {folder}")
    return 0


def run_convert(args) -> int:
    """``netdissect data convert``: convert or merge sources into a Broden folder and summarise it; returns 0."""
    from ..data import convert
    from ..data.broden import BrodenDataset

    common = dict(image_format=args.format, quality=args.quality, workers=args.workers, progress=True,
                  overwrite=args.overwrite)
    kind = args.convert_kind
    if kind == "merge":
        out = convert.merge_broden(args.sources, args.out, **common)
    else:
        geometry = dict(size=args.size, fit=args.fit, colors=args.colors)
        if kind == "segmentation":
            out = convert.convert_segmentation(
                args.src, args.out, classes=args.classes, category=args.category, ignore=args.ignore,
                ignore_values=args.ignore_value, images=args.images, labels=args.labels,
                label_suffix=args.label_suffix, **geometry, **common)
        elif kind == "ade20k":
            out = convert.convert_ade20k(args.src, args.out, **geometry, **common)
        else:
            out = convert.convert_folders(args.src, args.out, category=args.category, suffix=args.suffix,
                                          split=args.split, **geometry, **common)
    ds = BrodenDataset(out)
    per_cat = {c: sum(1 for k in ds.concepts if k.category == c) for c in ds.concepts.categories}
    print(f"wrote {len(ds)} images, {len(ds.concepts)} concepts "
          f"({', '.join(f'{c}: {n}' for c, n in per_cat.items())}) to {out}")
    return 0


def _folder(spec: str) -> Path:
    from ..data import open_dataset

    p = Path(spec).expanduser()
    if p.is_dir():
        return p
    ds = open_dataset(spec)  # a registered name such as broden1_224
    root = getattr(ds, "root", None)
    if root is None:
        from ..errors import DatasetError

        raise DatasetError(f"{spec!r} is not a Broden folder")
    return Path(root)


def run_info(args) -> int:
    """``netdissect data info``: print :func:`~netdissect.data.broden.data_info` of a folder; returns 0."""
    from ..data.broden import data_info

    info = data_info(_folder(args.dir), scan=args.scan, top=args.top, workers=args.workers, progress=args.scan)
    print(info.format())
    return 0


def run_check(args) -> int:
    """``netdissect data check``: print every problem of a Broden folder.

    Returns
    -------
    int
        0 when the folder has no problem, else 1 (the count per kind goes to
        stderr).
    """
    from ..data.broden import BrodenDataset, check_broden
    from ..errors import DatasetError

    root = _folder(args.dir)
    problems = check_broden(root, workers=args.workers, progress=sys.stderr.isatty())
    try:
        notes = BrodenDataset(root).notes
    except DatasetError:
        notes = []  # it does not open: check_broden reported why
    for note in notes:
        print(f"note: {note}")
    for p in problems[: max(args.max_problems, 0)]:
        print(p)
    if len(problems) > args.max_problems:
        print(f"... and {len(problems) - args.max_problems} more")
    if problems:
        kinds = {}
        for p in problems:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        print(f"{root}: {len(problems)} problem(s) ({', '.join(f'{k}: {n}' for k, n in kinds.items())})",
              file=sys.stderr)
        return 1
    print(f"{root}: OK")
    return 0
