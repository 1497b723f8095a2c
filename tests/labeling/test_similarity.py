"""CLIP-Dissect's similarity functions against slow loop references written from METHODS.md part C."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from netdissect.errors import ConfigError
from netdissect.labeling.similarity import (
    Similarity,
    get_similarity,
    inclusion_probabilities,
    list_similarities,
    register_similarity,
)

# -- slow references: one unit and one word at a time, float64 ------------------------------------


def ref_top(q, k):
    """Indices of the k largest entries of q, ties to the lower index."""
    return sorted(range(len(q)), key=lambda i: (-q[i], i))[:k]


def ref_cos(P, Q):
    U, M = Q.shape[1], P.shape[1]
    out = np.zeros((U, M))
    for k in range(U):
        for t in range(M):
            q, c = Q[:, k], P[:, t]
            out[k, t] = float(q @ c) / (math.sqrt(q @ q) * math.sqrt(c @ c))
    return out


def ref_cos3(P, Q, min_norm=1e-3):
    def prep(x):
        x = (x - x.mean()) ** 3
        return x / max(math.sqrt(x @ x), min_norm)

    U, M = Q.shape[1], P.shape[1]
    out = np.zeros((U, M))
    for k in range(U):
        for t in range(M):
            out[k, t] = prep(Q[:, k]) @ prep(P[:, t])
    return out


def ref_softmax_rows(P, a):
    out = np.zeros_like(P)
    for i in range(P.shape[0]):
        e = [math.exp(a * v) for v in P[i]]
        s = sum(e)
        out[i] = [v / s for v in e]
    return out


def ref_pmi(log_p_t_given_q, lam):
    """score = log p(t|q_k) - lam log p(t), log p(t) = log mean over units j of p(t|q_j)."""
    U, M = log_p_t_given_q.shape
    out = np.zeros((U, M))
    for t in range(M):
        log_pt = math.log(sum(math.exp(log_p_t_given_q[j, t]) for j in range(U)) / U)
        for k in range(U):
            out[k, t] = log_p_t_given_q[k, t] - lam * log_pt
    return out


def ref_log_p_wpmi(P, Q, top_k=28, a=2.0):
    Pp = ref_softmax_rows(P, a)
    U, M = Q.shape[1], P.shape[1]
    out = np.zeros((U, M))
    for k in range(U):
        top = ref_top(Q[:, k], min(top_k, len(Q)))
        for t in range(M):
            out[k, t] = sum(math.log(Pp[i, t] + 1e-7) for i in top)
    return out


def ref_p_i(rank, top_k, p_start=0.998, p_end=0.97):
    return p_start - (rank / top_k) * (p_start - p_end)


def ref_log_p_soft(P, Q, top_k=100, a=10.0):
    Pp = ref_softmax_rows(P, a)
    U, M = Q.shape[1], P.shape[1]
    out = np.zeros((U, M))
    for k in range(U):
        top = ref_top(Q[:, k], min(top_k, len(Q)))
        for t in range(M):
            total = 0.0
            for rank, i in enumerate(top):
                p = ref_p_i(rank, top_k)
                total += math.log(1 - p + p * Pp[i, t] + 1e-7)
            out[k, t] = total
    return out


def ref_rank_reorder(P, Q, perms, p=3.0, frac=0.05, scale=0.5):
    N, U, M = P.shape[0], Q.shape[1], P.shape[1]
    n = min(N, max(2, int(N * frac)))
    out = np.zeros((U, M))
    for k in range(U):
        top = ref_top(Q[:, k], n)
        acts = [Q[i, k] for i in top]  # descending
        asc = acts[::-1]
        diffs = [abs(asc[j] - asc[perm[j]]) ** p for perm in perms[k] for j in range(n)]
        baseline = sum(diffs) / len(diffs)
        for t in range(M):
            pv = [P[i, t] for i in top]
            rank = {j: r for r, j in enumerate(sorted(range(n), key=lambda j: (pv[j], j)))}  # 0 = lowest P
            reordered = [asc[rank[j]] for j in range(n)]  # the image with the r-th lowest P gets the r-th lowest act
            err = sum(abs(acts[j] - reordered[j]) ** p for j in range(n)) / n
            with np.errstate(divide="ignore", invalid="ignore"):  # a zero baseline: NaN or -inf, as the reference
                out[k, t] = -(np.float64(err) / baseline) / (sum(pv) / n) ** scale
    return out


def matrices(seed, n, u, m):
    rng = np.random.default_rng(seed)
    P = rng.uniform(0.0, 1.0, size=(n, m))  # CLIP cosines of images and words: positive
    Q = rng.normal(size=(n, u)) * rng.uniform(0.5, 3.0)
    return P, Q


sizes = st.tuples(st.integers(0, 2**32 - 1), st.integers(2, 45), st.integers(1, 6), st.integers(1, 9))
SETTINGS = settings(max_examples=25, deadline=None)


def run(name, P, Q, budget=None, **params):
    f = get_similarity(name, **params)
    return f(torch.tensor(P, dtype=torch.float32), torch.tensor(Q, dtype=torch.float32), budget=budget).double().numpy()


@SETTINGS
@given(sizes)
def test_cos_matches_the_loop(args):
    P, Q = matrices(*args)
    np.testing.assert_allclose(run("cos", P, Q), ref_cos(P, Q), rtol=1e-4, atol=1e-5)


@SETTINGS
@given(sizes)
def test_cos3_matches_the_loop(args):
    P, Q = matrices(*args)
    np.testing.assert_allclose(run("cos3", P, Q), ref_cos3(P, Q), rtol=1e-3, atol=1e-4)


@SETTINGS
@given(sizes, st.integers(1, 30))
def test_wpmi_matches_the_loop(args, top_k):
    P, Q = matrices(*args)
    for params in ({}, {"top_k": top_k}):
        log_p = ref_log_p_wpmi(P, Q, top_k=params.get("top_k", 28))
        expected = ref_pmi(log_p, 0.6)
        np.testing.assert_allclose(run("wpmi", P, Q, **params), expected, rtol=1e-4, atol=2e-3)


@SETTINGS
@given(sizes, st.integers(1, 30))
def test_soft_wpmi_matches_the_loop(args, top_k):
    P, Q = matrices(*args)
    for params in ({}, {"top_k": top_k}):
        log_p = ref_log_p_soft(P, Q, top_k=params.get("top_k", 100))
        expected = ref_pmi(log_p, 1.0)
        np.testing.assert_allclose(run("soft_wpmi", P, Q, **params), expected, rtol=1e-4, atol=2e-3)


@SETTINGS
@given(sizes)
def test_soft_wpmi_log_p_given_unit_and_p_t_over_units(args):
    """The two halves separately: log p(t|q_k) over the unit's ranks, and p(t) as the mean over the layer's units."""
    P, Q = matrices(*args)
    f = get_similarity("soft_wpmi", top_k=7)
    p, q = torch.tensor(P, dtype=torch.float32), torch.tensor(Q, dtype=torch.float32)
    state = f.prepare(p, q, P.shape[1])
    log_p = f.log_p_given_unit(state, p, slice(0, P.shape[1])).double().numpy()
    expected = ref_log_p_soft(P, Q, top_k=7)
    np.testing.assert_allclose(log_p, expected, rtol=1e-4, atol=1e-3)
    # p(t) is a mean over units: adding a copy of every unit leaves every score unchanged
    doubled = f(p, torch.cat([q, q], 1)).double().numpy()
    np.testing.assert_allclose(doubled[: Q.shape[1]], f(p, q).double().numpy(), rtol=1e-4, atol=1e-3)
    # and with lam = 0 the score is log p(t|q_k) itself
    np.testing.assert_allclose(run("soft_wpmi", P, Q, top_k=7, lam=0.0), expected, rtol=1e-4, atol=1e-3)


def test_soft_wpmi_inclusion_probabilities_per_rank():
    p = inclusion_probabilities(100, 100).double().numpy()
    assert p[0] == pytest.approx(0.998) and p[1] == pytest.approx(0.998 - 0.01 * 0.028)
    assert p[99] == pytest.approx(0.998 - 0.99 * 0.028)
    np.testing.assert_allclose(p, [ref_p_i(i, 100) for i in range(100)], rtol=1e-6)
    # fewer ranks than top_k: the same schedule, cut
    np.testing.assert_allclose(inclusion_probabilities(10, 100).numpy(), p[:10], rtol=1e-6)


@SETTINGS
@given(sizes, st.integers(0, 5))
def test_rank_reorder_matches_the_loop(args, seed):
    P, Q = matrices(*args)
    f = get_similarity("rank_reorder", seed=seed)
    n = f.top_count(P.shape[0])
    perms = f.permutations(Q.shape[1], n).numpy()
    expected = ref_rank_reorder(P, Q, perms)
    got = run("rank_reorder", P, Q, seed=seed)
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-3, atol=1e-5)
    assert np.array_equal(np.isfinite(got), finite)


def test_rank_reorder_permutations_are_seeded_and_five_per_unit():
    f = get_similarity("rank_reorder")
    a, b = f.permutations(4, 50), f.permutations(4, 50)
    assert a.shape == (4, 5, 50) and torch.equal(a, b)
    assert torch.equal(a.sort(-1).values, torch.arange(50).expand(4, 5, 50))
    assert not torch.equal(a, get_similarity("rank_reorder", seed=1).permutations(4, 50))
    assert f.top_count(1000) == 50 and f.top_count(10) == 2


@pytest.mark.parametrize("name", ["cos", "cos3", "wpmi", "soft_wpmi", "rank_reorder"])
@SETTINGS
@given(sizes, st.integers(1, 40))
def test_chunked_words_give_the_same_scores_and_top_words(name, args, budget):
    P, Q = matrices(*args)
    f = get_similarity(name)
    p, q = torch.tensor(P, dtype=torch.float32), torch.tensor(Q, dtype=torch.float32)
    whole = f(p, q, budget=10**9)
    assert f.width(*P.shape[:1], Q.shape[1], P.shape[1], budget) >= 1
    chunked = f(p, q, budget=budget)
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-3, equal_nan=True)
    k = min(3, P.shape[1])
    scores, idx = f.top(p, q, k, budget=budget)
    full = torch.nan_to_num(whole, nan=-math.inf)
    order = torch.sort(full, dim=1, descending=True, stable=True).indices[:, :k]
    torch.testing.assert_close(scores, full.gather(1, order), rtol=1e-4, atol=1e-3)
    # the same words, up to near-ties between chunked and whole float sums
    same = idx == order
    assert same.all() or torch.allclose(full.gather(1, idx), full.gather(1, order), rtol=1e-4, atol=1e-3)


def test_default_budget_bounds_the_chunk():
    f = get_similarity("soft_wpmi")
    # N x (U + M) values: 1000 images, 1280 units, 20,000 words
    width = f.width(1000, 1280, 20000)
    assert width * f.cost(1000, 1280) <= 1000 * (1280 + 20000)
    assert 1 <= width < 20000


def test_registry_lists_and_builds_with_parameters():
    assert set(list_similarities()) >= {"cos", "cos3", "rank_reorder", "wpmi", "soft_wpmi"}
    soft = get_similarity("soft_wpmi")
    assert soft.params == {"top_k": 100, "a": 10.0, "lam": 1.0, "p_start": 0.998, "p_end": 0.97, "min_prob": 1e-7}
    assert get_similarity("wpmi").params == {"top_k": 28, "a": 2.0, "lam": 0.6, "min_prob": 1e-7}
    assert get_similarity("rank_reorder").params == {"p": 3.0, "top_fraction": 0.05, "scale": 0.5,
                                                     "permutations": 5, "seed": 0}
    assert get_similarity("wpmi", top_k=5).params["top_k"] == 5
    assert get_similarity(soft) is soft
    with pytest.raises(ConfigError, match="soft_wpmi"):
        get_similarity("soft_wmpi")
    with pytest.raises(ConfigError, match="no parameter 'k'.*top_k"):
        get_similarity("soft_wpmi", k=3)
    with pytest.raises(ConfigError, match="same N images"):
        soft(torch.zeros(3, 2), torch.zeros(4, 2))


def test_a_registered_function_is_listed_and_built():
    @register_similarity("negdot_test")
    class NegDot(Similarity):
        defaults = {"scale": 1.0}

        def block(self, state, p, words):
            return -self.params["scale"] * (state.t() @ p[:, words])

    assert "negdot_test" in list_similarities()
    s = get_similarity("negdot_test", scale=2.0)
    assert torch.equal(s(torch.ones(2, 3), torch.ones(2, 1)), torch.full((1, 3), -4.0))
    with pytest.raises(ConfigError):
        register_similarity("bad name")
