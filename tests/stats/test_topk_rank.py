"""The exact top-k is sized to the quantile's true rank, checked against numpy, not against the code's formula.

``numpy.quantile(x, 1 - q)`` (linear) depends on exactly the ``top_count(n, q)``
largest values: values below that rank may change freely, and changing the
``top_count``-th largest changes the result.  A ``top_count`` one too large
(or too small) fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netdissect.stats.quantile import TopKQuantile, top_count

CASES = [(n, q) for n in (1, 2, 3, 7, 10, 99, 100, 101, 200, 201, 1000, 1001, 4096, 12345)
         for q in (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 0.9, 0.999)]


def _distinct(n: int, seed: int) -> np.ndarray:
    """n distinct values, 1 apart, in random order."""
    return np.random.default_rng(seed).permutation(n).astype(np.float64)


@pytest.mark.parametrize("n,q", CASES)
def test_quantile_depends_on_exactly_the_top_count_largest_values(n, q):
    k = top_count(n, q)
    assert 1 <= k <= n
    x = _distinct(n, seed=n)
    reference = np.quantile(x, 1 - q)
    order = np.argsort(-x, kind="stable")  # descending
    # everything below rank k moved far down: the quantile must not change
    lowered = x.copy()
    lowered[order[k:]] -= 1e6
    assert np.quantile(lowered, 1 - q) == reference
    # the k-th largest moved down by half a step (order kept): the quantile must change
    kth = x.copy()
    kth[order[k - 1]] -= 0.5
    assert np.quantile(kth, 1 - q) != reference


@pytest.mark.parametrize("n,q", [(1000, 0.005), (4096, 0.01), (101, 0.5), (12345, 0.005), (7, 0.25)])
def test_topk_quantile_keeps_exactly_as_many_values_as_the_rank_needs(n, q):
    stat = TopKQuantile(1, q, n)
    x = _distinct(n, seed=1)
    reference = np.quantile(x, 1 - q)
    order = np.argsort(-x, kind="stable")
    kth = x.copy()
    kth[order[stat.k - 1]] -= 0.5  # the smallest value the statistic keeps does count
    assert np.quantile(kth, 1 - q) != reference
    lowered = x.copy()
    lowered[order[stat.k:]] -= 1e6  # and every value it drops does not
    assert np.quantile(lowered, 1 - q) == reference
    stat.update(torch.from_numpy(x.astype(np.float32))[None])
    assert stat.quantiles()[0] == reference
