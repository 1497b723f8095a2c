"""IoU labels (Bau et al. 2017, section 3; NetDissect-Lite's ``tally.csv``).

A unit's label is its best concept within each category, then the best
category; a unit is a detector when that IoU exceeds the cut-off (0.04).
:func:`is_detector` is the one place where the cut-off rule lives.

Ties are decided as NetDissect-Lite decides them (``ties="reference"``, the
default; :data:`TIE_RULES`):

- within a category, equal IoUs go to the **lowest label number** (also when
  every IoU of the category is 0: its lowest-numbered concept, with IoU 0;
  NetDissect-Lite, which takes the argmax over all labels with the other
  categories' IoUs zeroed, writes label 0, ``-``, there);
- between categories, equal best IoUs go to the **later category** in the
  data set's category order (NetDissect-Lite sorts the per-category best
  scores ascending and takes the last).  So a dead unit, IoU 0 everywhere, is
  labelled in the last category;
- ``tally.csv`` rows are sorted by descending score, equal scores in
  **descending unit** order (NetDissect-Lite reverses an ascending sort).

``ties="first"`` keeps this package's earlier rule: the earlier category, and
equal scores in ascending unit order (within a category it is the same).

Unique detectors are counted under two conventions (:data:`CONVENTIONS`):

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
from ..errors import ConfigError
from .base import LayerResult

#: the two conventions for counting unique detectors per category
CONVENTIONS = ("per-category", "top-label")
#: the default detector cut-off (Bau et al. 2017)
IOU_THRESHOLD = 0.04
#: how ties between categories and between rows are decided (see the module docstring)
TIE_RULES = ("reference", "first")


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


def _check_ties(ties: str) -> str:
    if ties not in TIE_RULES:
        raise ConfigError(f"ties={ties!r} is not a tie rule; allowed: {', '.join(map(repr, TIE_RULES))}")
    return ties


def best_category(scores: np.ndarray, ties: str = "reference") -> np.ndarray:
    """Each unit's best category from its (U, G) per-category best IoUs.

    ``ties="reference"``: equal scores go to the later category (NetDissect-Lite);
    ``ties="first"``: to the earlier one.  Returns (U,) int64 category indices.
    """
    scores = np.asarray(scores)
    if _check_ties(ties) == "first":
        return np.argmax(scores, axis=1).astype(np.int64)
    return (scores.shape[1] - 1 - np.argmax(scores[:, ::-1], axis=1)).astype(np.int64)


def tally_table(result: LayerResult, concepts: ConceptTable, ties: str = "reference") -> pd.DataFrame:
    """The per-unit table in the original release's ``tally.csv`` format, sorted by score.

    Columns: ``unit`` (1-based), ``category``, ``label``, ``score``, then per
    category ``<cat>-label``, ``-truth``, ``-activation``, ``-intersect``,
    ``-iou``.  Rows by descending score; equal scores by descending unit
    (``ties="reference"``, as NetDissect-Lite) or ascending unit (``"first"``).
    Ties between categories: see :func:`best_category`.

    Parameters
    ----------
    result : LayerResult
        The layer's measurements (``iou`` (U, L), ``truth``, ``intersect``, ``denominator_pixels``).
    concepts : ConceptTable
        Names and categories of the label numbers.
    ties : str
        ``"reference"`` or ``"first"`` (:data:`TIE_RULES`).

    Returns
    -------
    pandas.DataFrame
        One row per unit.

    Raises
    ------
    ConfigError
        For an unknown ``ties`` rule.
    """
    _check_ties(ties)
    labels, scores = best_per_category(result.iou, concepts)
    best_cat = best_category(scores, ties)
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
    table = table.sort_values(["score", "unit"], ascending=[False, ties == "first"], kind="stable")
    return table.reset_index(drop=True)


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
    ties : str
        How ties are decided (:data:`TIE_RULES`): ``"reference"`` (the default)
        as NetDissect-Lite, to the later category and equal-score rows in
        descending unit order; ``"first"`` to the earlier category and
        ascending unit order.  Within a category both take the lowest label
        number.
    """

    method = "iou"

    def __init__(self, threshold: float = IOU_THRESHOLD, ties: str = "reference"):
        self.threshold = float(threshold)
        self.ties = _check_ties(ties)

    def label(self, result: LayerResult, concepts: ConceptTable) -> pd.DataFrame:
        """The :func:`tally_table` of the layer (columns ``unit``, ``label``, ``score``, ...)."""
        return tally_table(result, concepts, self.ties)

    def summary(self, result: LayerResult, table: pd.DataFrame, concepts: ConceptTable) -> dict[str, Any]:
        """See :func:`layer_summary`."""
        return layer_summary(result, table, concepts, self.threshold)
