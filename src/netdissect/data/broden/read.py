"""Reading the Broden format: :class:`BrodenDataset`, and the CSV parsing shared with :mod:`.check`.

The format, the statistics and the primary-category rule are described in
:mod:`netdissect.data.broden`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from ...errors import DatasetError
from ..filehash import SIDECAR, UnreadableFileError, file_digests
from ..imageio import MAX_LABEL, read_label_png, read_rgb
from ..protocol import Concept, ConceptTable, Sample

INDEX_META = ("image", "split", "ih", "iw", "sh", "sw")
REQUIRED_FILES = ("index.csv", "label.csv", "category.csv")
INT = re.compile(r"^\d+$")
CAT_COUNT = re.compile(r"^([^()]*)\((\d+)\)$")
_FORMAT_HINT = (
    "a Broden folder holds index.csv, label.csv, category.csv, c_<category>.csv and images/"
)


# ---------------------------------------------------------------------------
# CSV helpers


def read_csv(path: Path, required: Sequence[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
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


def int_field(path: Path, line: int, column: str, value: str, minimum: int = 0) -> int:
    """The integer in a CSV cell; DatasetError naming the file, line and column unless it is >= ``minimum``."""
    value = value.strip()
    if not INT.match(value) or int(value) < minimum:
        raise DatasetError(
            f"{path} line {line}: column {column!r} holds {value!r}; expected an integer >= {minimum}"
        )
    return int(value)


def float_field(path: Path, line: int, column: str, value: str) -> float:
    """The finite number in a CSV cell; DatasetError naming the file, line and column otherwise."""
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
    """A concept data set stored in Broden format (see :mod:`netdissect.data.broden`).

    ``BrodenDataset(root, split=None)``: ``root`` is the folder; ``split``
    keeps only the rows of ``index.csv`` whose ``split`` column equals it.

    Columns of ``index.csv`` that are neither image columns nor categories
    of ``category.csv`` are ignored, as NetDissect-Lite does (the original
    tools write empty ``part,material,scene`` columns for a set without
    those categories): ``ignored_columns`` names them, ``ignored_entries``
    gives the lines whose cells there are not empty, and ``notes`` says so
    in words.

    An image listed on several rows of ``index.csv`` (in any splits) is
    refused with a DatasetError naming the rows: it would be counted once
    per row.

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
        _, rows = read_csv(path, ["name"])
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
        _, rows = read_csv(path, ["number", "name", "category"])
        labels: dict[int, dict] = {}
        for line, row in rows:
            number = int_field(path, line, "number", row["number"])
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
                m = CAT_COUNT.match(part)
                if not m:
                    raise DatasetError(
                        f"{path} line {line}: category cell {row['category']!r} is malformed; "
                        f"expected name(count) pairs separated by ';', e.g. material(36);object(3)"
                    )
                counts[m.group(1).strip()] = counts.get(m.group(1).strip(), 0) + int(m.group(2))
            coverage = row.get("coverage", "").strip()
            total = float_field(path, line, "coverage", coverage) if coverage else 0.0
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
            _, crows = read_csv(cpath, ["number", "coverage"])
            for line, row in crows:
                number = int_field(cpath, line, "number", row["number"])
                if number == 0:
                    continue
                if number not in labels:
                    raise DatasetError(f"{cpath} line {line}: label number {number} is not in label.csv")
                cov = float_field(cpath, line, "coverage", row["coverage"])
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
        header, rows = read_csv(path, [])
        expected = list(INDEX_META) + categories
        missing = [c for c in expected if c not in header]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}; expected columns {','.join(expected)}")
        # Columns of categories that category.csv does not list (the original tools write empty
        # part,material,scene columns for a set without them) are ignored, as NetDissect-Lite does.
        self.ignored_columns: tuple[str, ...] = tuple(c for c in header if c not in expected)
        ignored_lines: dict[str, list[int]] = {c: [] for c in self.ignored_columns}
        sizes: tuple[int, int, int, int] | None = None
        first_line = 0
        self._rows: list[_Row] = []
        all_splits: list[str] = []
        listed: dict[PurePosixPath, list[tuple[int, str]]] = {}  # image file -> (line, as written) of its rows
        for line, row in rows:
            image = row["image"].strip()
            if not image:
                raise DatasetError(f"{path} line {line}: empty 'image' column")
            if Path(image).is_absolute() or ".." in Path(image).parts:
                raise DatasetError(f"{path} line {line}: image {image!r} must be a relative path under images/")
            listed.setdefault(PurePosixPath(image), []).append((line, image))
            size = tuple(int_field(path, line, c, row[c], 1) for c in ("ih", "iw", "sh", "sw"))
            if sizes is None:
                sizes, first_line = size, line
            elif size != sizes:
                raise DatasetError(
                    f"{path} line {line}: image {image} has ih,iw,sh,sw = {','.join(map(str, size))} but line "
                    f"{first_line} has {','.join(map(str, sizes))}; all images of a Broden data set must share "
                    f"one image size and one label size"
                )
            for c in self.ignored_columns:
                if row[c].strip():
                    ignored_lines[c].append(line)
            split = row["split"].strip()
            if split not in all_splits:
                all_splits.append(split)
            if self.split is not None and split != self.split:
                continue
            cells = tuple(self._parse_cell(path, line, cat, row[cat]) for cat in categories)
            self._rows.append(_Row(line, image, split, cells))
        if sizes is None:
            raise DatasetError(f"{path} lists no images")
        repeated = [rows for rows in listed.values() if len(rows) > 1]
        if repeated:
            # A repeated row would be counted once per listing: refused in every split (check_broden says the same).
            shown = "; ".join(f"{rows[0][1]} on lines {', '.join(str(line) for line, _ in rows)}"
                              for rows in repeated[:10])
            more = f"; ... ({len(repeated) - 10} more)" if len(repeated) > 10 else ""
            raise DatasetError(
                f"{path} lists {len(repeated)} image{'s' if len(repeated) > 1 else ''} more than once, and each "
                f"listing would be counted: {shown}{more}; list each image once"
            )
        if not self._rows:
            raise DatasetError(
                f"{path} has no images in split {self.split!r}; its splits are {', '.join(map(repr, all_splits))}"
            )
        self.image_size = (sizes[0], sizes[1])
        self.label_size = (sizes[2], sizes[3])
        #: column -> index.csv lines whose cell in that ignored column is not empty
        self.ignored_entries: dict[str, list[int]] = {c: lines for c, lines in ignored_lines.items() if lines}
        self.notes: list[str] = []
        if self.ignored_columns:
            cols = self.ignored_columns
            one = len(cols) == 1
            held = [f"column {c!r} holds entries in {len(self.ignored_entries[c])} row(s) (first: line "
                    f"{self.ignored_entries[c][0]})" for c in cols if c in self.ignored_entries]
            self.notes.append(
                f"index.csv column(s) {', '.join(cols)} {'is not a category' if one else 'are not categories'} of "
                f"category.csv ({', '.join(categories)}) and {'is' if one else 'are'} ignored, as NetDissect-Lite "
                f"does; " + ("; ".join(held) if held else ("it is" if one else "they are all") + " empty")
            )

    @staticmethod
    def _parse_cell(path: Path, line: int, cat: str, cell: str) -> tuple:
        out: list = []
        for entry in cell.split(";"):
            entry = entry.strip()
            if not entry:
                continue
            if INT.match(entry):
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
        """The image file of image ``index`` (under ``images/``)."""
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
        """The label PNGs and image-level labels of image ``index`` (``image`` is None); raises DatasetError."""
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
        """sha256 over the CSV files, the split, and the name and content of every referenced file.

        File contents are hashed in threads, and their digests kept in a
        sidecar file (``.netdissect-digests.json`` in the folder, see
        :mod:`netdissect.data.filehash`) keyed by each file's size, times,
        inode and device, so that a second open reads no file again but
        any change of content, also at the same size and modification time,
        changes the fingerprint.  Raises DatasetError naming a missing or
        unreadable file and the index.csv line that references it.
        """
        if self._fingerprint is None:
            h = hashlib.sha256(b"netdissect-broden-2\n")
            names = list(REQUIRED_FILES) + [f"c_{c}.csv" for c in self.concepts.categories]
            for name in names:
                p = self.root / name
                if p.is_file():
                    h.update(f"{name}\n{p.stat().st_size}\n".encode())
                    h.update(p.read_bytes())
            h.update(f"split={self.split!r}\n".encode())
            images = self.root / "images"
            files = [[row.image] + [e for cell in row.cells for e in cell if isinstance(e, str)] for row in self._rows]
            try:
                digests = file_digests(images, [f for fs in files for f in fs], sidecar=self.root / SIDECAR)
            except UnreadableFileError as e:
                line = next(row.line for row, fs in zip(self._rows, files) if e.name in fs)
                what = "does not exist" if e.missing else f"cannot be read: {e.error.strerror or e.error}"
                raise DatasetError(f"{images / e.name} {what} (referenced by index.csv line {line})") from None
            for fs in files:
                for rel in fs:
                    h.update(f"{rel}\0{digests[rel]}\n".encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def spec(self) -> str:
        """The absolute folder path, plus ``?split=NAME`` when a split is selected."""
        return str(self.root) if self.split is None else f"{self.root}?split={self.split}"


__all__ = ["BrodenDataset", "CAT_COUNT", "INDEX_META", "INT", "REQUIRED_FILES", "float_field", "int_field", "read_csv"]
