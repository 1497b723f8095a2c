"""The stored labels of a concept data set as a segmenter: :class:`OracleSegmenter` (spec ``oracle``).

An oracle "segments" an image by looking its labels up in the data set it
came from, so a dissection that takes its labels from a segmenter can be
checked against one that reads them directly: both must give the same
numbers.  It needs the data set indices of the images.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError
from .base import Segmentation
from .registry import check_options, register_segmenter


class OracleSegmenter:
    """Returns the labels a :class:`~netdissect.data.protocol.ConceptDataset` stores.

    Parameters
    ----------
    dataset : ConceptDataset
        The data set; its ``concepts`` and ``label_size`` are the oracle's.

    Attributes
    ----------
    concepts : ConceptTable
        The data set's concept table.
    dataset : ConceptDataset

    Raises
    ------
    ConfigError
        If ``dataset`` lacks ``concepts``, ``label_size`` or ``load_labels``.
    """

    def __init__(self, dataset):
        missing = [a for a in ("concepts", "label_size", "load_labels") if not hasattr(dataset, a)]
        if missing:
            raise ConfigError(
                f"OracleSegmenter needs a concept data set (with concepts, label_size and load_labels); "
                f"got {type(dataset).__name__}, which lacks {', '.join(missing)}"
            )
        self.dataset = dataset
        self.concepts = dataset.concepts
        self.device = torch.device("cpu")

    def __repr__(self) -> str:
        return f"OracleSegmenter({self.dataset!r})"

    def label_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The data set's label size (sh, sw), whatever the image size.

        Parameters
        ----------
        image_size : (int, int)
            (H, W); not used.

        Returns
        -------
        (int, int)
        """
        return tuple(int(v) for v in self.dataset.label_size)

    def segment(
        self,
        images: "torch.Tensor | None" = None,
        indices: "torch.Tensor | Sequence[int] | None" = None,
    ) -> Segmentation:
        """The stored labels of the images at ``indices``.

        Label layers and image labels are padded with 0 to the largest count
        in the batch, as :func:`netdissect.data.loader.collate` does.

        Parameters
        ----------
        images : torch.Tensor, optional
            (N, 3, H, W) images; only their count and device are used.
        indices : torch.Tensor or sequence of int
            (N,) data set indices of the images (required).

        Returns
        -------
        Segmentation
            ``pixel_labels`` (N, L, sh, sw) int64 with L = max(1, most layers
            in the batch), ``image_labels`` (N, M) int64 with M = max(1, most
            image labels); on the images' device (else the segmenter's).

        Raises
        ------
        ConfigError
            If ``indices`` is missing or its length differs from the number
            of images.
        IndexError
            If an index is outside the data set.
        """
        if indices is None:
            raise ConfigError(
                "OracleSegmenter.segment needs indices= (the data set indices of the images): "
                "an oracle looks the labels up in its data set"
            )
        index_list = [int(i) for i in (indices.reshape(-1).tolist() if isinstance(indices, torch.Tensor) else indices)]
        if images is not None and images.shape[0] != len(index_list):
            raise ConfigError(
                f"OracleSegmenter.segment: {images.shape[0]} images but {len(index_list)} indices"
            )
        device = images.device if images is not None else self.device
        sh, sw = self.label_size((0, 0))
        samples = [self.dataset.load_labels(i) for i in index_list]
        layers = max([np.asarray(s.pixel_labels).shape[0] for s in samples] + [1])
        pixel = np.zeros((len(samples), layers, sh, sw), dtype=np.int64)
        for row, s in enumerate(samples):
            labels = np.asarray(s.pixel_labels)
            pixel[row, : labels.shape[0]] = labels
        width = max([len(s.image_labels) for s in samples] + [1])
        image_labels = np.zeros((len(samples), width), dtype=np.int64)
        for row, s in enumerate(samples):
            image_labels[row, : len(s.image_labels)] = s.image_labels
        return Segmentation(torch.from_numpy(pixel).to(device), torch.from_numpy(image_labels).to(device))

    def to(self, device: "torch.device | str") -> "OracleSegmenter":
        """Make labels on ``device`` when no images are given.

        Parameters
        ----------
        device : torch.device or str

        Returns
        -------
        OracleSegmenter
            self.
        """
        self.device = torch.device(device)
        return self

    def spec(self) -> str:
        """``oracle`` (opened again with the same ``dataset=``).

        Returns
        -------
        str
        """
        return "oracle"

    def fingerprint(self) -> str:
        """A key over the data set's own fingerprint.

        Returns
        -------
        str
            A sha256 hex digest.
        """
        inner = self.dataset.fingerprint() if hasattr(self.dataset, "fingerprint") else repr(self.dataset)
        return hashlib.sha256(f"netdissect-oracle-segmenter-1|{inner}".encode()).hexdigest()


@register_segmenter("oracle")
def _oracle(arg: str, options: dict[str, str], *, dataset=None, weights=None, spec: str = "oracle") -> OracleSegmenter:
    if arg:
        raise ConfigError(f"segmenter spec {spec!r}: 'oracle' takes no argument after ':'")
    if weights is not None:
        raise ConfigError(f"segmenter spec {spec!r}: the oracle takes no weights (got weights={str(weights)!r})")
    check_options(spec, options, [])
    if dataset is None:
        raise ConfigError(
            f"segmenter spec {spec!r}: the oracle returns a data set's stored labels and needs "
            "load_segmenter('oracle', dataset=...)"
        )
    return OracleSegmenter(dataset)


__all__ = ["OracleSegmenter"]
