"""What every converter shares: resizing, label sampling, the converted data set base class.

**Resizing** (the same for every converter).  Images are resized to
``size`` x ``size`` (any size from 2; Broden's are 224 and 227) and labels
to ``size // 2`` (112 and 113 for those):

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from ...errors import ConfigError, DatasetError
from ..broden import write_broden
from ..colornames import COLOR_CONCEPTS, color_map
from ..protocol import Concept, ConceptTable, Sample

#: the categories of the original Broden, in its order; others follow these
CATEGORY_ORDER = ("color", "object", "part", "material", "scene", "texture")
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


def open_image(path: Path, what: str = "image") -> Image.Image:
    """Open ``path`` with Pillow (lazily, not yet decoded).

    Parameters
    ----------
    path : pathlib.Path
        The file.
    what : str
        How error messages call the file ("image", "label map"...).

    Returns
    -------
    PIL.Image.Image
        The opened image; the caller closes it.

    Raises
    ------
    DatasetError
        When the file does not exist or is not an image Pillow can identify.
    """
    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise DatasetError(f"{what} {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"{what} {path} cannot be read as an image: {e}") from None
    return im


def _load_resized_image(path: Path, size: tuple[int, int], fit: str) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``path`` and resize it; returns ((H, W, 3) uint8, source (height, width))."""
    im = open_image(path)
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


def images_in(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, hidden names skipped."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES):
                out.append(Path(root) / f)
    return out


def ordered_categories(categories: Iterable[str]) -> list[str]:
    """Distinct ``categories``: those of :data:`CATEGORY_ORDER` in its order, then the rest as given."""
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
class Record:
    """One source image: its id, split, image file, and what the converter needs to label it."""

    image_id: str
    split: str
    image: Path
    data: dict = field(default_factory=dict)


class ConvertedDataset:
    """A concept data set made from source files: resizing and colour naming shared by the converters.

    Subclasses set ``records``, ``concepts``, ``kind`` and ``options`` and
    implement ``_source_labels(record) -> (layers, image_labels)`` where
    layers are (H, W) int arrays of *label numbers* at source resolution.

    Parameters
    ----------
    size : int or tuple of int
        Image size: a side, or (H, W), each at least 2; labels are half of it.
    fit : str
        "stretch" (resize the whole image) or "crop" (the centred square).
    colors : bool
        Add a first label layer naming each pixel's colour (numbers 1..11).

    Raises
    ------
    ConfigError
        For a bad ``size`` or ``fit``.
    """

    kind = "converted"

    def __init__(self, size, fit: str, colors: bool):
        self.image_size = _square_size(size)
        self.label_size = (self.image_size[0] // 2, self.image_size[1] // 2)
        self.fit = _check_fit(fit)
        self.colors = bool(colors)
        self.records: list[Record] = []
        self.concepts: ConceptTable
        self.options: dict = {}
        self._fingerprint: str | None = None

    # -- protocol --------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {len(self.concepts)} concepts)"

    def _record(self, index: int) -> Record:
        n = len(self.records)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"image index {index} out of range for {n} images")
        return self.records[i]

    def image_id(self, index: int) -> str:
        """The record's image id."""
        return self._record(index).image_id

    def split_name(self, index: int) -> str:
        """The record's split."""
        return self._record(index).split

    def source_image(self, index: int) -> Path:
        """The source image file of image ``index``."""
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
        """The labels of image ``index`` (``image`` is None); the image is still decoded, for the colours."""
        sample = self[index]  # colours need the image
        sample.image = None
        return sample

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the converter version, options, sizes, concepts and source files.

        Source files enter by path, size and modification time, not content;
        the digest is computed once and cached.
        """
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
        """``KIND:SOURCE``, naming the converter and its source folder."""
        return f"{self.kind}:{self.options.get('source')}"

    # -- for subclasses -------------------------------------------------
    def _source_labels(self, record: Record) -> tuple[list[np.ndarray], list[int]]:
        raise NotImplementedError

    def _record_files(self, record: Record) -> list[Path]:
        return []

    def _label_files(self, record: Record) -> str:
        files = self._record_files(record)
        return "label file(s): " + ", ".join(str(p) for p in files) if files else ""


def color_concepts() -> list[Concept]:
    """The eleven colour concepts, numbers 1..11 in :data:`COLOR_CONCEPTS` order, category "color"."""
    return [Concept(i + 1, name, "color") for i, name in enumerate(COLOR_CONCEPTS)]


# ---------------------------------------------------------------------------
# Writing


def write_converted(dataset, out, image_format, quality, workers, progress, overwrite) -> Path:
    """Write a converted data set with :func:`~netdissect.data.broden.write_broden`; returns the folder."""
    return write_broden(dataset, out, image_format=image_format, quality=quality, workers=workers,
                        progress=progress, overwrite=overwrite)


__all__ = [
    "CATEGORY_ORDER",
    "CONVERTER_VERSION",
    "FITS",
    "IMAGE_SUFFIXES",
    "ConvertedDataset",
    "Record",
    "color_concepts",
    "images_in",
    "label_sample_index",
    "open_image",
    "ordered_categories",
    "write_converted",
]
