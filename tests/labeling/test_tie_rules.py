"""Ties decided as NetDissect-Lite decides them (issue 8, kind 10), and the older rule kept as ``ties="first"``.

NetDissect-Lite: within a category the argmax over labels (the lowest label
number); between categories an ascending sort of the per-category best scores,
taking the last (the later category); rows by the reversed ascending sort of
the best scores (equal scores in descending unit order).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import IDENTITY, square_concepts
from torch import nn

import netdissect
from netdissect.data.protocol import Concept, ConceptTable
from netdissect.errors import ConfigError
from netdissect.labeling import LayerResult
from netdissect.labeling.iou import TIE_RULES, IoULabeler, best_category, tally_table
from netdissect.models import LoadedModel

# label numbers interleave the categories, so "lowest label number" and "first in the category" differ
# from "first column"; category order: object, color, scene
CONCEPTS = ConceptTable(
    [Concept(1, "car", "object"), Concept(2, "red-c", "color"), Concept(3, "tree", "object"),
     Concept(4, "blue-c", "color"), Concept(5, "street-s", "scene"), Concept(6, "beach-s", "scene")],
    ["object", "color", "scene"],
)


def layer(iou: np.ndarray, concepts: ConceptTable = CONCEPTS) -> LayerResult:
    iou = np.asarray(iou, dtype=np.float64)
    units, labels = iou.shape
    rng = np.random.default_rng(0)
    return LayerResult(
        name="layer", units=units, grid=(2, 2), thresholds=np.zeros(units), threshold_method={},
        iou=iou, intersect=(iou * 100).astype(np.int64),
        denominator_pixels=rng.integers(1, 50, (units, len(concepts.categories))).astype(np.float64),
        mask_pixels=np.full(units, 10, dtype=np.int64), truth=np.arange(labels, dtype=np.int64) * 7,
        top_indices=np.zeros((units, 0), dtype=np.int64), top_scores=np.zeros((units, 0), dtype=np.float32),
        top_maps=np.zeros((units, 0, 2, 2), dtype=np.float32),
    )


def row(table: pd.DataFrame, unit: int) -> pd.Series:
    return table.set_index("unit").loc[unit]


def test_dead_units_go_to_the_last_category_and_its_lowest_label():
    t = tally_table(layer(np.zeros((3, 7))), CONCEPTS)
    assert list(t["unit"]) == [3, 2, 1]  # equal scores: descending unit
    assert set(t["category"]) == {"scene"} and set(t["label"]) == {"street-s"} and (t["score"] == 0).all()
    assert set(t["object-label"]) == {"car"} and set(t["color-label"]) == {"red-c"}
    first = tally_table(layer(np.zeros((3, 7))), CONCEPTS, ties="first")
    assert list(first["unit"]) == [1, 2, 3]
    assert set(first["category"]) == {"object"} and set(first["label"]) == {"car"}


def test_exact_tie_between_two_categories_goes_to_the_later_one():
    iou = np.zeros((2, 7))
    iou[0, [3, 4]] = 0.25  # tree (object) and blue-c (color) tie; color comes later
    iou[1, [1, 6]] = 0.125  # car (object) and beach-s (scene)
    t = tally_table(layer(iou), CONCEPTS)
    assert (row(t, 1)["category"], row(t, 1)["label"], row(t, 1)["score"]) == ("color", "blue-c", 0.25)
    assert (row(t, 2)["category"], row(t, 2)["label"]) == ("scene", "beach-s")
    f = tally_table(layer(iou), CONCEPTS, ties="first")
    assert (row(f, 1)["category"], row(f, 1)["label"]) == ("object", "tree")
    assert (row(f, 2)["category"], row(f, 2)["label"]) == ("object", "car")


def test_exact_tie_between_two_labels_of_a_category_goes_to_the_lower_number():
    iou = np.zeros((2, 7))
    iou[0, [3, 1]] = 0.5  # tree (3) and car (1), both object
    iou[1, [6, 5]] = 0.5  # beach-s (6) and street-s (5), both scene
    for ties in TIE_RULES:
        t = tally_table(layer(iou), CONCEPTS, ties=ties)
        assert row(t, 1)["label"] == "car" and row(t, 1)["object-truth"] == 7 and row(t, 1)["object-intersect"] == 50
        assert row(t, 2)["label"] == "street-s" and row(t, 2)["scene-truth"] == 35


def test_rows_by_descending_score_and_equal_scores_by_descending_unit():
    iou = np.zeros((6, 7))
    iou[:, 1] = [0.1, 0.3, 0.1, 0.2, 0.3, 0.1]
    t = tally_table(layer(iou), CONCEPTS)
    assert list(t["unit"]) == [5, 2, 4, 6, 3, 1]
    f = tally_table(layer(iou), CONCEPTS, ties="first")
    assert list(f["unit"]) == [2, 5, 4, 1, 3, 6]
    assert list(t["score"]) == list(f["score"]) == [0.3, 0.3, 0.2, 0.1, 0.1, 0.1]


def _lite_selection(iou: np.ndarray, concepts: ConceptTable):
    """NetDissect-Lite's choices, written out from its description (numpy sorts, as it does them)."""
    cat = concepts.category_index()
    per_cat = np.stack([np.where(cat[None, :] == g, iou, 0.0) for g in range(len(concepts.categories))])
    label = per_cat.argmax(axis=2)  # (G, U): first maximum over all labels
    score = np.take_along_axis(per_cat, label[..., None], axis=2)[..., 0]  # (G, U)
    bestcat = np.argsort(score, axis=0, kind="stable")[::-1][0]  # (U,): the last of an ascending sort
    order = np.argsort(score.max(axis=0), kind="stable")[::-1]
    return label, score, bestcat, order


@pytest.mark.parametrize("seed", range(5))
def test_many_ties_are_decided_as_the_reference_decides_them(seed):
    rng = np.random.default_rng(seed)
    iou = rng.choice([0.0, 0.0, 0.05, 0.1, 0.2], size=(40, 7))  # ties everywhere
    iou[:, 0] = 0.0  # label 0 is "no label"
    iou[rng.integers(0, 40, 6)] = 0.0  # some dead units
    label, score, bestcat, order = _lite_selection(iou, CONCEPTS)
    t = tally_table(layer(iou), CONCEPTS)
    names = CONCEPTS.names()
    assert list(t["unit"]) == list(order + 1)
    assert list(t["category"]) == [CONCEPTS.categories[bestcat[u]] for u in order]
    assert np.array_equal(t["score"].to_numpy(), score[bestcat[order], order])
    for g, c in enumerate(CONCEPTS.categories):
        live = score[g, order] > 0  # where a category's IoUs are all 0, NetDissect-Lite writes label 0 ("-")
        assert list(t[f"{c}-label"][live]) == [names[label[g, u]] for u in order[live]]
        assert np.array_equal(t[f"{c}-iou"].to_numpy(), score[g, order])


def test_best_category_and_the_labeler_name_their_rule():
    scores = np.array([[0.0, 0.0, 0.0], [0.2, 0.2, 0.1], [0.1, 0.3, 0.3], [0.1, 0.2, 0.0]])
    assert list(best_category(scores)) == [2, 1, 2, 1]
    assert list(best_category(scores, "first")) == [0, 0, 1, 1]
    assert IoULabeler().ties == "reference" and IoULabeler(0.04, ties="first").ties == "first"
    with pytest.raises(ConfigError, match="ties='last' is not a tie rule.*'reference', 'first'"):
        IoULabeler(ties="last")
    with pytest.raises(ConfigError, match="not a tie rule"):
        tally_table(layer(np.zeros((1, 7))), CONCEPTS, ties="random")


class _RedAndDead(nn.Module):
    """unit 0 = the red channel (the square); units 1 and 2 = 0 everywhere (dead)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.bias.zero_()
            self.features.weight[0, 0] = 1.0

    def forward(self, x):
        return self.features(x).mean((2, 3))


def test_a_dissection_writes_dead_units_as_the_reference_does(tmp_path):
    model = LoadedModel(_RedAndDead().eval(), IDENTITY, "tests:RedAndDead")
    # q = 0.3: more than the red pixels, so the red unit's mask is exactly the square
    result = netdissect.dissect(model, square_concepts(), layers=["features"], out=tmp_path / "r", progress=False,
                                num_workers=0, quantile=0.3)
    t = result.tally("features")
    assert list(t["unit"]) == [1, 3, 2]
    assert (t["label"][0], t["category"][0], t["score"][0]) == ("square", "object", 1.0)
    dead = t.iloc[1:]
    assert (dead["score"] == 0).all() and set(dead["category"]) == {"scene"} and set(dead["label"]) == {"even-s"}
