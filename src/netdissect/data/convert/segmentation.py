"""Segmentation folders (CamVid, Pascal VOC and the like).

:class:`SegmentationFolders` reads them; :func:`convert_segmentation` converts them to Broden format.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import ConfigError, DatasetError
from ..colornames import COLOR_CONCEPTS
from ..protocol import Concept, ConceptTable
from .common import (
    IMAGE_SUFFIXES,
    ConvertedDataset,
    Record,
    color_concepts,
    images_in,
    open_image,
    ordered_categories,
    write_converted,
)

#: class names that mean "no label" by default in a class list
DEFAULT_IGNORE = ("void", "unlabelled", "unlabeled", "ignore", "none", "-")


def read_class_map(path: Path) -> np.ndarray:
    """A label map of class indices as (H, W) int64.

    Grey (8 or 16 bit) and 1-bit images hold the index directly; palette
    images hold it as the palette index (as in Pascal VOC).  Colour images
    are refused: a colour-coded label map needs a colour -> class table.
    """
    im = open_image(path, "label map")
    try:
        mode = im.mode
        if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
            raise DatasetError(
                f"label map {path} is a {mode} colour image; the segmentation converter needs single-channel "
                f"label maps holding class indices (grey or palette PNG)"
            )
        if mode == "LA":
            im = im.getchannel("L")
        arr = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"label map {path} cannot be decoded: {e}") from None
    finally:
        im.close()
    return arr.astype(np.int64)


_CLASS_LINE = re.compile(r"^\s*(\d+)\s*[,:;\t ]\s*(.+?)\s*$")


def read_class_list(path: "str | os.PathLike[str]") -> dict[int, str]:
    """Read a class list: label value -> class name.

    One class per line, either ``name`` (the line's position among the
    non-blank, non-comment lines is the value, starting at 0) or
    ``value name`` / ``value,name`` / ``value: name`` with an explicit value.
    Lines starting with ``#`` are comments.  Mixing the two forms, a repeated
    value or an empty list raises :class:`DatasetError` naming the file.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"class list {path} cannot be read: {e}") from None
    out: dict[int, str] = {}
    explicit: bool | None = None
    position = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _CLASS_LINE.match(line)
        this_explicit = bool(m)
        if explicit is None:
            explicit = this_explicit
        elif explicit != this_explicit:
            raise DatasetError(
                f"class list {path} line {lineno}: {line!r} mixes the two forms; write either one name per line "
                f"(value = position) or 'value name' on every line"
            )
        value, name = (int(m.group(1)), m.group(2)) if m else (position, line)
        name = name.strip().strip('"').strip()
        if not name:
            raise DatasetError(f"class list {path} line {lineno}: empty class name")
        if value in out:
            raise DatasetError(f"class list {path} line {lineno}: value {value} is listed twice")
        out[value] = name
        position += 1
    if not out:
        raise DatasetError(f"class list {path} lists no classes")
    return out


class SegmentationFolders(ConvertedDataset):
    """A segmentation data set: image and label-map folders plus a class list.

    ``source`` holds ``images/`` and ``labels/`` (names set by ``images=``
    and ``labels=``), or split subfolders that each hold them (CamVid:
    ``train/images``, ``train/labels``, ``val/...``, ``test/...``; the
    subfolder name becomes the ``split`` column).  A label map is paired
    with the image of the same relative path and stem, plus
    ``label_suffix`` (``img.jpg`` <-> ``img<label_suffix>.png``).

    Label maps hold class indices (:func:`read_class_map`); ``classes`` is
    the class list (:func:`read_class_list`) naming every value.  Classes
    named in ``ignore`` (default: void, unlabelled, ...) and values in
    ``ignore_values`` become 0 (no label).  A label value that the class
    list does not cover raises :class:`DatasetError` naming the class list,
    the label map and the values.  The classes become concepts of
    ``category`` (default ``object``), numbered 12, 13, ... in class-list
    order after the 11 colours; classes sharing a name share a concept.
    """

    kind = "segmentation"

    def __init__(
        self,
        source: "str | os.PathLike[str]",
        classes: "str | os.PathLike[str]",
        *,
        category: str = "object",
        size=224,
        fit: str = "stretch",
        ignore: Sequence[str] = DEFAULT_IGNORE,
        ignore_values: Sequence[int] = (),
        images: str = "images",
        labels: str = "labels",
        label_suffix: str = "",
        colors: bool = True,
    ):
        super().__init__(size, fit, colors)
        self.source = Path(source).expanduser()
        if not self.source.is_dir():
            raise DatasetError(f"segmentation source {self.source} is not a folder")
        category = str(category).strip()
        if not category or category == "color" and colors:
            raise ConfigError(f"category={category!r} must be a non-empty name other than 'color'")
        self.classes_path = Path(classes).expanduser()
        class_list = read_class_list(self.classes_path)
        ignored_names = {n.lower() for n in ignore}
        names: list[str] = []
        for value in sorted(class_list):
            name = class_list[value]
            if name.lower() not in ignored_names and name not in names:
                names.append(name)
        if not names:
            raise DatasetError(f"class list {self.classes_path}: every class is ignored ({', '.join(ignore)})")
        first = len(COLOR_CONCEPTS) + 1 if colors else 1
        number = {name: first + k for k, name in enumerate(names)}
        concepts = (color_concepts() if colors else []) + [Concept(number[n], n, category) for n in names]
        self.concepts = ConceptTable(concepts, ordered_categories((["color"] if colors else []) + [category]))
        top = max(max(class_list), max((int(v) for v in ignore_values), default=0))
        if top > 1 << 24:
            raise DatasetError(f"class list {self.classes_path}: value {top} is too large")
        # value -> label number; -1 marks values the class list does not cover.
        self._lut = np.full(top + 1, -1, dtype=np.int64)
        for value, name in class_list.items():
            self._lut[value] = 0 if name.lower() in ignored_names else number[name]
        for v in ignore_values:
            if int(v) < 0:
                raise ConfigError(f"ignore_values holds {v}; label values are >= 0")
            self._lut[int(v)] = 0
        self.options = {
            "source": str(self.source.resolve()), "classes": str(self.classes_path.resolve()),
            "category": category, "ignore": sorted(ignored_names),
            "ignore_values": sorted(int(v) for v in ignore_values),
            "images": images, "labels": labels, "label_suffix": label_suffix,
        }
        self.records = self._find(images, labels, label_suffix)

    def _find(self, images: str, labels: str, suffix: str) -> list[Record]:
        if (self.source / images).is_dir():
            splits = [(self.source, "train")]
        else:
            splits = [(d, d.name) for d in sorted(self.source.iterdir()) if (d / images).is_dir()]
            if not splits:
                raise DatasetError(
                    f"segmentation source {self.source} has no {images}/ folder, and no subfolder (split) has one; "
                    f"expected {self.source}/{images} and {self.source}/{labels}, or "
                    f"{self.source}/<split>/{images} and {self.source}/<split>/{labels}"
                )
        records: list[Record] = []
        for folder, split in splits:
            image_dir, label_dir = folder / images, folder / labels
            if not label_dir.is_dir():
                raise DatasetError(f"{image_dir} has no matching label folder {label_dir}")
            label_files = {}
            for p in images_in(label_dir):
                rel = p.relative_to(label_dir).with_suffix("").as_posix()
                if suffix:
                    if not rel.endswith(suffix):
                        continue
                    rel = rel[: -len(suffix)]
                label_files[rel] = p
            image_files = images_in(image_dir)
            if not image_files:
                raise DatasetError(f"image folder {image_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            seen = set()
            missing = []
            for p in image_files:
                rel = p.relative_to(image_dir).with_suffix("").as_posix()
                if rel in seen:
                    raise DatasetError(f"image folder {image_dir} has two images named {rel}.* ")
                seen.add(rel)
                if rel not in label_files:
                    missing.append(p.name)
                    continue
                prefix = f"{split}/" if len(splits) > 1 or folder != self.source else ""
                records.append(Record(prefix + rel, split, p, {"label": label_files[rel]}))
            if missing:
                raise DatasetError(
                    f"{len(missing)} image(s) in {image_dir} have no label map in {label_dir} "
                    f"(expected <name>{suffix}.png): {', '.join(missing[:5])}" + (", ..." if len(missing) > 5 else "")
                )
            orphans = sorted(set(label_files) - seen)
            if orphans:
                raise DatasetError(
                    f"{len(orphans)} label map(s) in {label_dir} have no image in {image_dir}: "
                    f"{', '.join(orphans[:5])}" + (", ..." if len(orphans) > 5 else "")
                )
        return records

    def _record_files(self, record: Record) -> list[Path]:
        return [record.data["label"]]

    def _source_labels(self, record: Record) -> tuple[list[np.ndarray], list[int]]:
        path = record.data["label"]
        values = read_class_map(path)
        lut = self._lut
        top = len(lut) - 1
        if values.size and (values.max() > top or (lut[values] < 0).any()):
            present = np.unique(values)
            bad = [int(v) for v in present if v > top or lut[v] < 0]
            covered = sorted(int(v) for v in np.flatnonzero(lut >= 0))
            raise DatasetError(
                f"class list {self.classes_path} does not cover label value(s) {', '.join(map(str, bad[:20]))} "
                f"found in label map {path}; it names values {_ranges(covered)}"
            )
        return [lut[values]], []


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out, start, prev = [], None, None
    for v in values:
        if start is None:
            start = prev = v
        elif v == prev + 1:
            prev = v
        else:
            out.append(f"{start}-{prev}" if prev != start else str(start))
            start = prev = v
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else str(start))
    return ", ".join(out) or "none"


def convert_segmentation(source, out, *, classes, category="object", size=224, fit="stretch",
                         ignore=DEFAULT_IGNORE, ignore_values=(), images="images", labels="labels",
                         label_suffix="", colors=True, image_format="jpg", quality=95, workers=0,
                         progress=False, overwrite=False) -> Path:
    """Convert a segmentation data set (see :class:`SegmentationFolders`) into a Broden folder ``out``."""
    ds = SegmentationFolders(source, classes, category=category, size=size, fit=fit, ignore=ignore,
                             ignore_values=ignore_values, images=images, labels=labels, label_suffix=label_suffix,
                             colors=colors)
    return write_converted(ds, out, image_format, quality, workers, progress, overwrite)


__all__ = ["DEFAULT_IGNORE", "SegmentationFolders", "convert_segmentation", "read_class_list", "read_class_map"]
