"""A concept data set held in arrays: for tests, notebooks and generated data."""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from ..errors import DatasetError
from .protocol import ConceptTable, Sample


class ArrayConcepts:
    """Concept data from arrays.

    Parameters
    ----------
    images : numpy.ndarray
        (N, H, W, 3) uint8 RGB images.
    pixel_labels : numpy.ndarray
        (N, L, sh, sw) integer label numbers (0: none), stored as int32.
    concepts : ConceptTable
        Names and categories of the label numbers.
    image_labels : sequence of sequence of int, optional
        Per image, the label numbers covering the whole image (None: none).
    name : str
        Prefix of :meth:`image_id` and :meth:`spec`.

    Raises
    ------
    DatasetError
        For arrays of the wrong shape or dtype, or a wrong number of
        ``image_labels`` entries.
    """

    def __init__(
        self,
        images: np.ndarray,
        pixel_labels: np.ndarray,
        concepts: ConceptTable,
        image_labels: Sequence[Sequence[int]] | None = None,
        name: str = "arrays",
    ):
        images = np.asarray(images)
        pixel_labels = np.asarray(pixel_labels)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise DatasetError(f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
        if pixel_labels.ndim != 4 or pixel_labels.shape[0] != images.shape[0]:
            raise DatasetError(
                f"pixel_labels must be (N, L, sh, sw) with N={images.shape[0]}, got {pixel_labels.shape}"
            )
        self.images = images
        self.pixel_labels = pixel_labels.astype(np.int32)
        n = images.shape[0]
        self.image_labels = [
            np.asarray(x if x is not None else [], dtype=np.int64) for x in (image_labels or [None] * n)
        ]
        if len(self.image_labels) != n:
            raise DatasetError(f"image_labels has {len(self.image_labels)} entries for {n} images")
        self.concepts = concepts
        self.image_size = tuple(images.shape[1:3])
        self.label_size = tuple(pixel_labels.shape[2:4])
        self.name = name

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Sample:
        return Sample(self.images[index], self.pixel_labels[index], self.image_labels[index])

    def load_labels(self, index: int) -> Sample:
        """The labels of image ``index`` (``image`` is None)."""
        return Sample(None, self.pixel_labels[index], self.image_labels[index])

    def image_id(self, index: int) -> str:
        """``NAME/INDEX``."""
        return f"{self.name}/{index}"

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the arrays' shapes and bytes and the concept table."""
        h = hashlib.sha256()
        for a in (self.images, self.pixel_labels, *self.image_labels):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(self.concepts.fingerprint().encode())
        return h.hexdigest()

    def spec(self) -> str:
        """``NAME:`` and the first 16 hex digits of the fingerprint (a record; not a name open_dataset knows)."""
        return f"{self.name}:{self.fingerprint()[:16]}"
