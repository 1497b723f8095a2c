"""Exact per-unit upper quantiles by streaming top-k.

The ``1 - q`` quantile of ``n`` values needs only the largest
``n - floor((1 - q) (n - 1))`` of them (about ``q n``), so keeping a running
top-k per unit gives the exact value with ``numpy.quantile``'s default
(linear) interpolation, in memory proportional to ``q n`` rather than ``n``.

Past ``max_values`` stored values (units x k), the statistic switches to a
uniform random subsample of positions (the same positions for every unit)
sized to fit, and records the sampling rate and a rank-error bound.  Which
positions are kept depends only on the seed and each value's image index
(when ``update`` is given them), so the subsample, and the result, is the
same however the images are batched or split across processes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .base import Statistic

#: Confidence level of the recorded rank-error bound in sampled mode.
SAMPLED_CONFIDENCE = 0.99


def top_count(total: int, q: float) -> int:
    """How many of the largest of ``total`` values the ``1 - q`` quantile needs."""
    position = (1.0 - q) * (total - 1)
    return int(min(total, total - math.floor(position)))


def quantile_from_top(top: np.ndarray, total: int, q: float) -> np.ndarray:
    """``numpy.quantile(values, 1 - q)`` per row, from each row's largest values.

    Parameters
    ----------
    top : numpy.ndarray
        (U, k) float, each row's largest values sorted descending, with
        ``k >= top_count(total, q)``.
    total : int
        How many values each row had in all.
    q : float
        Upper fraction; the result is the ``1 - q`` quantile.

    Returns
    -------
    numpy.ndarray
        (U,) float64, computed exactly like numpy's default (linear) method.
    """
    top = np.asarray(top, dtype=np.float64)
    virtual = (1.0 - q) * (total - 1)
    prev = math.floor(virtual)
    nxt = min(prev + 1, total - 1)
    gamma = virtual - prev
    # ascending index i is descending index total - 1 - i
    a = top[:, total - 1 - prev]
    b = top[:, total - 1 - nxt]
    diff = b - a
    if gamma >= 0.5:
        return b - diff * (1 - gamma)
    return a + diff * gamma


def float32_below(t: np.ndarray) -> np.ndarray:
    """The largest float32 <= t, so that ``x > result`` in float32 equals ``x > t`` exactly."""
    t = np.asarray(t, dtype=np.float64)
    t32 = t.astype(np.float32)
    over = t32.astype(np.float64) > t
    t32[over] = np.nextafter(t32[over], np.float32(-np.inf))
    return t32


class TopKQuantile(Statistic):
    """Per-unit ``1 - q`` quantile of ``total`` values per unit.

    update(x, image_indices): x is (U, m), m values of each of the U units,
    image-major (the values of one image are consecutive, the same number for
    every image); image_indices (B,) names the B images (needed to seed the
    subsample in sampled mode; without it the subsample follows the order
    of the values seen).

    Parameters
    ----------
    units : int
        Number of units U.
    q : float
        Upper fraction in (0, 1); the statistic is the ``1 - q`` quantile.
    total : int
        Values per unit over the whole data set (exact mode requires exactly
        this many).
    max_values : int, optional
        Bound on stored values (U x k); past it the statistic samples
        positions at a rate that fits.  None: always exact.
    seed : int
        Seed of the sampled positions.
    device : torch.device or str
        Where the (U, k) buffer of top values lives.

    Raises
    ------
    ValueError
        When ``q`` is not in (0, 1) or ``total < 1``.
    """

    def __init__(
        self,
        units: int,
        q: float,
        total: int,
        *,
        max_values: int | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ):
        if not 0 < q < 1:
            raise ValueError(f"quantile q must be in (0, 1), got {q}")
        if total < 1:
            raise ValueError(f"total must be >= 1, got {total}")
        self.units, self.q, self.total, self.seed = int(units), float(q), int(total), int(seed)
        k = top_count(self.total, self.q)
        self.sample_rate = 1.0
        if max_values is not None and self.units * k > max_values:
            self.sample_rate = max_values / (self.units * k)
            expected = self.sample_rate * self.total
            # room for the sampled count's upper tail (six standard deviations)
            k = top_count(int(expected + 6 * math.sqrt(expected) + 16), self.q)
        self.k = int(k)
        self.values = torch.full((self.units, self.k), -math.inf, device=device)
        self.count = 0  # values seen per unit
        self.kept = 0  # values kept per unit (== count unless sampled)

    @property
    def exact(self) -> bool:
        """Whether every value is kept (False once ``max_values`` forced sampling)."""
        return self.sample_rate >= 1.0

    def update(self, x: torch.Tensor, image_indices: torch.Tensor | None = None) -> None:
        """Fold in (U, m) values; see the class docstring for ``image_indices``.

        Raises
        ------
        ValueError
            For a wrong shape, more values than ``total`` in exact mode, or
            ``m`` not a multiple of the number of images.
        """
        if x.dim() != 2 or x.shape[0] != self.units:
            raise ValueError(f"expected ({self.units}, m) values, got {tuple(x.shape)}")
        m = x.shape[1]
        if not self.exact:
            x = x[:, self._keep(m, image_indices).to(x.device)]
        self.count += m
        self.kept += x.shape[1]
        if self.kept > self.total and self.exact:
            raise ValueError(f"TopKQuantile was sized for {self.total} values per unit, got {self.kept}")
        self._absorb(x.to(self.values.dtype))

    def _keep(self, m: int, image_indices: torch.Tensor | None) -> torch.Tensor:
        """(m,) bool: which of the next m values the subsample keeps."""
        if image_indices is None:
            gen = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + self.count)
            return torch.rand(m, generator=gen) < self.sample_rate
        indices = [int(i) for i in image_indices]
        if not indices or m % len(indices):
            raise ValueError(f"{m} values do not split evenly over {len(indices)} images")
        per_image = m // len(indices)
        draws = [np.random.default_rng([self.seed, i]).random(per_image) for i in indices]
        return torch.from_numpy(np.concatenate(draws) < self.sample_rate)

    def _absorb(self, x: torch.Tensor) -> None:
        both = torch.cat([self.values, x], dim=1)
        if both.shape[1] > self.k:
            both = torch.topk(both, self.k, dim=1, sorted=False).values
        self.values = both

    def merge(self, other: "TopKQuantile") -> None:
        """Fold in the values another instance of the same configuration saw."""
        self._check_same(other, "units", "q", "total", "k", "sample_rate", "seed")
        self.count += other.count
        self.kept += other.kept
        self._absorb(other.values.to(self.values.device))

    def quantiles(self) -> np.ndarray:
        """(U,) float64 thresholds: exact ``numpy.quantile(values, 1 - q)`` per unit."""
        n = self.kept
        if n == 0:
            raise ValueError("no values were seen")
        if self.exact and self.count != self.total:
            raise ValueError(f"expected {self.total} values per unit, saw {self.count}")
        top = torch.sort(self.values, dim=1, descending=True).values.cpu().numpy()
        if top_count(n, self.q) > self.k:
            raise ValueError(f"sampled {n} values, more than the sample buffer allows; raise max_values")
        return quantile_from_top(top, n, self.q)

    def rank_error(self) -> float:
        """Bound on |estimated rank - true rank| / count (0 when exact), at SAMPLED_CONFIDENCE."""
        if self.exact:
            return 0.0
        return math.sqrt(math.log(2 / (1 - SAMPLED_CONFIDENCE)) / (2 * max(self.kept, 1)))

    def describe(self) -> dict[str, Any]:
        """Method, q, values per unit, k, sample rate and rank-error bound, for the run record."""
        return {
            "method": "exact-topk" if self.exact else "sampled-topk",
            "q": self.q,
            "values_per_unit": self.count,
            "k": self.k,
            "sample_rate": self.sample_rate,
            "rank_error_bound": self.rank_error(),
            "confidence": 1.0 if self.exact else SAMPLED_CONFIDENCE,
        }

    def state_dict(self) -> dict[str, Any]:
        """The (U, k) kept top values (on the CPU), counts, configuration and seed."""
        return {
            "values": self.values.cpu(),
            "count": self.count,
            "kept": self.kept,
            "units": self.units,
            "q": self.q,
            "total": self.total,
            "k": self.k,
            "sample_rate": self.sample_rate,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; raises ValueError when the configuration differs."""
        for key in ("units", "q", "total", "k", "sample_rate", "seed"):
            if state[key] != getattr(self, key):
                raise ValueError(f"saved TopKQuantile has {key}={state[key]}, this one {getattr(self, key)}")
        self.values = state["values"].to(self.values.device)
        self.count = int(state["count"])
        self.kept = int(state["kept"])
        self.seed = int(state["seed"])
