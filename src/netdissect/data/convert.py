"""Converters from common labelled data sets into Broden format, and merging.

Each source is first wrapped as a concept data set (the
:class:`~netdissect.data.protocol.ConceptDataset` protocol), which can be
dissected directly, and is then written with
:func:`~netdissect.data.broden.write_broden` (into ``<out>.partial``, renamed
only when complete):

- :class:`SegmentationFolders` / :func:`convert_segmentation`: images and
  label maps of class indices plus a class list (CamVid, Pascal VOC, ...);
- :class:`ADE20KSource` / :func:`convert_ade20k`: ADE20K's own format
  (objects from ``*_seg.png``, parts from ``*_parts_N.png``, the scene from
  the ``.json``);
- :class:`ImageFolders` / :func:`convert_folders`: one folder per class, as
  image-level ``texture`` or ``scene`` concepts (DTD, Places, ...);
- :class:`MergedBroden` / :func:`merge_broden`: several Broden folders into
  one data set with one label table.

Every converted data set also gets a pixel-level ``color`` category named by
:mod:`netdissect.data.colornames` (``black-c`` ... ``yellow-c``, label
numbers 1 to 11).

**Resizing** (the same for every converter).  Images are resized to
``size`` x ``size`` (224 or 227) and labels to ``size // 2`` (112 or 113):

- ``fit="stretch"`` (default): the *whole* image is resized to a square,
  without cropping, so a non-square image is squeezed along its long side.
  Dissection never crops either, so every labelled pixel is kept.
  ``fit="crop"`` instead keeps the centred square of side ``min(H, W)``
  (offsets ``(H - S) // 2``, ``(W - S) // 2``) and resizes that.
- The image is resized with Pillow's bicubic filter (antialiased; large JPEGs
  are first decoded at a reduced scale of at least twice the target size).
- Label maps are resized by nearest neighbour: label pixel ``(i, j)`` takes
  the source label at row ``y0 + floor((i + 0.5) * S_h / sh)`` and column
  ``x0 + floor((j + 0.5) * S_w / sw)``, where ``S_h x S_w`` is the source
  region (the whole map, or the centred square) starting at ``(y0, x0)``.
  This is :func:`label_sample_index`.
- Colours are named on the resized image reduced to the label grid by area
  averaging (each label pixel takes the mean colour of the image pixels it
  covers: a 2x2 block for 224 -> 112).
- EXIF orientation tags are ignored: label maps align with the stored pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, DatasetError
from .broden import BrodenDataset, write_broden
from .colornames import COLOR_CONCEPTS, color_map
from .imageio import MAX_LABEL
from .protocol import Concept, ConceptTable, Sample

#: the categories of the original Broden, in its order; others follow these
CATEGORY_ORDER = ("color", "object", "part", "material", "scene", "texture")
#: class names that mean "no label" by default in a class list
DEFAULT_IGNORE = ("void", "unlabelled", "unlabeled", "ignore", "none", "-")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FITS = ("stretch", "crop")
CONVERTER_VERSION = "netdissect-convert-1"


# ---------------------------------------------------------------------------
# Geometry


def label_sample_index(n_out: int, n_in: int, offset: int = 0) -> np.ndarray:
    """(n_out,) source index of each output index for a nearest-neighbour resize.

    Output index ``i`` takes source index ``offset + floor((i + 0.5) * n_in / n_out)``
    (computed in integers: ``((2 i + 1) * n_in) // (2 n_out)``).
    """
    i = np.arange(int(n_out), dtype=np.int64)
    return int(offset) + ((2 * i + 1) * int(n_in)) // (2 * int(n_out))


def _square_size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    else:
        try:
            h, w = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ConfigError(f"size={size!r} must be an integer such as 224 or a pair (H, W)") from None
    if h < 2 or w < 2:
        raise ConfigError(f"size={size!r} must be at least 2 pixels (labels are half the image size)")
    return h, w


def _source_box(height: int, width: int, fit: str) -> tuple[int, int, int, int]:
    """(y0, x0, S_h, S_w): the region of a height x width source that is resized."""
    if fit == "stretch":
        return 0, 0, height, width
    s = min(height, width)
    return (height - s) // 2, (width - s) // 2, s, s


def _check_fit(fit: str) -> str:
    if fit not in FITS:
        raise ConfigError(f"fit={fit!r} is not one of {', '.join(FITS)}")
    return fit


def _open_image(path: Path, what: str = "image") -> Image.Image:
    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise DatasetError(f"{what} {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"{what} {path} cannot be read as an image: {e}") from None
    return im


def _load_resized_image(path: Path, size: tuple[int, int], fit: str) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``path`` and resize it; returns ((H, W, 3) uint8, source (height, width))."""
    im = _open_image(path)
    width, height = im.size
    y0, x0, sh, sw = _source_box(height, width, fit)
    try:
        if fit == "stretch" and im.format == "JPEG" and min(width / size[1], height / size[0]) >= 4:
            # JPEG DCT scaling: decode at 1/2, 1/4 or 1/8, still >= 2x the target size.
            im.draft("RGB", (2 * size[1], 2 * size[0]))
        im = im.convert("RGB")
        box = None
        if fit != "stretch":
            fx, fy = im.size[0] / width, im.size[1] / height
            box = (x0 * fx, y0 * fy, (x0 + sw) * fx, (y0 + sh) * fy)
        out = im.resize((size[1], size[0]), Image.Resampling.BICUBIC, box=box)
        arr = np.asarray(out, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"image {path} cannot be decoded: {e}") from None
    finally:
        im.close()
    return arr, (height, width)


def _resize_labels(labels: np.ndarray, label_size: tuple[int, int], fit: str) -> np.ndarray:
    """(H, W) source labels -> (sh, sw) by the nearest-neighbour rule of :func:`label_sample_index`."""
    height, width = labels.shape
    y0, x0, s_h, s_w = _source_box(height, width, fit)
    rows = label_sample_index(label_size[0], s_h, y0)
    cols = label_sample_index(label_size[1], s_w, x0)
    return labels[np.ix_(rows, cols)]


def read_class_map(path: Path) -> np.ndarray:
    """A label map of class indices as (H, W) int64.

    Grey (8 or 16 bit) and 1-bit images hold the index directly; palette
    images hold it as the palette index (as in Pascal VOC).  Colour images
    are refused: a colour-coded label map needs a colour -> class table.
    """
    im = _open_image(path, "label map")
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


def _read_ade_mask(path: Path) -> np.ndarray:
    """An ADE20K ``_seg.png`` / ``_parts_N.png``: class = R // 10 * 256 + G, as (H, W) int64."""
    im = _open_image(path, "ADE20K mask")
    try:
        if im.mode not in ("RGB", "RGBA"):
            raise DatasetError(f"ADE20K mask {path} is mode {im.mode}; expected an RGB image (class in R and G)")
        rgb = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"ADE20K mask {path} cannot be decoded: {e}") from None
    finally:
        im.close()
    return (rgb[:, :, 0].astype(np.int64) // 10) * 256 + rgb[:, :, 1].astype(np.int64)


def _images_in(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, hidden names skipped."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES):
                out.append(Path(root) / f)
    return out


def _ordered_categories(categories: Iterable[str]) -> list[str]:
    cats = list(dict.fromkeys(categories))
    known = [c for c in CATEGORY_ORDER if c in cats]
    return known + [c for c in cats if c not in CATEGORY_ORDER]


def _file_key(path: Path) -> str:
    try:
        st = path.stat()
        return f"{path}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return f"{path}:missing"


# ---------------------------------------------------------------------------
# The shared data set class


@dataclass
class _Record:
    """One source image: its id, split, image file, and what the converter needs to label it."""

    image_id: str
    split: str
    image: Path
    data: dict = field(default_factory=dict)


class _ConvertedBase:
    """A concept data set made from source files: resizing and colour naming shared by the converters.

    Subclasses set ``records``, ``concepts``, ``kind`` and ``options`` and
    implement ``_source_labels(record) -> (layers, image_labels)`` where
    layers are (H, W) int arrays of *label numbers* at source resolution.
    """

    kind = "converted"

    def __init__(self, size, fit: str, colors: bool):
        self.image_size = _square_size(size)
        self.label_size = (self.image_size[0] // 2, self.image_size[1] // 2)
        self.fit = _check_fit(fit)
        self.colors = bool(colors)
        self.records: list[_Record] = []
        self.concepts: ConceptTable
        self.options: dict = {}
        self._fingerprint: str | None = None

    # -- protocol --------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {len(self.concepts)} concepts)"

    def _record(self, index: int) -> _Record:
        n = len(self.records)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"image index {index} out of range for {n} images")
        return self.records[i]

    def image_id(self, index: int) -> str:
        return self._record(index).image_id

    def split_name(self, index: int) -> str:
        return self._record(index).split

    def source_image(self, index: int) -> Path:
        return self._record(index).image

    def __getitem__(self, index: int) -> Sample:
        record = self._record(index)
        image, (height, width) = _load_resized_image(record.image, self.image_size, self.fit)
        layers, image_labels = self._source_labels(record)
        out = []
        if self.colors:
            out.append(color_map(image, self.label_size).astype(np.int32) + 1)  # colours are numbers 1..11
        for layer in layers:
            if layer.shape != (height, width):
                raise DatasetError(
                    f"label map for image {record.image} is {layer.shape[0]}x{layer.shape[1]} (HxW) but the image "
                    f"is {height}x{width}; {self._label_files(record)}"
                )
            out.append(_resize_labels(layer, self.label_size, self.fit).astype(np.int32))
        sh, sw = self.label_size
        pixel = np.stack(out) if out else np.zeros((0, sh, sw), np.int32)
        return Sample(image, pixel, np.asarray(image_labels, dtype=np.int64))

    def load_labels(self, index: int) -> Sample:
        sample = self[index]  # colours need the image
        sample.image = None
        return sample

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256(f"{CONVERTER_VERSION}\n{self.kind}\n".encode())
            h.update(json.dumps(self.options, sort_keys=True, default=str).encode())
            h.update(f"{self.image_size} {self.fit} {self.colors}\n".encode())
            h.update(self.concepts.fingerprint().encode())
            for r in self.records:
                h.update(f"{r.image_id}|{r.split}|{_file_key(r.image)}\n".encode())
                for p in self._record_files(r):
                    h.update(f"{_file_key(p)}\n".encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def spec(self) -> str:
        return f"{self.kind}:{self.options.get('source')}"

    # -- for subclasses -------------------------------------------------
    def _source_labels(self, record: _Record) -> tuple[list[np.ndarray], list[int]]:
        raise NotImplementedError

    def _record_files(self, record: _Record) -> list[Path]:
        return []

    def _label_files(self, record: _Record) -> str:
        files = self._record_files(record)
        return "label file(s): " + ", ".join(str(p) for p in files) if files else ""


def _color_concepts() -> list[Concept]:
    return [Concept(i + 1, name, "color") for i, name in enumerate(COLOR_CONCEPTS)]


# ---------------------------------------------------------------------------
# Segmentation folders (CamVid and the like)


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


class SegmentationFolders(_ConvertedBase):
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
        concepts = (_color_concepts() if colors else []) + [Concept(number[n], n, category) for n in names]
        self.concepts = ConceptTable(concepts, _ordered_categories((["color"] if colors else []) + [category]))
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
            "category": category, "ignore": sorted(ignored_names), "ignore_values": sorted(int(v) for v in ignore_values),
            "images": images, "labels": labels, "label_suffix": label_suffix,
        }
        self.records = self._find(images, labels, label_suffix)

    def _find(self, images: str, labels: str, suffix: str) -> list[_Record]:
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
        records: list[_Record] = []
        for folder, split in splits:
            image_dir, label_dir = folder / images, folder / labels
            if not label_dir.is_dir():
                raise DatasetError(f"{image_dir} has no matching label folder {label_dir}")
            label_files = {}
            for p in _images_in(label_dir):
                rel = p.relative_to(label_dir).with_suffix("").as_posix()
                if suffix:
                    if not rel.endswith(suffix):
                        continue
                    rel = rel[: -len(suffix)]
                label_files[rel] = p
            image_files = _images_in(image_dir)
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
                records.append(_Record(prefix + rel, split, p, {"label": label_files[rel]}))
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

    def _record_files(self, record: _Record) -> list[Path]:
        return [record.data["label"]]

    def _source_labels(self, record: _Record) -> tuple[list[np.ndarray], list[int]]:
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


# ---------------------------------------------------------------------------
# ADE20K


def _ade_display_names(full: dict[int, str]) -> dict[int, str]:
    """ADE class index -> concept name: the first synonym of the WordNet-style name.

    Two classes with the same first synonym are told apart by their second
    synonym (``plant (flora)``), or else by the index (``plant (1931)``).
    """
    first = {k: v.split(",")[0].strip() for k, v in full.items()}
    counts: dict[str, int] = {}
    for name in first.values():
        counts[name] = counts.get(name, 0) + 1
    out = {}
    for k, name in first.items():
        if counts[name] > 1:
            syns = [s.strip() for s in full[k].split(",")[1:] if s.strip()]
            name = f"{name} ({syns[0]})" if syns else f"{name} ({k})"
        out[k] = name
    taken: dict[str, int] = {}
    for k in sorted(out):
        if out[k] in taken:  # second synonyms collide too
            out[k] = f"{first[k]} ({k})"
        taken[out[k]] = k
    return out


class ADE20KSource(_ConvertedBase):
    """ADE20K in its own format (the 2021 release), as a concept data set.

    ``source`` is searched recursively for ``<stem>_seg.png``; each needs
    ``<stem>.jpg`` and ``<stem>.json`` beside it, and may have part masks
    ``<stem>_parts_1.png``, ``_parts_2.png``, ...  In every mask the class
    index is ``R // 10 * 256 + G`` (0 = unlabelled) and equals ``name_ndx``
    of the JSON's objects; the JSON names it (``"car, auto, automobile"``:
    the concept is called by the first synonym, ``car``).  Objects at
    ``part_level`` 0 are ``object`` concepts (from ``_seg.png``); those at
    level N >= 1 are ``part`` concepts (from ``_parts_N.png``, one label
    layer per level).  The scene is the last entry of the JSON's ``scene``
    list with ``-s`` appended (``['outdoor', 'urban', 'street']`` ->
    ``street-s``), an image-level ``scene`` concept.  A class seen both as
    an object and as a part is one concept, whose primary category is the
    one it occurs in for more images (ties: object).  The split is ``train``
    for paths with a ``training`` folder, ``val`` for ``validation``.
    """

    kind = "ade20k"

    def __init__(self, source: "str | os.PathLike[str]", *, size=224, fit: str = "stretch", colors: bool = True):
        super().__init__(size, fit, colors)
        self.source = Path(source).expanduser()
        if not self.source.is_dir():
            raise DatasetError(f"ADE20K source {self.source} is not a folder")
        segs = sorted(p for p in self.source.rglob("*_seg.png") if not p.name.startswith("."))
        if not segs:
            raise DatasetError(f"ADE20K source {self.source} holds no *_seg.png files")
        full_names: dict[int, str] = {}
        image_counts: dict[int, list[int]] = {}  # index -> [images as object, images as part]
        scenes: list[str | None] = []
        records = []
        for seg in segs:
            stem = seg.name[: -len("_seg.png")]
            image = seg.with_name(stem + ".jpg")
            meta = seg.with_name(stem + ".json")
            for p, what in ((image, "image"), (meta, "annotation")):
                if not p.is_file():
                    raise DatasetError(f"ADE20K mask {seg} has no {what} file {p.name} beside it")
            ann = self._read_json(meta)
            levels_seen: dict[int, set[int]] = {}
            for k, obj in enumerate(ann.get("object", [])):
                try:
                    index, name = int(obj["name_ndx"]), str(obj["name"])
                    level = int((obj.get("parts") or {}).get("part_level", 0))
                except (KeyError, TypeError, ValueError):
                    raise DatasetError(f"{meta}: object {k} lacks a valid name_ndx, name or parts.part_level") from None
                if index < 1 or index > MAX_LABEL:
                    raise DatasetError(f"{meta}: object {k} has name_ndx {index}, outside 1..{MAX_LABEL}")
                if full_names.setdefault(index, name) != name:
                    raise DatasetError(
                        f"{meta}: class {index} is named {name!r}, but another file names it {full_names[index]!r}"
                    )
                levels_seen.setdefault(index, set()).add(level)
            for index, levels in levels_seen.items():
                counts = image_counts.setdefault(index, [0, 0])
                counts[0] += 0 in levels
                counts[1] += any(lv > 0 for lv in levels)
            scene = ann.get("scene") or []
            scenes.append(str(scene[-1]).strip() + "-s" if isinstance(scene, list) and scene and str(scene[-1]).strip()
                          else None)
            parts = []
            level = 1
            while seg.with_name(f"{stem}_parts_{level}.png").is_file():
                parts.append(seg.with_name(f"{stem}_parts_{level}.png"))
                level += 1
            parts_in_path = seg.relative_to(self.source).parts
            split = "val" if "validation" in parts_in_path else "train"
            records.append(_Record(stem, split, image, {"seg": seg, "parts": parts, "json": meta}))
        seen_ids = set()
        for r in records:
            if r.image_id in seen_ids:
                raise DatasetError(f"ADE20K source {self.source} has two images named {r.image_id}")
            seen_ids.add(r.image_id)

        display = _ade_display_names(full_names)
        scene_names = sorted({s for s in scenes if s})
        taken = set(display.values())
        first = len(COLOR_CONCEPTS) + 1 if colors else 1
        concepts = _color_concepts() if colors else []
        self._number = np.zeros(MAX_LABEL + 1, dtype=np.int64)  # ADE index -> label number (0: unnamed)
        number = first
        for category in ("object", "part"):
            for index in sorted(full_names, key=lambda k: display[k]):
                obj_images, part_images = image_counts.get(index, [0, 0])
                primary = "object" if obj_images >= part_images else "part"
                if primary != category:
                    continue
                concepts.append(Concept(number, display[index], category))
                self._number[index] = number
                number += 1
        scene_number = {}
        for s in scene_names:
            name = s if s not in taken else f"{s} (scene)"
            concepts.append(Concept(number, name, "scene"))
            scene_number[s] = number
            number += 1
        cats = (["color"] if colors else []) + ["object", "part"] + (["scene"] if scene_names else [])
        self.concepts = ConceptTable(concepts, _ordered_categories(cats))
        self._known = np.zeros(MAX_LABEL + 1, dtype=bool)
        self._known[list(full_names)] = True
        self._known[0] = True
        for r, s in zip(records, scenes):
            r.data["scene"] = scene_number.get(s) if s else None
        self.records = records
        self.options = {"source": str(self.source.resolve())}

    @staticmethod
    def _read_json(path: Path) -> dict:
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise DatasetError(f"ADE20K annotation {path} cannot be read: {e}") from None
        for encoding in ("utf-8", "latin-1"):  # some ADE20K files are not valid UTF-8
            try:
                obj = json.loads(raw.decode(encoding))
                break
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                error = e
        else:
            raise DatasetError(f"ADE20K annotation {path} is not valid JSON: {error}")
        ann = obj.get("annotation") if isinstance(obj, dict) else None
        if not isinstance(ann, dict):
            raise DatasetError(f"ADE20K annotation {path} has no 'annotation' object")
        return ann

    def _record_files(self, record: _Record) -> list[Path]:
        return [record.data["seg"], *record.data["parts"], record.data["json"]]

    def _map(self, path: Path) -> np.ndarray:
        classes = _read_ade_mask(path)
        if not self._known[classes].all():
            bad = np.unique(classes[~self._known[classes]])
            raise DatasetError(
                f"ADE20K mask {path} holds class index(es) {', '.join(map(str, bad[:10]))} that no annotation "
                f"(.json) under {self.source} names"
            )
        return self._number[classes]

    def _source_labels(self, record: _Record) -> tuple[list[np.ndarray], list[int]]:
        layers = [self._map(record.data["seg"])] + [self._map(p) for p in record.data["parts"]]
        scene = record.data.get("scene")
        return layers, ([scene] if scene else [])


# ---------------------------------------------------------------------------
# Folder per class (DTD and the like)


class ImageFolders(_ConvertedBase):
    """An image-level data set: one folder per class under ``source``.

    Every image in ``source/<class>/`` (recursively) carries the image-level
    concept ``<class><suffix>`` of ``category`` (``texture`` by default; the
    suffix defaults to ``-s`` for ``scene``, as in Broden, and to nothing
    otherwise).  Files directly in ``source`` and hidden folders are
    ignored; a class folder without images raises :class:`DatasetError`.
    All images go to ``split``.
    """

    kind = "folders"

    def __init__(
        self,
        source: "str | os.PathLike[str]",
        *,
        category: str = "texture",
        suffix: str | None = None,
        split: str = "train",
        size=224,
        fit: str = "stretch",
        colors: bool = True,
    ):
        super().__init__(size, fit, colors)
        self.source = Path(source).expanduser()
        if not self.source.is_dir():
            raise DatasetError(f"class-folder source {self.source} is not a folder")
        category = str(category).strip()
        if not category or category == "color" and colors:
            raise ConfigError(f"category={category!r} must be a non-empty name other than 'color'")
        if suffix is None:
            suffix = "-s" if category == "scene" else ""
        folders = sorted(d for d in self.source.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not folders:
            raise DatasetError(f"class-folder source {self.source} has no class folders (one folder per class)")
        first = len(COLOR_CONCEPTS) + 1 if colors else 1
        concepts = _color_concepts() if colors else []
        records = []
        for k, folder in enumerate(folders):
            files = _images_in(folder)
            if not files:
                raise DatasetError(
                    f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); every class needs at "
                    f"least one image"
                )
            concepts.append(Concept(first + k, folder.name + suffix, category))
            for p in files:
                rel = p.relative_to(self.source).with_suffix("").as_posix()
                records.append(_Record(rel, split, p, {"label": first + k}))
        self.concepts = ConceptTable(concepts, _ordered_categories((["color"] if colors else []) + [category]))
        self.records = records
        self.options = {"source": str(self.source.resolve()), "category": category, "suffix": suffix, "split": split}

    def _source_labels(self, record: _Record) -> tuple[list[np.ndarray], list[int]]:
        return [], [record.data["label"]]


# ---------------------------------------------------------------------------
# Merging Broden folders


class MergedBroden:
    """Several Broden-format data sets as one, with one label table.

    Concepts are matched by name across the sources (``tree`` of one and
    ``tree`` of another become one concept; the 11 ``-c`` colours of every
    converted source are one colour category).  A name found in several
    categories gets one concept, whose primary category is the one with the
    largest coverage summed over the sources (as Broden does for a label
    seen as object and as part).  Label numbers are renumbered densely: by
    category (Broden's order), then in order of first appearance.  Every
    source must have the same image and label size.  Image ids are
    ``<source folder name>/<id>``.
    """

    def __init__(self, sources: Sequence["str | os.PathLike[str] | BrodenDataset"]):
        if len(sources) < 1:
            raise DatasetError("merge needs at least one source folder")
        self.sources = [s if isinstance(s, BrodenDataset) else BrodenDataset(s) for s in sources]
        first = self.sources[0]
        for ds in self.sources[1:]:
            if ds.image_size != first.image_size or ds.label_size != first.label_size:
                raise DatasetError(
                    f"cannot merge {ds.root} (images {ds.image_size[0]}x{ds.image_size[1]}, labels "
                    f"{ds.label_size[0]}x{ds.label_size[1]}) with {first.root} (images "
                    f"{first.image_size[0]}x{first.image_size[1]}, labels {first.label_size[0]}x{first.label_size[1]}): "
                    f"all sources need the same sizes; convert them with the same --size"
                )
        self.image_size = first.image_size
        self.label_size = first.label_size
        # Unify by name.
        order: list[str] = []
        coverage: dict[str, dict[str, float]] = {}
        first_cat: dict[str, str] = {}
        for ds in self.sources:
            for c in ds.concepts:
                if c.name not in coverage:
                    order.append(c.name)
                    coverage[c.name] = {}
                    first_cat[c.name] = c.category
                cov = c.coverage or {c.category: 0.0}
                for cat, v in cov.items():
                    if cat in ds.concepts.categories:
                        coverage[c.name][cat] = coverage[c.name].get(cat, 0.0) + float(v)
                coverage[c.name].setdefault(c.category, 0.0)
        categories = _ordered_categories(cat for ds in self.sources for cat in ds.concepts.categories)
        primary = {}
        for name in order:
            cov = coverage[name]
            primary[name] = max(cov, key=lambda c: (cov[c], c == first_cat[name], -categories.index(c)))
        numbered = sorted(order, key=lambda n: (categories.index(primary[n]), order.index(n)))
        self.number = {name: k + 1 for k, name in enumerate(numbered)}
        self.concepts = ConceptTable(
            [Concept(self.number[n], n, primary[n], coverage[n]) for n in numbered],
            [c for c in categories if any(primary[n] == c for n in numbered)] or categories[:1],
        )
        # Per source: old number -> new number.
        self._remap = []
        for ds in self.sources:
            lut = np.zeros(ds.concepts.max_number + 1, dtype=np.int32)
            for c in ds.concepts:
                lut[c.number] = self.number[c.name]
            self._remap.append(lut)
        # Index: (source, index within it) and a prefix per source.
        names = [ds.root.name for ds in self.sources]
        self._prefix = []
        for k, n in enumerate(names):
            self._prefix.append(n if names.count(n) == 1 else f"{n}_{k + 1}")
        self._offsets = np.cumsum([0] + [len(ds) for ds in self.sources])
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __repr__(self) -> str:
        return f"MergedBroden({len(self.sources)} sources, {len(self)} images, {len(self.concepts)} concepts)"

    def _locate(self, index: int) -> tuple[int, int]:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"image index {index} out of range for {n} images")
        s = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return s, i - int(self._offsets[s])

    def _remapped(self, s: int, sample: Sample) -> Sample:
        lut = self._remap[s]
        pixel = lut[sample.pixel_labels] if sample.pixel_labels.size else sample.pixel_labels
        image_labels = lut[sample.image_labels].astype(np.int64) if sample.image_labels.size else sample.image_labels
        return Sample(sample.image, pixel.astype(np.int32, copy=False), image_labels)

    def __getitem__(self, index: int) -> Sample:
        s, i = self._locate(index)
        return self._remapped(s, self.sources[s][i])

    def load_labels(self, index: int) -> Sample:
        s, i = self._locate(index)
        return self._remapped(s, self.sources[s].load_labels(i))

    def image_id(self, index: int) -> str:
        s, i = self._locate(index)
        return f"{self._prefix[s]}/{self.sources[s].image_id(i)}"

    def split_name(self, index: int) -> str:
        s, i = self._locate(index)
        return self.sources[s].split_name(i)

    def image_file(self, index: int) -> Path:
        """The source's encoded image file (copied as is by :func:`write_broden` when the format matches)."""
        s, i = self._locate(index)
        return self.sources[s].image_path(i)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256(b"netdissect-merged-1\n")
            for ds in self.sources:
                h.update(ds.fingerprint().encode())
            h.update(self.concepts.fingerprint().encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def spec(self) -> str:
        return "merged:" + "+".join(str(ds.root) for ds in self.sources)


# ---------------------------------------------------------------------------
# One-call converters


def _write(dataset, out, image_format, quality, workers, progress, overwrite) -> Path:
    return write_broden(dataset, out, image_format=image_format, quality=quality, workers=workers,
                        progress=progress, overwrite=overwrite)


def convert_segmentation(source, out, *, classes, category="object", size=224, fit="stretch",
                         ignore=DEFAULT_IGNORE, ignore_values=(), images="images", labels="labels",
                         label_suffix="", colors=True, image_format="jpg", quality=95, workers=0,
                         progress=False, overwrite=False) -> Path:
    """Convert a segmentation data set (see :class:`SegmentationFolders`) into a Broden folder ``out``."""
    ds = SegmentationFolders(source, classes, category=category, size=size, fit=fit, ignore=ignore,
                             ignore_values=ignore_values, images=images, labels=labels, label_suffix=label_suffix,
                             colors=colors)
    return _write(ds, out, image_format, quality, workers, progress, overwrite)


def convert_ade20k(source, out, *, size=224, fit="stretch", colors=True, image_format="jpg", quality=95,
                   workers=0, progress=False, overwrite=False) -> Path:
    """Convert ADE20K (see :class:`ADE20KSource`) into a Broden folder ``out``."""
    ds = ADE20KSource(source, size=size, fit=fit, colors=colors)
    return _write(ds, out, image_format, quality, workers, progress, overwrite)


def convert_folders(source, out, *, category="texture", suffix=None, split="train", size=224, fit="stretch",
                    colors=True, image_format="jpg", quality=95, workers=0, progress=False,
                    overwrite=False) -> Path:
    """Convert a folder-per-class data set (see :class:`ImageFolders`) into a Broden folder ``out``."""
    ds = ImageFolders(source, category=category, suffix=suffix, split=split, size=size, fit=fit, colors=colors)
    return _write(ds, out, image_format, quality, workers, progress, overwrite)


def merge_broden(sources, out, *, image_format="jpg", quality=95, workers=0, progress=False,
                 overwrite=False) -> Path:
    """Merge Broden folders (see :class:`MergedBroden`) into one Broden folder ``out``.

    Images whose file format matches ``image_format`` are copied byte for
    byte; label maps are renumbered and written again.
    """
    ds = MergedBroden(sources)
    return _write(ds, out, image_format, quality, workers, progress, overwrite)


__all__ = [
    "ADE20KSource",
    "CATEGORY_ORDER",
    "DEFAULT_IGNORE",
    "ImageFolders",
    "MergedBroden",
    "SegmentationFolders",
    "convert_ade20k",
    "convert_folders",
    "convert_segmentation",
    "label_sample_index",
    "merge_broden",
    "read_class_list",
    "read_class_map",
]
