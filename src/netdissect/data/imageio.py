"""Reading and writing images and Broden label PNGs.

A Broden label PNG stores label number ``R + 256 * G`` per pixel (0 = no
label); blue is unused.  Other PNG modes are read as follows: palette images
are converted to RGB first (as the original tools' ``imread`` did); 8- and
16-bit grey images hold the label number directly; a 1-bit image holds 0/1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DatasetError

#: the largest label number a label PNG can hold
MAX_LABEL = 256 * 256 - 1


def _open(path: Path, what: str) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
    except FileNotFoundError:
        raise DatasetError(f"{what} {path} does not exist") from None
    except Image.DecompressionBombError as e:
        raise DatasetError(f"{what} {path} is too large to decode safely ({e}); resize it, or raise "
                           "PIL.Image.MAX_IMAGE_PIXELS if you trust the file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"{what} {path} cannot be read as an image: {e}") from None
    return im


def read_rgb(path: "str | Path", size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file as (H, W, 3) uint8 RGB.

    Grey, palette, CMYK and alpha images are converted (alpha is dropped).
    ``size`` = (H, W) checks the decoded size and raises if it differs.
    """
    path = Path(path)
    im = _open(path, "image")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: keep the top 8 bits rather than clipping.
        arr = np.asarray(im, dtype=np.int64)
        arr = (arr >> 8 if arr.max(initial=0) > 255 else arr).astype(np.uint8)
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    else:
        if im.mode != "RGB":
            im = im.convert("RGB")
        arr = np.asarray(im, dtype=np.uint8)
    if size is not None and arr.shape[:2] != tuple(size):
        raise DatasetError(
            f"image {path} is {arr.shape[0]}x{arr.shape[1]} (HxW) but the data set says {size[0]}x{size[1]}"
        )
    return arr


def read_label_png(path: "str | Path", size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a label PNG as (H, W) int32 label numbers (``R + 256 * G``).

    ``size`` = (H, W) checks the size and raises :class:`DatasetError`
    naming the file and both sizes if it differs.
    """
    path = Path(path)
    im = _open(path, "label PNG")
    mode = im.mode
    if mode in ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L"):
        if mode == "LA":
            im = im.getchannel("L")
        arr = np.asarray(im).astype(np.int32)
    else:
        if mode not in ("RGB", "RGBA"):
            im = im.convert("RGB")
        rgb = np.asarray(im)
        arr = rgb[:, :, 0].astype(np.int32)
        arr += rgb[:, :, 1].astype(np.int32) << 8
    if size is not None and arr.shape != tuple(size):
        raise DatasetError(
            f"label PNG {path} is {arr.shape[0]}x{arr.shape[1]} (HxW) but the data set's label size "
            f"(sh x sw) is {size[0]}x{size[1]}"
        )
    return arr


def encode_label_rgb(labels: np.ndarray) -> np.ndarray:
    """(H, W) label numbers -> (H, W, 3) uint8 with R = n % 256, G = n // 256, B = 0."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > MAX_LABEL):
        raise DatasetError(
            f"label numbers must be in 0..{MAX_LABEL} to fit a label PNG; got {labels.min()}..{labels.max()}"
        )
    out = np.zeros(labels.shape + (3,), dtype=np.uint8)
    out[:, :, 0] = labels & 255
    out[:, :, 1] = labels >> 8
    return out


def write_label_png(path: "str | Path", labels: np.ndarray) -> None:
    """Write (H, W) label numbers as a Broden label PNG (R + 256 * G)."""
    Image.fromarray(encode_label_rgb(labels), "RGB").save(path, format="PNG", compress_level=1)


def write_rgb(path: "str | Path", image: np.ndarray, *, quality: int = 95) -> None:
    """Write an (H, W, 3) uint8 image; the format follows the file suffix (.jpg/.jpeg or .png).

    JPEG at ``quality >= 90`` is written without chroma subsampling (4:4:4).
    """
    path = Path(path)
    im = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        # Full-resolution chroma at high quality keeps colour edges on the labels.
        im.save(path, format="JPEG", quality=int(quality), subsampling=0 if quality >= 90 else -1)
    else:
        im.save(path, format="PNG", compress_level=1)


__all__ = ["MAX_LABEL", "read_rgb", "read_label_png", "encode_label_rgb", "write_label_png", "write_rgb"]
