"""Generator interventions by known answers: a painter whose unit k paints colour k."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gan_helpers import NAMES, painter, wrapped_painter

import netdissect
from netdissect.errors import ConfigError
from netdissect.generators import (
    LayerSplit,
    SoftColorScore,
    ablation_sweep,
    insertion_sweep,
    optimize_units,
    rank_units,
    unit_quantiles,
)
from netdissect.segment import load_segmenter


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    n = 6
    inside, total = n * 16 * 16, n * 32 * 32  # each unit's row: a quarter of its upsampled pixels
    return netdissect.dissect(generator=painter(), segmenter="color", samples=n, layers=["units"],
                              out=tmp_path_factory.mktemp("run") / "g", quantile=(inside - 0.5) / (total - 1),
                              batch_size=4, num_workers=0, progress=False)


@pytest.fixture(scope="module")
def seg():
    return load_segmenter("color")


def test_dissection_labels_each_painting_unit_with_iou_one(run):
    labels = run.labels.set_index("unit")
    assert [labels.loc[u, "label"] for u in (1, 2, 3)] == NAMES
    assert (labels["iou"] == 1.0).all()
    for k, name in enumerate(NAMES):
        units, iou = rank_units(run.run_dir, "units", name)
        assert units[0] == k and iou[0] == 1.0


def test_split_is_sequential_for_a_chain_and_replays_otherwise():
    fast, slow = LayerSplit(painter(), "units"), LayerSplit(wrapped_painter(), "units")
    assert (fast.mode, slow.mode) == ("sequential", "replay")
    z = fast.latents(3, range(5))
    f = fast.features(z)
    assert f.shape == (5, 3, 4, 4) and fast.feature_shape == (3, 4, 4) and fast.image_size == (64, 64)
    edited = f.clone()
    edited[:, 0] = 2.0
    assert torch.equal(fast.render(edited), slow.render(edited, z))
    with pytest.raises(ConfigError, match="pass z"):
        slow.render(edited)


@pytest.mark.parametrize("make", [painter, wrapped_painter])
def test_ablating_unit_k_removes_exactly_concept_k(run, seg, make):
    split = LayerSplit(make(), "units")
    for k, name in enumerate(NAMES):
        units, _ = rank_units(run, "units", name)
        res = ablation_sweep(split, seg, name, units, ks=[0, 1, 3], samples=10, batch_size=4, strip_ks=[0, 1])
        assert np.array_equal(res.fractions, np.array([[0.25] * 10, [0.0] * 10, [0.0] * 10]))
        table = res.table()
        assert table["drop"].tolist() == [0.0, 1.0, 1.0] and table["se"].tolist() == [0.0, 0.0, 0.0]
        assert res.strip.shape == (4, 2, 64, 64, 3) and res.strip_ks == [0, 1]
        # the other concepts stay
        other = NAMES[(k + 1) % 3]
        res = ablation_sweep(split, seg, other, [k], ks=[0, 1], samples=4)
        assert (res.fractions == 0.25).all()


def test_insertion_paints_the_concept_in_the_cell_where_the_context_lets_it(seg):
    split = LayerSplit(painter(), "units")
    values = unit_quantiles(split, samples=20)
    assert torch.equal(values, torch.full((3,), 2.0))
    n = 8
    blue = insertion_sweep(split, seg, "blue-c", [2], values, samples=n, batch_size=3, strip_cells=[(0, 0), (3, 3)])
    assert blue.cell_pixels == 64.0 and blue.added.shape == (n, 4, 4)
    # blue paints over everything: a whole cell (8x8 label pixels) added except where it was blue already
    assert np.array_equal(blue.added, np.where(blue.context == 2, 0, 64))  # 2 = blue-c
    assert (blue.added == 0).sum() == n * 4
    table = blue.by_context().set_index("context")
    assert table.loc["red-c", "mean_added"] == 64 and table.loc["blue-c", "mean_added"] == 0
    assert table.loc["black-c", "appeared"] == 1.0 and table.loc["blue-c", "appeared"] == 0.0
    assert blue.strip.shape == (3, 3, 64, 64, 3)  # strips come from the first batch
    assert (blue.strip[0, 1, :16, :16] == [0, 0, 255]).all()  # cell (0, 0) is blue after
    # red is painted under green and blue: it appears only on the black row
    red = insertion_sweep(split, seg, "red-c", [0], 2.0, samples=n)
    by = red.by_context().set_index("context")["mean_added"]
    assert by["black-c"] == 64 and by["green-c"] == 0 and by["blue-c"] == 0 and by["red-c"] == 0
    assert red.cell_map().mean() == pytest.approx(64 * (red.context == 1).mean())  # 1 = black-c


def test_interventions_refuse_bad_arguments(run, seg):
    split = LayerSplit(painter(), "units")
    with pytest.raises(ConfigError, match="out of range"):
        ablation_sweep(split, seg, "red-c", [0, 7], ks=[0, 1])
    with pytest.raises(ConfigError, match="ks must be"):
        ablation_sweep(split, seg, "red-c", [0], ks=[0, 2])
    with pytest.raises(ConfigError, match="'rde-c' is not labelled.*red-c"):
        ablation_sweep(split, seg, "rde-c", [0], ks=[0])
    with pytest.raises(ConfigError, match="values must be one number or one per unit"):
        insertion_sweep(split, seg, "red-c", [0], torch.ones(5))
    with pytest.raises(ConfigError, match="outside the layer's 4x4 grid"):
        insertion_sweep(split, seg, "red-c", [0], 2.0, strip_cells=[(4, 0)])
    with pytest.raises(ConfigError, match="not in the dissection run"):
        rank_units(run, "units", "purple")
    with pytest.raises(ConfigError, match="init must hold one weight per unit"):
        optimize_units(split, seg, "red-c", SoftColorScore("red"), init=[1.0])
    with pytest.raises(ConfigError, match="is not a colour"):
        SoftColorScore("teal")
