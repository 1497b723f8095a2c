"""The labeling stage: turn a layer's finished statistics into one label per unit.

A labeler has a ``method`` name (the run directory keeps one label table per
method) and a ``label`` function from a :class:`LayerResult` to a table with
one row per unit.  Labels from several methods (IoU against concept masks,
words from an image-text model) sit side by side in a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from ..data.protocol import ConceptTable

#: columns every label table has (``unit`` 1-based), plus method-specific ones
LABEL_COLUMNS = ("unit", "label", "score")


@dataclass
class LayerResult:
    """Everything a dissection measured for one layer (arrays indexed by 0-based unit).

    Attributes
    ----------
    name : str
        The layer.
    units : int
        U, its channels.
    grid : tuple of int
        (h, w) of its maps.
    thresholds : numpy.ndarray
        (U,) float64 activation thresholds.
    threshold_method : dict
        How the thresholds were computed (exact or sampled, error bound).
    iou : numpy.ndarray
        (U, L) float64, column = label number.
    intersect : numpy.ndarray
        (U, L) int64 intersections.
    denominator_pixels : numpy.ndarray
        (U, G) float64 mask-size term of the IoU denominator per category.
    mask_pixels : numpy.ndarray
        (U,) int64 mask pixels over the data set.
    truth : numpy.ndarray
        (L,) int64 labelled pixels per label number.
    top_indices, top_scores, top_maps : numpy.ndarray
        (U, n) int64 (-1 = empty), (U, n) float32, (U, n, h, w) float32: the
        top-activating images, their scores and activation maps.
    """

    name: str
    units: int
    grid: tuple[int, int]
    thresholds: np.ndarray
    threshold_method: dict[str, Any]
    iou: np.ndarray
    intersect: np.ndarray
    denominator_pixels: np.ndarray
    mask_pixels: np.ndarray
    truth: np.ndarray
    top_indices: np.ndarray
    top_scores: np.ndarray
    top_maps: np.ndarray


@runtime_checkable
class Labeler(Protocol):
    """Labels every unit of a layer.

    Attributes
    ----------
    method : str
        The method's name (``"iou"``, ...), used for its label table's file.
    """

    method: str

    def label(self, result: LayerResult, concepts: ConceptTable) -> pd.DataFrame:
        """One row per unit with at least the columns of :data:`LABEL_COLUMNS`."""
