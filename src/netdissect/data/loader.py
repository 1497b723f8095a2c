"""Batches of images and labels from a concept data set, decoded in workers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .protocol import ConceptDataset


@dataclass
class Batch:
    """indices: (B,) data set indices; images: (B, 3, H, W) uint8 RGB or None;
    pixel_labels: (B, L, sh, sw) int64; image_labels: (B, M) int64 (0 pads)."""

    indices: torch.Tensor
    images: torch.Tensor | None
    pixel_labels: torch.Tensor
    image_labels: torch.Tensor

    def pin_memory(self) -> "Batch":
        return Batch(
            self.indices.pin_memory(),
            self.images.pin_memory() if self.images is not None else None,
            self.pixel_labels.pin_memory(),
            self.image_labels.pin_memory(),
        )


class _Indexed(Dataset):
    def __init__(self, dataset: ConceptDataset, indices: Sequence[int], labels_only: bool):
        self.dataset, self.indices, self.labels_only = dataset, list(indices), labels_only

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        sample = self.dataset.load_labels(index) if self.labels_only else self.dataset[index]
        return index, sample


def collate(items) -> Batch:
    indices = torch.tensor([i for i, _ in items], dtype=torch.int64)
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
    """A DataLoader over ``indices`` in order (never shuffled: runs are reproducible)."""
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
