"""IoU labels (Bau et al. 2017, section 3; NetDissect-Lite's ``tally.csv``).

A unit's label is its best concept within each category, ties going to the
lower label number, then the best category; a unit is a detector when that
IoU exceeds the cut-off (0.04).  :func:`is_detector` is the one place where
the cut-off rule lives.  Unique detectors are counted under two conventions
(:data:`CONVENTIONS`):

- ``per-category``: a unit counts in category g when its best g-label
  exceeds the cut-off (the CVPR 2017 tables);
- ``top-label``: a unit counts only in the category of its overall label
  (the original report's bar chart).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data.protocol import ConceptTable
from .base import LayerResult

#: the two conventions for counting unique detectors per category
CONVENTIONS = ("per-category", "top-label")
#: the default detector cut-off (Bau et al. 2017)
IOU_THRESHOLD = 0.04


def is_detector(iou, threshold: float = IOU_THRESHOLD):
    """The detector rule: IoU strictly above the cut-off.

    Parameters
    ----------
    iou : float, numpy.ndarray or pandas.Series
        Best IoU of one or many units.
    threshold : float
        The cut-off.

    Returns
    -------
    bool or boolean array/Series of ``iou``'s shape.
    """
    return iou > threshold


def best_per_category(iou: np.ndarray, concepts: ConceptTable) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's best label number and its IoU per category.

    Parameters
    ----------
    iou : numpy.ndarray
        (U, L) IoU, column = label number.
    concepts : ConceptTable
        Gives each label's primary category.

    Returns
    -------
    labels, scores : numpy.ndarray
        (U, G) int64 label numbers and (U, G) float64 IoUs; ties go to the
        lower label number; 0 / 0.0 for a category without concepts.
    """
    cat = concepts.category_index()
    units = iou.shape[0]
    labels = np.zeros((units, len(concepts.categories)), dtype=np.int64)
    scores = np.zeros((units, len(concepts.categories)), dtype=np.float64)
    for g in range(len(concepts.categories)):
        cols = np.flatnonzero(cat == g)
        if cols.size == 0:
            continue
        sub = iou[:, cols]
        arg = np.argmax(sub, axis=1)  # first maximum: the lowest label number
        labels[:, g] = cols[arg]
        scores[:, g] = sub[np.arange(units), arg]
    return labels, scores


def tally_table(result: LayerResult, concepts: ConceptTable) -> pd.DataFrame:
    """The per-unit table in the original release's ``tally.csv`` format, sorted by score.

    Columns: ``unit`` (1-based), ``category``, ``label``, ``score``, then per
    category ``<cat>-label``, ``-truth``, ``-activation``, ``-intersect``,
    ``-iou``.  Rows by descending score, ties by ascending unit.
    """
    labels, scores = best_per_category(result.iou, concepts)
    best_cat = np.argmax(scores, axis=1)  # ties: the earlier category
    names = concepts.names()
    rows = np.arange(result.units)
    data: dict[str, Any] = {
        "unit": rows + 1,
        "category": [concepts.categories[g] for g in best_cat],
        "label": [names[labels[u, best_cat[u]]] for u in rows],
        "score": scores[rows, best_cat],
    }
    for g, cat in enumerate(concepts.categories):
        lab = labels[:, g]
        data[f"{cat}-label"] = [names[x] for x in lab]
        data[f"{cat}-truth"] = result.truth[lab]
        data[f"{cat}-activation"] = result.denominator_pixels[:, g]
        data[f"{cat}-intersect"] = result.intersect[rows, lab]
        data[f"{cat}-iou"] = scores[:, g]
    table = pd.DataFrame(data)
    return table.sort_values(["score", "unit"], ascending=[False, True], kind="stable").reset_index(drop=True)


def unique_detectors(table: pd.DataFrame, categories: tuple[str, ...], threshold: float) -> dict[str, dict[str, Any]]:
    """Detector counts per category under both conventions.

    Parameters
    ----------
    table : pandas.DataFrame
        A :func:`tally_table`.
    categories : tuple of str
        The categories, in order.
    threshold : float
        The cut-off.

    Returns
    -------
    dict
        ``{convention: {"unique": {cat: n}, "units": {cat: n}, "total_unique": n}}``
        where ``unique`` counts distinct concepts and ``units`` counts units.
    """
    out: dict[str, dict[str, Any]] = {}
    per_unique, per_units, top_unique, top_units = {}, {}, {}, {}
    detectors = table[is_detector(table["score"], threshold)]
    for cat in categories:
        hit = table[is_detector(table[f"{cat}-iou"], threshold)]
        per_unique[cat] = int(hit[f"{cat}-label"].nunique())
        per_units[cat] = int(len(hit))
        top = detectors[detectors["category"] == cat]
        top_unique[cat] = int(top["label"].nunique())
        top_units[cat] = int(len(top))
    out["per-category"] = {"unique": per_unique, "units": per_units, "total_unique": sum(per_unique.values())}
    out["top-label"] = {"unique": top_unique, "units": top_units, "total_unique": sum(top_unique.values())}
    return out


def layer_summary(result: LayerResult, table: pd.DataFrame, concepts: ConceptTable, threshold: float) -> dict[str, Any]:
    """The ``summary.json`` entry of one layer: units, detectors, unique detectors, mean best IoU."""
    return {
        "units": result.units,
        "grid": list(result.grid),
        "detectors": int(is_detector(table["score"], threshold).sum()),
        "mean_best_iou": float(table["score"].mean()),
        "unique_detectors": unique_detectors(table, concepts.categories, threshold),
        "threshold_method": result.threshold_method,
    }


class IoULabeler:
    """Labels units by IoU with concept masks (the Network Dissection labels).

    Parameters
    ----------
    threshold : float
        The detector cut-off.
    """

    method = "iou"

    def __init__(self, threshold: float = IOU_THRESHOLD):
        self.threshold = float(threshold)

    def label(self, result: LayerResult, concepts: ConceptTable) -> pd.DataFrame:
        """The :func:`tally_table` of the layer (columns ``unit``, ``label``, ``score``, ...)."""
        return tally_table(result, concepts)

    def summary(self, result: LayerResult, table: pd.DataFrame, concepts: ConceptTable) -> dict[str, Any]:
        """See :func:`layer_summary`."""
        return layer_summary(result, table, concepts, self.threshold)
