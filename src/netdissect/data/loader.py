"""Batches of images and labels from a concept data set, decoded in workers.

An error raised while loading a sample (an unreadable image, a wrong size,
in a worker process or not) travels to the main process inside the batch and
is raised there as itself, so the user sees its one-line message rather than
DataLoader's re-wrapped traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DatasetError, NetDissectError
from .protocol import ConceptDataset, Sample


@dataclass
class Batch:
    """A batch of samples, as tensors, or the error met while loading it.

    Attributes
    ----------
    indices : torch.Tensor
        (B,) int64 data set indices.
    images : torch.Tensor or None
        (B, 3, H, W) uint8 RGB images; None for labels-only batches.
    pixel_labels : torch.Tensor
        (B, L, sh, sw) int64 label numbers, layers padded with 0 (L >= 1).
    image_labels : torch.Tensor
        (B, M) int64 image-level label numbers, padded with 0 (M >= 1).
    error : NetDissectError or None
        The error raised while loading a sample; the tensors are then empty.
    """

    indices: torch.Tensor
    images: torch.Tensor | None
    pixel_labels: torch.Tensor
    image_labels: torch.Tensor
    error: NetDissectError | None = None

    def pin_memory(self) -> "Batch":
        """A copy in pinned memory (for faster transfers to a GPU)."""
        if self.error is not None:
            return self
        return Batch(
            self.indices.pin_memory(),
            self.images.pin_memory() if self.images is not None else None,
            self.pixel_labels.pin_memory(),
            self.image_labels.pin_memory(),
        )

    def raise_error(self) -> None:
        """Raise the error met while loading this batch, if any (in the main process)."""
        if self.error is not None:
            raise self.error


class _Indexed(Dataset):
    def __init__(self, dataset: ConceptDataset, indices: Sequence[int], labels_only: bool):
        self.dataset, self.indices, self.labels_only = dataset, list(indices), labels_only

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        try:
            sample = self.dataset.load_labels(index) if self.labels_only else self.dataset[index]
            check_sample(self.dataset, index, sample)
        except NetDissectError as exc:  # raised again in the main process, as itself
            return index, exc
        return index, sample


def check_sample(dataset: ConceptDataset, index: int, sample: Sample) -> None:
    """Check a sample against the data set's declared image and label sizes.

    Raises
    ------
    DatasetError
        Naming the image and the sizes, when they differ.
    """
    def name() -> str:
        try:
            return repr(dataset.image_id(index))
        except Exception:  # the id itself may be what is broken
            return f"number {index}"

    ih, iw = dataset.image_size
    if sample.image is not None and tuple(np.shape(sample.image)) != (ih, iw, 3):
        raise DatasetError(f"image {name()} is {tuple(np.shape(sample.image))}, but the data set declares images of "
                           f"({ih}, {iw}, 3) (H, W, RGB)")
    labels = np.asarray(sample.pixel_labels)
    if labels.ndim != 3 or (labels.shape[0] and tuple(labels.shape[1:]) != tuple(dataset.label_size)):
        raise DatasetError(f"pixel labels of image {name()} have shape {labels.shape}, but the data set declares "
                           f"(layers, {dataset.label_size[0]}, {dataset.label_size[1]})")
    if np.asarray(sample.image_labels).ndim != 1:
        raise DatasetError(f"image-level labels of image {name()} must be a 1-D list of label numbers, got shape "
                           f"{np.shape(sample.image_labels)}")


def collate(items) -> Batch:
    """Stack samples into a :class:`Batch`, padding label layers and image-level labels with 0."""
    indices = torch.tensor([i for i, _ in items], dtype=torch.int64)
    for _, s in items:
        if isinstance(s, NetDissectError):
            empty = torch.zeros(0, dtype=torch.int64)
            return Batch(indices, None, empty, empty, error=s)
    samples = [s for _, s in items]
    images = None
    if samples[0].image is not None:
        images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).contiguous()
    layers = max(s.pixel_labels.shape[0] for s in samples)
    sh, sw = samples[0].pixel_labels.shape[-2:]
    pixel = np.zeros((len(samples), max(layers, 1), sh, sw), dtype=np.int64)
    for row, s in enumerate(samples):
        pixel[row, : s.pixel_labels.shape[0]] = s.pixel_labels
    width = max(max((len(s.image_labels) for s in samples), default=0), 1)
    image_labels = np.zeros((len(samples), width), dtype=np.int64)
    for row, s in enumerate(samples):
        image_labels[row, : len(s.image_labels)] = s.image_labels
    return Batch(indices, images, torch.from_numpy(pixel), torch.from_numpy(image_labels))


def batches(
    dataset: ConceptDataset,
    indices: Sequence[int],
    *,
    batch_size: int,
    num_workers: int = 0,
    labels_only: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``indices`` in order (never shuffled: runs are reproducible).

    Parameters
    ----------
    dataset : ConceptDataset
        The data set.
    indices : sequence of int
        Data set indices, in the order the batches should follow.
    batch_size : int
        Samples per batch.
    num_workers : int
        Worker processes (0: load in the main process).
    labels_only : bool
        Load with ``dataset.load_labels`` (``Batch.images`` is None).
    pin_memory : bool
        Pin batches in memory for faster GPU transfers.

    Returns
    -------
    torch.utils.data.DataLoader
        Yields :class:`Batch` es; call :meth:`Batch.raise_error` on each.
    """
    return DataLoader(
        _Indexed(dataset, indices, labels_only),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )
