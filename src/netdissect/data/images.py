"""A folder of unlabelled photos, as a data set without concept labels.

With a segmenter (:mod:`netdissect.segment`) any folder of photos becomes
concept data: the PNAS 2020 protocol (Bau et al. 2020) labels the images with
a segmentation model instead of human annotations.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError
from .imageio import read_rgb
from .protocol import ConceptTable, Sample

#: file suffixes read as images
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursively), sorted by relative path."""
    return sorted((p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                  key=lambda p: p.relative_to(root).as_posix())


class ImageFiles:
    """Every image under a folder, resized (whole, not cropped) to ``size`` x ``size``.

    Samples carry no labels (``pixel_labels`` is (0, size, size), no
    image-level labels); the concept table is empty.  Image ids are paths
    relative to the folder.

    Parameters
    ----------
    root : str or Path
        The folder (searched recursively for .jpg, .png, ... files).
    size : int
        Side of the square images (Pillow bicubic, as the converters resize).

    Raises
    ------
    DatasetError
        When ``root`` is not a folder or holds no image.
    """

    def __init__(self, root: str | Path, size: int = 224):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"image folder {str(self.root)!r} does not exist")
        self.files = list_images(self.root)
        if not self.files:
            raise DatasetError(
                f"image folder {str(self.root)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
            )
        self.size = int(size)
        self.image_size = (self.size, self.size)
        self.label_size = (self.size, self.size)
        self.concepts = ConceptTable([], ())

    def __len__(self) -> int:
        return len(self.files)

    def _image(self, index: int) -> np.ndarray:
        arr = read_rgb(self.files[index])
        if arr.shape[:2] != self.image_size:
            arr = np.asarray(Image.fromarray(arr).resize((self.size, self.size), Image.Resampling.BICUBIC))
        return arr

    def __getitem__(self, index: int) -> Sample:
        return Sample(self._image(index), np.zeros((0, *self.label_size), np.int32), np.zeros(0, np.int64))

    def load_labels(self, index: int) -> Sample:
        """An empty label sample (``image`` is None, no label layers, no image labels)."""
        return Sample(None, np.zeros((0, *self.label_size), np.int32), np.zeros(0, np.int64))

    def image_id(self, index: int) -> str:
        """The file's path relative to the folder (POSIX separators)."""
        return self.files[index].relative_to(self.root).as_posix()

    def fingerprint(self) -> str:
        """SHA-256 hex digest over every file's relative path and bytes, and the size."""
        h = hashlib.sha256(f"images|size={self.size}".encode())
        for path in self.files:
            h.update(path.relative_to(self.root).as_posix().encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()

    def spec(self) -> str:
        """The folder's path, with ``?size=N`` when the size is not the default 224."""
        return str(self.root) if self.size == 224 else f"{self.root}?size={self.size}"
