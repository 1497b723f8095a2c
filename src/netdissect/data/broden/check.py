"""Inspecting and checking Broden-format folders: :func:`data_info` and :func:`check_broden`.

``netdissect data info DIR`` prints what a data set holds (images, splits,
concepts per category, how many images and what share of pixels each
category labels); ``netdissect data check DIR`` reads every file and reports
every problem it finds, one precise line each.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ...errors import DatasetError
from ..imageio import read_label_png
from .read import CAT_COUNT, BrodenDataset, read_csv

# ---------------------------------------------------------------------------
# info


@dataclass
class CategoryInfo:
    """One category: its concepts, and how much of the data set it labels.

    ``images``: images whose index.csv cell for it is not empty.
    ``pixel_coverage``: share of all label pixels carrying at least one
    concept whose primary category it is (image-level labels cover their
    whole image); measured only with ``scan=True``, else None.
    ``top``: (name, images, coverage in whole images) of its most frequent
    concepts, from the recorded ``c_<category>.csv`` (or measured when scanned).
    """

    name: str
    concepts: int
    present: int
    images: int
    pixel_coverage: float | None = None
    top: list[tuple[str, int, float]] = field(default_factory=list)


@dataclass
class DataInfo:
    """What :func:`data_info` found in a Broden folder.

    Attributes
    ----------
    root : pathlib.Path
        The folder.
    images : int
        Images listed in ``index.csv``.
    splits : dict of str to int
        Images per split.
    image_size, label_size : tuple of int
        (H, W) of the images and of the label maps.
    categories : list of CategoryInfo
        One entry per category, in ``category.csv`` order.
    scanned : bool
        Whether every label file was read (pixel coverage measured).
    notes : list of str
        Facts worth knowing that are not problems.
    """

    root: Path
    images: int
    splits: dict[str, int]
    image_size: tuple[int, int]
    label_size: tuple[int, int]
    categories: list[CategoryInfo]
    scanned: bool
    #: facts worth knowing that are not problems (e.g. ignored index.csv columns)
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        """The summary as the lines ``netdissect data info`` prints."""
        splits = ", ".join(f"{k}: {v}" for k, v in self.splits.items())
        lines = [
            f"{self.root}",
            f"images: {self.images} ({splits}); "
            f"image size {self.image_size[0]}x{self.image_size[1]}, "
            f"label size {self.label_size[0]}x{self.label_size[1]}",
            f"concepts: {sum(c.concepts for c in self.categories)} in {len(self.categories)} categories",
            "",
        ]
        cov_head = "pixel coverage" if self.scanned else "pixel coverage (--scan)"
        head = (f"{'category':12s} {'concepts':>8s} {'present':>8s} {'images':>8s} {cov_head:>24s}  "
                "most frequent (images)")
        lines.append(head)
        for c in self.categories:
            cov = f"{100 * c.pixel_coverage:.1f}%" if c.pixel_coverage is not None else "-"
            top = ", ".join(f"{n} ({k})" for n, k, _ in c.top)
            lines.append(f"{c.name:12s} {c.concepts:8d} {c.present:8d} {c.images:8d} {cov:>24s}  {top}")
        if self.notes:
            lines.append("")
            lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _recorded_stats(ds: BrodenDataset) -> dict[str, dict[int, tuple[int, float]]]:
    """Per category, {label number: (frequency, coverage)} from c_<category>.csv (empty when absent)."""
    out: dict[str, dict[int, tuple[int, float]]] = {}
    for cat in ds.concepts.categories:
        path = ds.root / f"c_{cat}.csv"
        stats: dict[int, tuple[int, float]] = {}
        if path.is_file():
            _, rows = read_csv(path, ["number"])
            for _, row in rows:
                try:
                    stats[int(row["number"])] = (int(float(row.get("frequency") or 0)), float(row.get("coverage") or 0))
                except ValueError:
                    continue
        out[cat] = stats
    return out


def data_info(root: "str | os.PathLike[str]", *, scan: bool = False, top: int = 5, workers: int = 4,
              progress: bool = False) -> DataInfo:
    """Summarise a Broden folder.

    Without ``scan`` only the CSV files are read (instant even for all of
    Broden); with ``scan`` every label file is read to measure each
    category's pixel coverage and each concept's image count.

    Parameters
    ----------
    root : str or os.PathLike
        The Broden folder.
    scan : bool
        Read every label file (pixel coverage, measured concept counts).
    top : int
        Most frequent concepts listed per category.
    workers : int
        Threads reading label files when scanning.
    progress : bool
        Show a progress bar while scanning.

    Returns
    -------
    DataInfo
        The summary; :meth:`DataInfo.format` renders it.

    Raises
    ------
    DatasetError
        When the folder does not open as a Broden data set.
    """
    ds = BrodenDataset(root)
    cats = list(ds.concepts.categories)
    splits = Counter(ds.split_name(i) for i in range(len(ds)))
    images_with = Counter()
    for i in range(len(ds)):
        for cat, entries in ds.entries(i).items():
            if any(e != 0 for e in entries):  # an image-level 0 is "no label"
                images_with[cat] += 1
    members = {c: [k for k in ds.concepts if k.category == c] for c in cats}
    infos = []
    if not scan:
        recorded = _recorded_stats(ds)
        for cat in cats:
            stats = recorded.get(cat, {})
            freq = {k.number: stats.get(k.number, (0, 0.0)) for k in members[cat]}
            order = sorted(members[cat], key=lambda k: (-freq[k.number][0], k.number))
            infos.append(CategoryInfo(
                cat, len(members[cat]), sum(1 for k in members[cat] if freq[k.number][0] > 0), images_with[cat],
                None, [(k.name, freq[k.number][0], freq[k.number][1]) for k in order[:top]],
            ))
    else:
        cat_of = ds.concepts.category_index()
        ncat = len(cats)
        npix = ds.label_size[0] * ds.label_size[1]

        def measure(i):
            s = ds.load_labels(i)
            image_level = {int(v) for v in s.image_labels if v}
            covered = np.zeros(ncat, dtype=np.int64)
            cover = {v: 1.0 for v in image_level}
            if s.pixel_labels.size:
                per_cat = cat_of[s.pixel_labels]
                for g in range(ncat):
                    covered[g] = int((per_cat == g).any(axis=0).sum())
                for v in np.unique(s.pixel_labels):
                    v = int(v)
                    if v and v not in cover:
                        cover[v] = float((s.pixel_labels == v).any(axis=0).sum()) / npix
            for v in image_level:
                covered[cat_of[v]] = npix
            return covered, cover

        covered_total = np.zeros(ncat, dtype=np.int64)
        freq: Counter = Counter()
        coverage: Counter = Counter()
        it = _map(measure, range(len(ds)), workers, progress, "scanning")
        for covered, cover in it:
            covered_total += covered
            for v, c in cover.items():
                freq[v] += 1
                coverage[v] += c
        for g, cat in enumerate(cats):
            order = sorted(members[cat], key=lambda k: (-freq[k.number], k.number))
            infos.append(CategoryInfo(
                cat, len(members[cat]), sum(1 for k in members[cat] if freq[k.number] > 0), images_with[cat],
                float(covered_total[g]) / (npix * len(ds)),
                [(k.name, freq[k.number], coverage[k.number]) for k in order[:top]],
            ))
    return DataInfo(ds.root, len(ds), dict(splits), ds.image_size, ds.label_size, infos, scan, list(ds.notes))


def _map(fn, items, workers: int, progress: bool, desc: str):
    items = list(items)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=desc, unit="img")
    try:
        if workers and workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                for out in pool.map(fn, items):
                    if bar is not None:
                        bar.update(1)
                    yield out
        else:
            for item in items:
                out = fn(item)
                if bar is not None:
                    bar.update(1)
                yield out
    finally:
        if bar is not None:
            bar.close()


# ---------------------------------------------------------------------------
# check


@dataclass(frozen=True)
class Problem:
    """One problem found by :func:`check_broden`: a kind and a message naming the file and what is wrong."""

    kind: str  # structure, categories, image, labels, codes, category
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


def _listed_categories(ds: BrodenDataset) -> tuple[dict[int, set[str]], list[Problem]]:
    """Per label number, the categories that label.csv or a c_ file lists it in; plus consistency problems."""
    problems: list[Problem] = []
    path = ds.root / "label.csv"
    _, rows = read_csv(path, ["number", "name", "category"])
    in_label_csv: dict[int, set[str]] = {}
    line_of: dict[int, int] = {}
    for line, row in rows:
        try:
            n = int(row["number"])
        except ValueError:
            continue
        if n == 0:
            continue
        cats = set()
        for part in filter(None, (p.strip() for p in row["category"].split(";"))):
            m = CAT_COUNT.match(part)
            if m:
                cats.add(m.group(1).strip())
        unknown = sorted(cats - set(ds.concepts.categories))
        if unknown:
            problems.append(Problem("categories", f"{path} line {line}: label {n} ({row['name']!r}) lists "
                                                  f"categor{'y' if len(unknown) == 1 else 'ies'} "
                                                  f"{', '.join(unknown)} that category.csv does not have"))
        in_label_csv[n] = cats
        line_of[n] = line
    listed = {n: set(c) for n, c in in_label_csv.items()}
    count_path = ds.root / "category.csv"
    _, crow = read_csv(count_path, ["name"])
    counts = {row["name"].strip(): (line, row.get("count", "").strip()) for line, row in crow}
    for cat in ds.concepts.categories:
        cpath = ds.root / f"c_{cat}.csv"
        if not cpath.is_file():
            continue
        _, rows = read_csv(cpath, ["number"])
        numbers = []
        for line, row in rows:
            try:
                n = int(row["number"])
            except ValueError:
                continue
            if n == 0:
                continue
            numbers.append(n)
            listed.setdefault(n, set()).add(cat)
            if n in in_label_csv and cat not in in_label_csv[n]:
                problems.append(Problem("categories", f"{cpath} line {line} lists label {n} "
                                                      f"({ds.concepts.names()[n]!r}), but label.csv line {line_of[n]} "
                                                      f"does not list category {cat!r} for it"))
        for n, cats in in_label_csv.items():
            if cat in cats and n not in numbers:
                problems.append(Problem("categories", f"label.csv line {line_of[n]} lists label {n} "
                                                      f"({ds.concepts.names()[n]!r}) under {cat!r}, but {cpath.name} "
                                                      f"does not list it"))
        line, count = counts.get(cat, (None, ""))
        if count.isdigit() and int(count) != len(numbers):
            problems.append(Problem("categories", f"{count_path} line {line}: category {cat!r} has count {count} "
                                                  f"but {cpath.name} lists {len(numbers)} labels"))
    for c in ds.concepts:
        if c.category not in listed.get(c.number, set()):
            problems.append(Problem("category", f"label {c.number} ({c.name!r}): its primary category {c.category!r} "
                                                f"is not among those label.csv lists for it"))
    return listed, problems


def _check_row(ds: BrodenDataset, i: int, known: np.ndarray, listed: dict[int, set[str]]):
    """Problems of one index.csv row, and (label, column) -> count of labels found outside their categories."""
    problems: list[Problem] = []
    misplaced: dict[tuple[int, str], tuple[int, str]] = {}
    line = ds.index_line(i)
    where = f"index.csv line {line}"
    image = ds.image_path(i)
    try:
        with Image.open(image) as im:
            im.load()
            w, h = im.size
        if (h, w) != tuple(ds.image_size):
            problems.append(Problem("image", f"image {image} ({where}) is {h}x{w} (HxW) but index.csv says "
                                             f"ih x iw = {ds.image_size[0]}x{ds.image_size[1]}"))
    except FileNotFoundError:
        problems.append(Problem("image", f"image {image} ({where}) does not exist"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        problems.append(Problem("image", f"image {image} ({where}) cannot be read: {e}"))
    top = len(known) - 1
    for cat, entries in ds.entries(i).items():
        for entry in entries:
            if isinstance(entry, int):
                if entry == 0:
                    continue  # "no label", as dissect reads it (the real Broden has such cells)
                if entry >= top or not known[entry]:
                    problems.append(Problem("codes", f"{where}, column {cat!r}: image-level label {entry} is not in "
                                                     f"label.csv"))
                elif cat not in listed.get(entry, set()):
                    misplaced.setdefault((entry, cat), (line, str(entry)))
                continue
            path = ds.root / "images" / entry
            try:
                labels = read_label_png(path, ds.label_size)
            except DatasetError as e:
                problems.append(Problem("labels", f"{e} ({where}, column {cat!r})"))
                continue
            codes = np.unique(labels)
            codes = codes[codes != 0]
            bad = [int(v) for v in codes if v >= top or not known[v]]
            if bad:
                problems.append(Problem("codes", f"label PNG {path} ({where}, column {cat!r}) holds label code(s) "
                                                 f"{', '.join(map(str, bad[:10]))}{', ...' if len(bad) > 10 else ''} "
                                                 f"not in label.csv"))
            for v in codes:
                v = int(v)
                if v < top and known[v] and cat not in listed.get(v, set()):
                    misplaced.setdefault((v, cat), (line, entry))
    return problems, misplaced


def check_broden(root: "str | os.PathLike[str]", *, workers: int = 4, progress: bool = False) -> list[Problem]:
    """Check a Broden folder thoroughly; returns every problem found (empty: all good).

    Checks: the CSV files parse and agree (columns of index.csv, label
    numbers, categories of label.csv, the c_<category>.csv files and
    category.csv counts); every image and label PNG exists and decodes;
    images are ih x iw and label maps sh x sw; every label code is in
    label.csv; every label is found only in the columns of categories
    label.csv lists for it, and every concept is listed in its primary
    category; index.csv columns of categories that category.csv does not
    list (ignored, see :class:`BrodenDataset`) are empty; no image is listed
    twice (a structural error, as for :class:`BrodenDataset`).  An image-level
    ``0`` is "no label", not an unknown label.  A structural error that
    stops the folder from opening at all is returned alone.  Notes that are
    not problems are in ``BrodenDataset(root).notes``.

    Parameters
    ----------
    root : str or os.PathLike
        The Broden folder.
    workers : int
        Threads checking the images (rows of ``index.csv``).
    progress : bool
        Show a progress bar.

    Returns
    -------
    list of Problem
        Every problem found, in order.
    """
    try:
        ds = BrodenDataset(root)
    except DatasetError as e:
        return [Problem("structure", str(e))]
    listed, problems = _listed_categories(ds)
    for column, lines in ds.ignored_entries.items():
        problems.append(Problem("categories", f"{ds.root / 'index.csv'}: column {column!r} holds entries in "
                                              f"{len(lines)} row(s) (first: line {lines[0]}), but category.csv does "
                                              f"not list category {column!r}: they are ignored"))
    known = np.zeros(ds.concepts.max_number + 2, dtype=bool)
    known[0] = True
    known[ds.concepts.numbers()] = True
    misplaced: dict[tuple[int, str], list] = {}
    for row_problems, row_misplaced in _map(lambda i: _check_row(ds, i, known, listed), range(len(ds)),
                                            workers, progress, "checking"):
        problems.extend(row_problems)
        for key, first in row_misplaced.items():
            entry = misplaced.setdefault(key, [0, first])
            entry[0] += 1
    names = ds.concepts.names()
    for (v, cat), (count, (line, file)) in sorted(misplaced.items()):
        where = sorted(listed.get(v, set())) or ["no category"]
        problems.append(Problem("category", f"label {v} ({names[v]!r}) appears in column {cat!r} of {count} "
                                            f"image(s) (first: index.csv line {line}, {file}), but label.csv lists it "
                                            f"only under {', '.join(where)}"))
    return problems


__all__ = ["CategoryInfo", "DataInfo", "Problem", "check_broden", "data_info"]
