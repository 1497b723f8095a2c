"""The Broden data format: :class:`BrodenDataset` reads it, :func:`write_broden` writes it.

A Broden folder (Bau et al. 2017) holds::

    index.csv      image,split,ih,iw,sh,sw,<one column per category>
    label.csv      number,name,category,frequency,coverage,syns
    category.csv   name,first,last,count,frequency
    c_<cat>.csv    code,number,name,frequency,coverage   (dense recoding per category)
    images/        the images and label PNGs that index.csv names

Category cells in ``index.csv`` hold ``;``-separated entries: a decimal number
is an image-level label; a file name is a label PNG under ``images/`` whose
pixels hold label ``R + 256 * G`` (0 = no label).  Several PNGs in one cell
are separate label layers.  ``label.csv``'s ``category`` cell lists
``name(count)`` pairs such as ``material(36);object(3)``.

Statistics follow the original release (``joinseg.py`` and the published
files): ``frequency`` is the number of images a label appears in (per
category in ``c_<cat>.csv`` and in ``label.csv``'s ``category`` cell);
``coverage`` is the *sum* over those images of the fraction of the image the
label covers ("coverage in units of whole images": 289 images of ``red-c``
cover 9.14 images' worth of pixels); an image-level label covers its whole
image (1.0).  ``category.csv`` ``frequency`` is the sum of its labels'
frequencies.  Label 0 (``-``, no label) gets no row in ``label.csv`` or the
``c_`` files, as in the original files; the original readers fill it in, and
:class:`BrodenDataset` skips a 0 row if one is present.

A label's **primary category**, the only one it is scored in, is the
category where its ``c_<cat>.csv`` coverage is largest (ties go to the
category listed first in ``category.csv``; the original code broke ties
toward the last).  Without ``c_`` files the counts in ``label.csv``'s
``category`` cell decide instead.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, DatasetError
from .imageio import MAX_LABEL, read_label_png, read_rgb, write_label_png, write_rgb
from .protocol import Concept, ConceptDataset, ConceptTable, Sample

INDEX_META = ("image", "split", "ih", "iw", "sh", "sw")
REQUIRED_FILES = ("index.csv", "label.csv", "category.csv")
_INT = re.compile(r"^\d+$")
_CAT_COUNT = re.compile(r"^([^()]*)\((\d+)\)$")
_FORMAT_HINT = (
    "a Broden folder holds index.csv, label.csv, category.csv, c_<category>.csv and images/"
)


# ---------------------------------------------------------------------------
# CSV helpers


def _read_csv(path: Path, required: Sequence[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Rows of a CSV file as (line number, {column: value}); checks the columns.

    Raises DatasetError naming the file for an unreadable file, a missing
    column, or a row with the wrong number of fields.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} cannot be read: {e}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError(f"{path} is empty; it needs a header row with columns {', '.join(required)}") from None
    except csv.Error as e:
        raise DatasetError(f"{path}: malformed CSV: {e}") from None
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(
            f"{path} lacks column(s) {', '.join(missing)}; its header is {','.join(header)} "
            f"and must include {','.join(required)}"
        )
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DatasetError(f"{path} has duplicate column(s) {', '.join(dupes)}")
    rows = []
    try:
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if len(fields) != len(header):
                raise DatasetError(
                    f"{path} line {reader.line_num} has {len(fields)} fields but the header has {len(header)}"
                )
            rows.append((reader.line_num, dict(zip(header, fields))))
    except csv.Error as e:
        raise DatasetError(f"{path} line {reader.line_num}: malformed CSV: {e}") from None
    return header, rows


def _int_field(path: Path, line: int, column: str, value: str, minimum: int = 0) -> int:
    value = value.strip()
    if not _INT.match(value) or int(value) < minimum:
        raise DatasetError(
            f"{path} line {line}: column {column!r} holds {value!r}; expected an integer >= {minimum}"
        )
    return int(value)


def _float_field(path: Path, line: int, column: str, value: str) -> float:
    try:
        out = float(value)
    except ValueError:
        raise DatasetError(f"{path} line {line}: column {column!r} holds {value!r}; expected a number") from None
    if not np.isfinite(out):
        raise DatasetError(f"{path} line {line}: column {column!r} holds {value!r}; expected a finite number")
    return out


# ---------------------------------------------------------------------------
# Reader


@dataclass(frozen=True)
class _Row:
    line: int  # line number in index.csv
    image: str
    split: str
    cells: tuple  # per category (category.csv order): tuple of int (image-level) or str (PNG path)


class BrodenDataset:
    """A concept data set stored in Broden format (see the module docstring).

    ``BrodenDataset(root, split=None)``: ``root`` is the folder; ``split``
    keeps only the rows of ``index.csv`` whose ``split`` column equals it.

    Opening reads the CSV files and checks their structure; image files and
    label PNGs are read (and their label codes checked) only when a sample is
    loaded, and their existence is checked by :meth:`fingerprint` and on
    access.

    Samples: image (ih, iw, 3) uint8 RGB; pixel_labels (L, sh, sw) int32, one
    layer per label PNG, categories in ``category.csv`` order; image_labels
    (M,) int64, the numeric entries of the category cells.
    """

    def __init__(self, root: "str | os.PathLike[str]", split: str | None = None):
        given = Path(root).expanduser()
        self.root = given.resolve()
        if not self.root.is_dir():
            what = "is a file, not a folder" if self.root.exists() else "does not exist"
            raise DatasetError(f"Broden folder {given} {what}; {_FORMAT_HINT}")
        missing = [f for f in REQUIRED_FILES if not (self.root / f).is_file()]
        if missing:
            hint = ""
            if self.root.name.endswith(".partial"):
                hint = " (the name ends in .partial: this looks like an unfinished write_broden output)"
            raise DatasetError(
                f"{given} is not in Broden format: missing {', '.join(missing)}{hint}; {_FORMAT_HINT}"
            )
        self.split = split
        categories = self._read_categories()
        self.concepts = self._read_concepts(categories)
        self._read_index(categories)
        max_number = self.concepts.max_number
        # known[n]: n is a label number of label.csv, or 0; the last entry
        # (max_number + 1) stands for every number above max_number.
        self._known = np.zeros(max_number + 2, dtype=bool)
        self._known[0] = True
        self._known[self.concepts.numbers()] = True
        self._fingerprint: str | None = None

    # -- opening ---------------------------------------------------------
    def _read_categories(self) -> list[str]:
        path = self.root / "category.csv"
        _, rows = _read_csv(path, ["name"])
        names: list[str] = []
        for line, row in rows:
            name = row["name"].strip()
            if not name:
                raise DatasetError(f"{path} line {line}: empty category name")
            if name in names:
                raise DatasetError(f"{path} line {line}: category {name!r} is listed twice")
            names.append(name)
        if not names:
            raise DatasetError(f"{path} lists no categories")
        return names

    def _read_concepts(self, categories: list[str]) -> ConceptTable:
        path = self.root / "label.csv"
        _, rows = _read_csv(path, ["number", "name", "category"])
        labels: dict[int, dict] = {}
        for line, row in rows:
            number = _int_field(path, line, "number", row["number"])
            if number == 0:
                continue  # "-": no label
            if number > MAX_LABEL:
                raise DatasetError(
                    f"{path} line {line}: label number {number} does not fit a label PNG (max {MAX_LABEL})"
                )
            if number in labels:
                raise DatasetError(f"{path} line {line}: label number {number} is listed twice")
            counts: dict[str, int] = {}
            for part in filter(None, (p.strip() for p in row["category"].split(";"))):
                m = _CAT_COUNT.match(part)
                if not m:
                    raise DatasetError(
                        f"{path} line {line}: category cell {row['category']!r} is malformed; "
                        f"expected name(count) pairs separated by ';', e.g. material(36);object(3)"
                    )
                counts[m.group(1).strip()] = counts.get(m.group(1).strip(), 0) + int(m.group(2))
            coverage = row.get("coverage", "").strip()
            total = _float_field(path, line, "coverage", coverage) if coverage else 0.0
            labels[number] = {"line": line, "name": row["name"], "counts": counts, "coverage": total}

        # Per-category coverage from the c_<category>.csv files.
        cfiles = {cat: self.root / f"c_{cat}.csv" for cat in categories}
        present = {cat: p for cat, p in cfiles.items() if p.is_file()}
        if present and len(present) < len(cfiles):
            absent = [p.name for cat, p in cfiles.items() if cat not in present]
            raise DatasetError(
                f"{self.root} has c_<category>.csv files for some categories but not {', '.join(absent)}; "
                f"every category in category.csv needs one (or none may have one)"
            )
        cat_coverage: dict[int, dict[str, float]] = {}
        for cat, cpath in present.items():
            _, crows = _read_csv(cpath, ["number", "coverage"])
            for line, row in crows:
                number = _int_field(cpath, line, "number", row["number"])
                if number == 0:
                    continue
                if number not in labels:
                    raise DatasetError(f"{cpath} line {line}: label number {number} is not in label.csv")
                cov = _float_field(cpath, line, "coverage", row["coverage"])
                cat_coverage.setdefault(number, {})[cat] = cov

        concepts = []
        for number, info in labels.items():
            covs = cat_coverage.get(number)
            if covs:
                coverage = {cat: covs[cat] for cat in categories if cat in covs}
                primary = max(coverage, key=lambda c: (coverage[c], -categories.index(c)))
            else:
                counts = {cat: info["counts"][cat] for cat in categories if cat in info["counts"]}
                if not counts:
                    raise DatasetError(
                        f"{path} line {info['line']}: label {number} ({info['name']!r}) has no category of "
                        f"category.csv ({', '.join(categories)}): its category cell is "
                        f"{';'.join(f'{k}({v})' for k, v in info['counts'].items()) or 'empty'!s}"
                        + (" and no c_<category>.csv lists it" if present else "")
                    )
                primary = max(counts, key=lambda c: (counts[c], -categories.index(c)))
                total = sum(counts.values())
                # No per-category coverage: share the total by image counts.
                coverage = {
                    c: (info["coverage"] * n / total if total else 0.0) for c, n in counts.items()
                }
            concepts.append(Concept(number, info["name"], primary, coverage))
        return ConceptTable(concepts, categories)

    def _read_index(self, categories: list[str]) -> None:
        path = self.root / "index.csv"
        header, rows = _read_csv(path, [])
        expected = list(INDEX_META) + categories
        missing = [c for c in expected if c not in header]
        extra = [c for c in header if c not in expected]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing column(s) {', '.join(missing)}")
            if extra:
                parts.append(f"extra column(s) {', '.join(extra)} (not categories of category.csv)")
            raise DatasetError(
                f"{path}: {'; '.join(parts)}; expected columns {','.join(expected)}"
            )
        sizes: tuple[int, int, int, int] | None = None
        first_line = 0
        self._rows: list[_Row] = []
        all_splits: list[str] = []
        for line, row in rows:
            image = row["image"].strip()
            if not image:
                raise DatasetError(f"{path} line {line}: empty 'image' column")
            if Path(image).is_absolute() or ".." in Path(image).parts:
                raise DatasetError(f"{path} line {line}: image {image!r} must be a relative path under images/")
            size = tuple(_int_field(path, line, c, row[c], 1) for c in ("ih", "iw", "sh", "sw"))
            if sizes is None:
                sizes, first_line = size, line
            elif size != sizes:
                raise DatasetError(
                    f"{path} line {line}: image {image} has ih,iw,sh,sw = {','.join(map(str, size))} but line "
                    f"{first_line} has {','.join(map(str, sizes))}; all images of a Broden data set must share "
                    f"one image size and one label size"
                )
            split = row["split"].strip()
            if split not in all_splits:
                all_splits.append(split)
            if self.split is not None and split != self.split:
                continue
            cells = tuple(self._parse_cell(path, line, cat, row[cat]) for cat in categories)
            self._rows.append(_Row(line, image, split, cells))
        if sizes is None:
            raise DatasetError(f"{path} lists no images")
        if not self._rows:
            raise DatasetError(
                f"{path} has no images in split {self.split!r}; its splits are {', '.join(map(repr, all_splits))}"
            )
        self.image_size = (sizes[0], sizes[1])
        self.label_size = (sizes[2], sizes[3])

    @staticmethod
    def _parse_cell(path: Path, line: int, cat: str, cell: str) -> tuple:
        out: list = []
        for entry in cell.split(";"):
            entry = entry.strip()
            if not entry:
                continue
            if _INT.match(entry):
                out.append(int(entry))
            elif entry.lower().endswith(".png") and not Path(entry).is_absolute() and ".." not in Path(entry).parts:
                out.append(entry)
            else:
                raise DatasetError(
                    f"{path} line {line}, column {cat!r}: malformed entry {entry!r} in cell {cell!r}; each "
                    f"';'-separated entry must be a label number (image-level label) or a relative .png "
                    f"file name under images/"
                )
        return tuple(out)

    # -- protocol --------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        split = f", split={self.split!r}" if self.split is not None else ""
        return f"BrodenDataset({str(self.root)!r}{split}: {len(self)} images, {len(self.concepts)} concepts)"

    def _row(self, index: int) -> _Row:
        i = int(index)
        n = len(self._rows)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"image index {index} out of range for {n} images")
        return self._rows[i]

    def image_id(self, index: int) -> str:
        """The ``image`` column: the image's path relative to ``images/``."""
        return self._row(index).image

    def image_path(self, index: int) -> Path:
        return self.root / "images" / self._row(index).image

    def split_name(self, index: int) -> str:
        """The ``split`` column of image ``index``."""
        return self._row(index).split

    def entries(self, index: int) -> dict[str, tuple]:
        """The category cells of image ``index``: category -> entries (int: image-level label, str: PNG name)."""
        return dict(zip(self.concepts.categories, self._row(index).cells))

    def index_line(self, index: int) -> int:
        """The line of ``index.csv`` that lists image ``index``."""
        return self._row(index).line

    def __getitem__(self, index: int) -> Sample:
        row = self._row(index)
        try:
            image = read_rgb(self.root / "images" / row.image, self.image_size)
        except DatasetError as e:
            raise DatasetError(f"{e} (index.csv line {row.line}, column 'image')") from None
        sample = self._labels(row)
        sample.image = image
        return sample

    def load_labels(self, index: int) -> Sample:
        return self._labels(self._row(index))

    def _labels(self, row: _Row) -> Sample:
        layers: list[np.ndarray] = []
        image_labels: list[int] = []
        known = self._known
        top = len(known) - 1
        for cat, cell in zip(self.concepts.categories, row.cells):
            for entry in cell:
                if isinstance(entry, int):
                    if entry >= top or not known[entry]:
                        raise DatasetError(
                            f"index.csv line {row.line} (image {row.image}), column {cat!r}: image-level label "
                            f"{entry} is not in label.csv"
                        )
                    image_labels.append(entry)
                    continue
                path = self.root / "images" / entry
                try:
                    labels = read_label_png(path, self.label_size)
                except DatasetError as e:
                    raise DatasetError(f"{e} (index.csv line {row.line}, column {cat!r})") from None
                ok = known[np.minimum(labels, top)]
                if not ok.all():
                    bad = np.unique(labels[~ok])
                    shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
                    raise DatasetError(
                        f"label PNG {path} (index.csv line {row.line}, column {cat!r}) holds label code(s) "
                        f"{shown} not in label.csv"
                    )
                layers.append(labels)
        sh, sw = self.label_size
        pixel = np.stack(layers).astype(np.int32, copy=False) if layers else np.zeros((0, sh, sw), np.int32)
        return Sample(image=None, pixel_labels=pixel, image_labels=np.array(image_labels, dtype=np.int64))

    def fingerprint(self) -> str:
        """sha256 over the CSV files, the split, and the name and byte size of every referenced file."""
        if self._fingerprint is None:
            h = hashlib.sha256(b"netdissect-broden-1\n")
            names = list(REQUIRED_FILES) + [f"c_{c}.csv" for c in self.concepts.categories]
            for name in names:
                p = self.root / name
                if p.is_file():
                    h.update(f"{name}\n{p.stat().st_size}\n".encode())
                    h.update(p.read_bytes())
            h.update(f"split={self.split!r}\n".encode())
            images = self.root / "images"
            for row in self._rows:
                files = [row.image] + [e for cell in row.cells for e in cell if isinstance(e, str)]
                for rel in files:
                    try:
                        size = (images / rel).stat().st_size
                    except OSError:
                        raise DatasetError(
                            f"{images / rel} does not exist (referenced by index.csv line {row.line})"
                        ) from None
                    h.update(f"{rel}\0{size}\n".encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def spec(self) -> str:
        """The absolute folder path, plus ``?split=NAME`` when a split is selected."""
        return str(self.root) if self.split is None else f"{self.root}?split={self.split}"


# ---------------------------------------------------------------------------
# Writer

_SAFE = re.compile(r"[^A-Za-z0-9._+-]")
_IMAGE_EXT = re.compile(r"\.(jpe?g|png|bmp|gif|tiff?|webp)$", re.IGNORECASE)


def _safe_stem(image_id: str) -> str:
    """A relative path usable as a file stem: no '..', no ';' ',' or odd characters, no image suffix."""
    parts = [p for p in re.split(r"[\\/]+", str(image_id)) if p not in ("", ".", "..")]
    parts = [_SAFE.sub("_", p) for p in parts]
    stem = _IMAGE_EXT.sub("", "/".join(parts))
    return stem if stem and not stem.endswith("/") else (stem + "image")


def _fmt(x: float) -> str:
    """Fixed-point decimal that the original readers parse as a float (``\\d+\\.\\d*``)."""
    s = f"{x:.10f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


def _union_counts(layers: list[np.ndarray], minlength: int) -> np.ndarray:
    """Pixels per label number in the union of ``layers`` (a label twice at one pixel counts once)."""
    if len(layers) == 1:
        return np.bincount(layers[0].ravel(), minlength=minlength)
    stack = np.sort(np.stack(layers).reshape(len(layers), -1), axis=0)
    dup = np.zeros_like(stack, dtype=bool)
    dup[1:] = stack[1:] == stack[:-1]
    return np.bincount(stack[~dup], minlength=minlength)


def _write_csv(path: Path, header: Sequence[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def write_broden(
    dataset: ConceptDataset,
    root: "str | os.PathLike[str]",
    *,
    image_format: str = "jpg",
    quality: int = 95,
    progress: bool = False,
    overwrite: bool = False,
    workers: int = 0,
) -> Path:
    """Write any concept data set in Broden format; returns the folder.

    Images go to ``images/<id>.jpg`` (or ``.png``), label layers to
    ``images/<id>_<category>.png``, or ``images/<id>_<category>_<k>.png``
    (k = 1, 2, ...) when an image has several layers of one category.  Each
    layer goes to the primary category (in ``dataset.concepts``) of the
    labels it holds; a layer holding labels of several categories is split
    into one layer per category.  Image-level labels go into their primary
    category's cell as numbers.  Every concept of the table gets a row in
    ``label.csv`` and its category's ``c_`` file, also if no image has it.

    The folder is written as ``<root>.partial`` and renamed to ``root`` only
    once complete (a failed write removes it).  An existing ``root`` raises
    DatasetError unless ``overwrite=True``.

    ``workers > 0`` loads samples in that many processes (decoding and
    resizing are usually the slow part; order and output are unchanged).  A
    data set with an ``image_file(i)`` method returning an already encoded
    image of the right size and of format ``image_format`` has that file
    copied byte for byte instead of being decoded and encoded again.
    """
    fmt = str(image_format).lower().lstrip(".")
    fmt = "jpg" if fmt == "jpeg" else fmt
    if fmt not in ("jpg", "png"):
        raise ConfigError(f"image_format={image_format!r} is not supported; use 'jpg' or 'png'")
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ConfigError(f"quality={quality!r} must be an integer from 1 to 100")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ConfigError(f"workers={workers!r} must be an integer >= 0")
    root = Path(root).expanduser()
    if root.exists() and not overwrite:
        raise DatasetError(f"output folder {root} already exists; pass overwrite=True to replace it")
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # left over from an interrupted write
    try:
        _write_contents(dataset, partial, fmt, int(quality), progress, int(workers))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if root.exists():
        old = root.with_name(root.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        root.rename(old)
        partial.rename(root)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(root)
    return root


class _Loader:
    """Loads image i of a data set for writing: (sample, encoded image file to copy, or None).

    A data set with ``image_file(i)`` whose file already has the output
    format, the image size and RGB mode is copied as is (only its labels
    are loaded); otherwise the sample is loaded in full.
    """

    def __init__(self, dataset: ConceptDataset, fmt: str, size: tuple[int, int]):
        self.dataset, self.fmt, self.size = dataset, fmt, size

    def __call__(self, i: int):
        image_file = getattr(self.dataset, "image_file", None)
        if callable(image_file):
            path = Path(image_file(i))
            suffix = path.suffix.lower().lstrip(".")
            if ("jpg" if suffix == "jpeg" else suffix) == self.fmt:
                try:
                    from PIL import Image

                    with Image.open(path) as im:
                        ok = (im.size[1], im.size[0]) == tuple(self.size) and im.mode == "RGB"
                except OSError:
                    ok = False
                if ok:
                    return self.dataset.load_labels(i), path
        return self.dataset[i], None


_WORKER_LOADER: "_Loader | None" = None  # set in each loader process


def _init_worker(loader: _Loader) -> None:
    global _WORKER_LOADER
    _WORKER_LOADER = loader


def _worker_load(i: int):
    return _WORKER_LOADER(i)


def _samples(loader: _Loader, indices, workers: int):
    """Yield (index, sample, image file or None) in order, loading in ``workers`` processes when > 0."""
    if workers <= 0:
        for i in indices:
            yield (i, *loader(i))
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pending: deque = deque()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                             initializer=_init_worker, initargs=(loader,)) as pool:
        try:
            for i in indices:
                pending.append((i, pool.submit(_worker_load, i)))
                if len(pending) >= 4 * workers:  # bounded read-ahead: memory stays flat
                    j, fut = pending.popleft()
                    yield (j, *fut.result())
            while pending:
                j, fut = pending.popleft()
                yield (j, *fut.result())
        finally:
            for _, fut in pending:
                fut.cancel()


def _write_contents(dataset: ConceptDataset, out: Path, fmt: str, quality: int, progress: bool,
                    workers: int = 0) -> None:
    concepts = dataset.concepts
    categories = list(concepts.categories)
    ncat = len(categories)
    max_number = concepts.max_number
    if max_number > MAX_LABEL:
        raise DatasetError(f"label number {max_number} does not fit a label PNG (max {MAX_LABEL})")
    cat_of = concepts.category_index()  # (max_number + 1,) primary category index, -1 = none
    ih, iw = (int(v) for v in dataset.image_size)
    sh, sw = (int(v) for v in dataset.label_size)
    npix = float(sh * sw)
    frequency = np.zeros(max_number + 1, dtype=np.int64)
    coverage = np.zeros(max_number + 1, dtype=np.float64)
    images_dir = out / "images"
    images_dir.mkdir(parents=True)
    split_name = getattr(dataset, "split_name", None)
    used: set[str] = set()  # lower-cased relative file names already taken
    index_rows: list[list] = []

    indices = range(len(dataset))
    if progress:
        try:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc=f"writing {out.name[:-len('.partial')]}", unit="img")
        except ImportError:  # pragma: no cover - tqdm is a dependency
            pass

    for i, sample, source_file in _samples(_Loader(dataset, fmt, (ih, iw)), indices, workers):
        ident = dataset.image_id(i)
        image = None
        if source_file is None:
            image = np.asarray(sample.image)
            if image.shape != (ih, iw, 3):
                raise DatasetError(f"image {i} ({ident}) has shape {image.shape}; the data set says ({ih}, {iw}, 3)")
        pixel = np.asarray(sample.pixel_labels)
        if pixel.ndim != 3 or pixel.shape[1:] != (sh, sw):
            raise DatasetError(
                f"image {i} ({ident}): pixel_labels has shape {pixel.shape}; expected (L, {sh}, {sw})"
            )
        # Sort label layers and image-level labels into categories.
        layers: list[list[np.ndarray]] = [[] for _ in categories]
        for layer in pixel:
            layer = layer.astype(np.int64, copy=False)
            lo, hi = int(layer.min(initial=0)), int(layer.max(initial=0))
            if hi == 0 and lo == 0:
                continue
            if lo < 0 or hi > max_number:
                bad = np.unique(layer[(layer < 0) | (layer > max_number)])
                raise DatasetError(f"image {i} ({ident}): label code(s) {bad[:10].tolist()} are not in the concept table")
            codes = np.flatnonzero(np.bincount(layer.ravel(), minlength=max_number + 1)[1:]) + 1
            if (cat_of[codes] < 0).any():
                bad = codes[cat_of[codes] < 0]
                raise DatasetError(f"image {i} ({ident}): label code(s) {bad[:10].tolist()} are not in the concept table")
            layer_cats = np.unique(cat_of[codes])
            if len(layer_cats) == 1:
                layers[int(layer_cats[0])].append(layer)
            else:
                per_pixel_cat = cat_of[layer]
                for c in layer_cats:
                    layers[int(c)].append(np.where(per_pixel_cat == c, layer, 0))
        scalars: list[list[int]] = [[] for _ in categories]
        for code in dict.fromkeys(int(v) for v in np.asarray(sample.image_labels).ravel()):
            if code == 0:
                continue
            if not 0 < code <= max_number or cat_of[code] < 0:
                raise DatasetError(f"image {i} ({ident}): image-level label {code} is not in the concept table")
            scalars[int(cat_of[code])].append(code)

        # Unique file names for this image.
        base = _safe_stem(ident)
        stem, attempt = base, 1
        while True:
            names = [f"{stem}.{fmt}"]
            for c, cat in enumerate(categories):
                k = len(layers[c])
                names += [f"{stem}_{cat}.png"] if k == 1 else [f"{stem}_{cat}_{j + 1}.png" for j in range(k)]
            if not any(n.lower() in used for n in names):
                break
            attempt += 1
            stem = f"{base}_{attempt}"
        used.update(n.lower() for n in names)

        # Write the files.
        image_path = images_dir / names[0]
        image_path.parent.mkdir(parents=True, exist_ok=True)
        if source_file is not None:
            shutil.copyfile(source_file, image_path)
        else:
            write_rgb(image_path, image.astype(np.uint8, copy=False), quality=quality)
        cells = []
        fraction = np.zeros(max_number + 1, dtype=np.float64)
        pos = 1
        for c in range(ncat):
            entries = []
            for layer in layers[c]:
                write_label_png(images_dir / names[pos], layer)
                entries.append(names[pos])
                pos += 1
            if layers[c]:
                counts = _union_counts(layers[c], max_number + 1)
                np.maximum(fraction, counts / npix, out=fraction)
            for code in scalars[c]:
                fraction[code] = 1.0
            entries += [str(code) for code in scalars[c]]
            cells.append(";".join(entries))
        fraction[0] = 0.0
        frequency += fraction > 0
        coverage += fraction
        split = str(split_name(i)) if callable(split_name) else "train"
        index_rows.append([names[0], split, ih, iw, sh, sw] + cells)

    # Metadata files.
    _write_csv(out / "index.csv", list(INDEX_META) + categories, index_rows)
    label_rows = []
    by_cat: list[list[Concept]] = [[] for _ in categories]
    for concept in concepts:
        n = concept.number
        by_cat[categories.index(concept.category)].append(concept)
        label_rows.append([n, concept.name, f"{concept.category}({frequency[n]})", int(frequency[n]),
                           _fmt(coverage[n]), ""])
    _write_csv(out / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"], label_rows)
    category_rows = []
    for cat, members in zip(categories, by_cat):
        numbers = [m.number for m in members]
        category_rows.append([
            cat,
            min(numbers, default=0),
            max(numbers, default=0),
            len(numbers),
            int(sum(frequency[n] for n in numbers)),
        ])
        dense = sorted(members, key=lambda m: (-frequency[m.number], -coverage[m.number], m.number))
        _write_csv(
            out / f"c_{cat}.csv",
            ["code", "number", "name", "frequency", "coverage"],
            [[code + 1, m.number, m.name, int(frequency[m.number]), _fmt(coverage[m.number])]
             for code, m in enumerate(dense)],
        )
    _write_csv(out / "category.csv", ["name", "first", "last", "count", "frequency"], category_rows)


__all__ = ["BrodenDataset", "write_broden"]
