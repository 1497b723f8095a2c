"""The segmenter protocol: images in, concept label maps out.

A segmenter turns a batch of RGB images into pixel label layers (and,
optionally, image-level labels) numbered in its own :class:`ConceptTable`.
Any folder of photos becomes concept data this way (the PNAS 2020 protocol,
Bau et al. 2020, "Understanding the role of individual units", section
"Dissecting a classifier"), and so does every image a generator draws.

Label number 0 always means "no label", as in Broden.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ..data.protocol import ConceptTable


@dataclass
class Segmentation:
    """The labels a segmenter made for a batch.

    Attributes
    ----------
    pixel_labels : torch.Tensor
        (N, L, h, w) int64 label numbers of the segmenter's concept table at
        its ``label_size``; 0 = no label; L >= 1 label layers.
    image_labels : torch.Tensor
        (N, M) int64 image-level label numbers, 0 pads; M >= 1.
    """

    pixel_labels: torch.Tensor
    image_labels: torch.Tensor


@runtime_checkable
class Segmenter(Protocol):
    """What the engine needs from a segmenter.

    Implementations: :class:`~netdissect.segment.color.ColorSegmenter`,
    :class:`~netdissect.segment.oracle.OracleSegmenter`,
    :class:`~netdissect.segment.module.ModuleSegmenter` (torchvision models
    and user networks); open one by spec with
    :func:`netdissect.segment.load_segmenter`.

    Attributes
    ----------
    concepts : ConceptTable
        The label numbers it produces, with names and categories.
    """

    concepts: ConceptTable

    def label_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The size of the label maps made for images of ``image_size``.

        Parameters
        ----------
        image_size : (int, int)
            (H, W) of the images.

        Returns
        -------
        (int, int)
            (h, w) of ``Segmentation.pixel_labels``.
        """

    def segment(self, images: torch.Tensor, indices: torch.Tensor | None = None) -> Segmentation:
        """Label a batch.

        Parameters
        ----------
        images : torch.Tensor
            (N, 3, H, W) uint8 RGB, on the segmenter's device.
        indices : torch.Tensor, optional
            (N,) int64 data set indices of the images (only an oracle uses them).

        Returns
        -------
        Segmentation
            Labels at ``label_size((H, W))``, on the images' device.
        """

    def to(self, device: torch.device | str) -> "Segmenter":
        """Move to ``device`` and return self.

        Parameters
        ----------
        device : torch.device or str

        Returns
        -------
        Segmenter
            self.
        """

    def spec(self) -> str:
        """A string that :func:`netdissect.segment.load_segmenter` opens again.

        Returns
        -------
        str
        """

    def fingerprint(self) -> str:
        """A content key: equal keys mean the same labels for the same images.

        Returns
        -------
        str
        """
