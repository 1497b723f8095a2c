"""Streaming statistics against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from netdissect.stats import (
    IoUTally,
    LabelCounts,
    TopImages,
    TopKQuantile,
    TopMaps,
    float32_below,
    top_count,
)
from netdissect.stats.tally import CellUpsampler

# -- exact quantiles ---------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 2000),
    q=st.sampled_from([0.005, 0.01, 0.05, 0.25, 0.5, 0.9, 0.999]),
    parts=st.integers(1, 6),
    rounding=st.sampled_from([None, 0, 1]),
    seed=st.integers(0, 2**16),
)
def test_topk_quantile_equals_numpy(n, q, parts, rounding, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, n)).astype(np.float32)
    if rounding is not None:  # many ties
        x = np.round(x, rounding).astype(np.float32)
    stat = TopKQuantile(3, q, n)
    for part in np.array_split(x, parts, axis=1):
        if part.shape[1]:
            stat.update(torch.from_numpy(part))
    expected = np.quantile(x.astype(np.float64), 1 - q, axis=1)
    assert np.array_equal(stat.quantiles(), expected)
    assert stat.k == top_count(n, q) and stat.k <= n


def test_topk_merge_and_state_roundtrip_are_exact():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.standard_normal((4, 5000)).astype(np.float32))
    a, b = TopKQuantile(4, 0.01, 5000), TopKQuantile(4, 0.01, 5000)
    a.update(x[:, :1234])
    b.update(x[:, 1234:])
    c = TopKQuantile(4, 0.01, 5000)
    c.load_state_dict(a.state_dict())
    c.merge(b)
    whole = TopKQuantile(4, 0.01, 5000)
    whole.update(x)
    assert np.array_equal(c.quantiles(), whole.quantiles())
    assert np.array_equal(whole.quantiles(), np.quantile(x.double().numpy(), 0.99, axis=1))


def test_topk_rejects_wrong_count_and_bad_q():
    stat = TopKQuantile(2, 0.1, 100)
    stat.update(torch.zeros(2, 50))
    with pytest.raises(ValueError, match="expected 100 values per unit, saw 50"):
        stat.quantiles()
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        TopKQuantile(2, 1.5, 100)


def test_sampled_mode_records_its_error_bound_and_is_close():
    rng = np.random.default_rng(2)
    n = 200_000
    x = rng.standard_normal((2, n)).astype(np.float32)
    stat = TopKQuantile(2, 0.01, n, max_values=1000)
    for part in np.array_split(x, 10, axis=1):
        stat.update(torch.from_numpy(part))
    info = stat.describe()
    assert info["method"] == "sampled-topk" and info["sample_rate"] < 1
    assert 0 < info["rank_error_bound"] < 0.05
    # the estimated threshold's rank lies within the recorded bound of the true one
    t = stat.quantiles()
    for u in range(2):
        rank = (x[u] <= t[u]).mean()
        assert abs(rank - 0.99) <= info["rank_error_bound"]


def test_sampled_subsample_depends_on_image_index_not_on_batching_or_shards():
    rng = np.random.default_rng(5)
    images, per_image = 60, 49
    x = rng.standard_normal((3, images * per_image)).astype(np.float32)
    total = images * per_image

    def run(splits):
        stats = []
        for shard in splits:  # each "process" sees its own images, in its own batches
            stat = TopKQuantile(3, 0.01, total, max_values=60, seed=7)
            for batch in shard:
                cols = np.concatenate([np.arange(i * per_image, (i + 1) * per_image) for i in batch])
                stat.update(torch.from_numpy(x[:, cols]), torch.tensor(batch))
            stats.append(stat)
        for other in stats[1:]:
            stats[0].merge(other)
        return stats[0]

    one = run([[list(range(b, min(b + 8, images))) for b in range(0, images, 8)]])
    assert not one.exact
    three = run([[list(range(0, 7)), list(range(7, 20))], [list(range(20, 33))], [list(range(33, 60))]])
    reversed_order = run([[list(range(50, 60)), list(range(0, 50))]])
    assert np.array_equal(one.quantiles(), three.quantiles())
    assert np.array_equal(one.quantiles(), reversed_order.quantiles())
    assert one.kept == three.kept == reversed_order.kept
    other_seed = TopKQuantile(3, 0.01, total, max_values=60, seed=8)
    other_seed.update(torch.from_numpy(x), torch.arange(images))
    assert other_seed.kept != one.kept or not np.array_equal(other_seed.quantiles(), one.quantiles())


def test_float32_below_makes_float32_comparison_exact():
    rng = np.random.default_rng(3)
    t64 = rng.standard_normal(1000) * 10
    t32 = float32_below(t64)
    assert np.all(t32.astype(np.float64) <= t64)
    above = np.nextafter(t32, np.float32(np.inf))
    assert np.all(above.astype(np.float64) > t64)


# -- top images ------------------------------------------------------------------


def test_top_images_matches_sorting_with_ties_to_lower_index():
    rng = np.random.default_rng(4)
    scores = np.round(rng.random((50, 3)), 1).astype(np.float32)  # ties
    stat = TopImages(3, 5)
    for start in range(0, 50, 7):
        stat.update(torch.from_numpy(scores[start : start + 7]), torch.arange(start, min(start + 7, 50)))
    for u in range(3):
        order = sorted(range(50), key=lambda i: (-scores[i, u], i))[:5]
        assert stat.indices[u].tolist() == order
        assert np.allclose(stat.scores[u].numpy(), scores[order, u])


def test_top_maps_gather_the_maps_of_top_images():
    acts = torch.randn(20, 4, 3, 3)
    top = TopImages(4, 3)
    top.update(acts.amax((2, 3)), torch.arange(20))
    maps = TopMaps(top.indices, (3, 3))
    for start in range(0, 20, 6):
        maps.update(acts[start : start + 6], torch.arange(start, min(start + 6, 20)))
    assert maps.filled.all()
    for u in range(4):
        for s in range(3):
            assert torch.equal(maps.maps[u, s], acts[top.indices[u, s], u])


# -- IoU tally against a brute-force reference ---------------------------------------------


def reference_tally(acts, t64, pixel_labels, image_labels, category_of, num_categories, label_size, denominator):
    """Loops over images, units and labels: slow and obviously correct."""
    b_count, units = acts.shape[:2]
    num_labels = len(category_of)
    inter = np.zeros((units, num_labels), dtype=np.int64)
    act = np.zeros((units, num_categories), dtype=np.int64)
    mask_total = np.zeros(units, dtype=np.int64)
    truth = np.zeros(num_labels, dtype=np.int64)
    up_all = F.interpolate(acts, size=label_size, mode="bilinear", align_corners=False).double().numpy()
    for b in range(b_count):
        labels_b = pixel_labels[b]
        img_b = [int(c) for c in image_labels[b] if c]
        for layer in labels_b:
            for c in layer.flatten():
                if c:
                    truth[c] += 1
        for c in img_b:
            truth[c] += label_size[0] * label_size[1]
        image_cats = {category_of[c] for c in labels_b.flatten() if c} | {category_of[c] for c in img_b}
        image_level_cats = {category_of[c] for c in img_b}
        for k in range(units):
            mask = up_all[b, k] > t64[k]
            count = int(mask.sum())
            mask_total[k] += count
            touched = set(image_level_cats)
            for layer in labels_b:
                for c in layer[mask]:
                    if c:
                        inter[k, c] += 1
                        touched.add(category_of[c])
            for c in img_b:
                inter[k, c] += count
            for g in range(num_categories):
                if denominator == "all" or (denominator == "touch" and g in touched) or (
                    denominator == "image" and g in image_cats
                ):
                    act[k, g] += count
    return inter, act, mask_total, truth


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    units=st.integers(1, 5),
    grid=st.sampled_from([(2, 2), (3, 4), (7, 7), (8, 8)]),
    label_size=st.sampled_from([(8, 8), (5, 9), (14, 14), (112, 112), (113, 113)]),
    layers=st.integers(1, 3),
    denominator=st.sampled_from(["touch", "image", "all"]),
    batches=st.integers(1, 3),
)
def test_vectorised_tally_equals_reference(seed, units, grid, label_size, layers, denominator, batches):
    rng = np.random.default_rng(seed)
    num_labels, num_categories = 9, 3
    category_of = np.array([-1, 0, 0, 1, 1, 1, 2, 2, -1])  # label 8 unused
    tally = None
    counts = LabelCounts(num_labels)
    totals = None
    t64 = rng.standard_normal(units) * 0.5
    t32 = torch.from_numpy(float32_below(t64))
    tally = IoUTally(t32, torch.from_numpy(category_of), num_categories, label_size, denominator=denominator)
    for _ in range(batches):
        b = int(rng.integers(1, 5))
        acts = torch.from_numpy(rng.standard_normal((b, units, *grid)).astype(np.float32))
        pixel = rng.choice([0, 0, 1, 2, 3, 4, 5, 6, 7], size=(b, layers, *label_size)).astype(np.int64)
        pixel[:, :, : label_size[0] // 2] *= rng.random((b, layers, 1, 1)) < 0.5  # some images without labels
        image = rng.choice([0, 0, 3, 5, 7], size=(b, 2)).astype(np.int64)
        tally.update(acts, torch.from_numpy(pixel), torch.from_numpy(image))
        counts.update(torch.from_numpy(pixel), torch.from_numpy(image))
        ref = reference_tally(acts, t64, pixel, image, category_of, num_categories, label_size, denominator)
        totals = ref if totals is None else tuple(a + r for a, r in zip(totals, ref))
    inter, act, mask_total, truth = totals
    assert np.array_equal(tally.intersect.numpy()[:, 1:], inter[:, 1:])
    assert np.array_equal(tally.mask_pixels.numpy(), mask_total)
    assert np.array_equal(counts.truth.numpy(), truth)
    expected_act = np.repeat(mask_total[:, None], num_categories, 1) if denominator == "all" else act
    assert np.array_equal(tally.denominator_pixels(), expected_act.astype(np.float64))
    iou = tally.iou(counts.truth)
    cat = np.where(category_of >= 0, category_of, 0)
    denom = expected_act[:, cat] + truth[None] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        ref_iou = np.where(denom > 0, inter / np.where(denom > 0, denom, 1), 0.0)
    ref_iou[:, category_of < 0] = 0
    assert np.allclose(iou, ref_iou, rtol=0, atol=1e-15)


def test_tally_state_roundtrip_and_merge():
    rng = np.random.default_rng(5)
    category_of = torch.tensor([-1, 0, 1])
    t = torch.tensor([0.5, 0.0])
    acts = torch.from_numpy(rng.standard_normal((6, 2, 4, 4)).astype(np.float32))
    pixel = torch.from_numpy(rng.integers(0, 3, size=(6, 1, 8, 8)))
    image = torch.zeros(6, 1, dtype=torch.int64)
    whole = IoUTally(t, category_of, 2, (8, 8))
    whole.update(acts, pixel, image)
    a, b = IoUTally(t, category_of, 2, (8, 8)), IoUTally(t, category_of, 2, (8, 8))
    a.update(acts[:2], pixel[:2], image[:2])
    b.update(acts[2:], pixel[2:], image[2:])
    c = IoUTally(t, category_of, 2, (8, 8))
    c.load_state_dict(a.state_dict())
    c.merge(b)
    assert torch.equal(c.intersect, whole.intersect) and torch.equal(c.activation, whole.activation)
    other = IoUTally(torch.tensor([0.1, 0.0]), category_of, 2, (8, 8))
    with pytest.raises(ValueError, match="thresholds"):
        other.load_state_dict(a.state_dict())


@pytest.mark.parametrize("grid,size", [((7, 7), (112, 112)), ((14, 14), (112, 112)), ((28, 28), (112, 112)),
                                       ((7, 7), (113, 113)), ((13, 17), (113, 112)), ((3, 4), (8, 8)),
                                       ((224, 224), (112, 112))])
def test_cell_upsampler_masks_equal_full_upsampling(grid, size):
    gen = torch.Generator().manual_seed(7)
    maps = torch.randn(40, *grid, generator=gen)
    maps[5] = 0.25  # a constant map exactly at a threshold
    t64 = np.quantile(maps.double().numpy().reshape(40, -1), 0.9, axis=1)
    t64[5] = 0.25
    thresholds = torch.from_numpy(float32_below(t64))
    cells = CellUpsampler(grid, size)
    j, y, x = cells.mask_pixels(maps, thresholds, thresholds - thresholds.abs() * 1e-6 - 1e-30)
    got = torch.zeros(40, *size, dtype=torch.bool)
    got[j, y, x] = True
    full = F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]
    expected = full.double() > torch.from_numpy(t64).view(-1, 1, 1)
    assert torch.equal(got, expected)
    assert got.any() and not got[5].any()


def test_cell_upsampler_takes_the_fast_path_for_common_sizes():
    # a performance guard: these sizes are computed cell by cell, bit-identical to F.interpolate
    for grid in [(7, 7), (14, 14), (28, 28), (56, 56)]:
        assert CellUpsampler(grid, (112, 112)).exact
    assert CellUpsampler((7, 7), (113, 113)).exact


def test_top_images_and_label_counts_merge_and_roundtrip():
    rng = np.random.default_rng(9)
    scores = torch.from_numpy(rng.random((30, 4)).astype(np.float32))
    whole = TopImages(4, 6)
    whole.update(scores, torch.arange(30))
    a, b = TopImages(4, 6), TopImages(4, 6)
    a.update(scores[:11], torch.arange(11))
    b.update(scores[11:], torch.arange(11, 30))
    c = TopImages(4, 6)
    c.load_state_dict(b.state_dict())
    c.merge(a)
    assert torch.equal(c.indices, whole.indices) and torch.equal(c.scores, whole.scores)

    pixel = torch.from_numpy(rng.integers(0, 5, size=(6, 2, 4, 4)))
    image = torch.tensor([[0], [3], [0], [4], [0], [0]])
    counts = LabelCounts(5)
    counts.update(pixel[:2], image[:2])
    rest = LabelCounts(5)
    rest.update(pixel[2:], image[2:])
    restored = LabelCounts(5)
    restored.load_state_dict(counts.state_dict())
    restored.merge(rest)
    expected = np.bincount(pixel.numpy().ravel(), minlength=5)
    expected[3] += 16
    expected[4] += 16
    expected[0] = 0
    assert restored.truth.tolist() == expected.tolist() and restored.images == 6
