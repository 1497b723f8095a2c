"""CLIP-Dissect's similarity functions between units and words.

Oikarinen & Weng, "CLIP-Dissect: Automatic Description of Neuron
Representations in Deep Vision Networks" (ICLR 2023), section 3 and the
reference code (``similarity.py``).  Every function compares

- ``P``: (N, M) float32, the concept-activation matrix: normalised image
  embeddings @ normalised text embeddings.T of N probe images and M words;
- ``Q``: (N, U) float32, each unit's summary activation on each probe image
  (the columns q_k),

and returns (U, M) scores, higher = the word describes the unit better; a
unit's description is the argmax over words.  The functions and their
defaults (``../shared/METHODS.md`` part C):

- ``cos``: cosine of q_k and P[:, t], both taken over the images;
- ``cos3``: centre each column over the images, cube element-wise, normalise
  (norms clipped at ``min_norm``), then cosine;
- ``rank_reorder`` (p=3, top 5% of the images, scale 0.5): on a unit's top
  images B_k, give the image with the i-th lowest P[., t] the i-th lowest
  activation; err = mean |q - q_reordered|^p divided by the same quantity for
  ``permutations`` (5) random orders of the top activations (seeded);
  score = -err / (mean over B_k of P[., t])^scale;
- ``wpmi`` (top_k=28, a=2, lambda=0.6): P' = row-softmax(a P) (over words,
  per image); log p(t|q_k) = sum over the unit's top_k images of
  log(P'[i, t] + 1e-7); log p(t) = log mean_j exp(log p(t|q_j)) over every
  unit j of the layer; score = log p(t|q_k) - lambda log p(t);
- ``soft_wpmi`` (the default; top_k=100, a=10, lambda=1): the image of rank i
  (0 = most active) is in the unit's set with probability
  p_i = 0.998 - (i / top_k)(0.998 - 0.97); log p(t|q_k) = sum_i
  log(1 - p_i + p_i P'[i, t] + 1e-7); the rest as ``wpmi``.

Everything is vectorised over units and words (the only Python loops run
over a function's top-k ranks and over chunks of words), and the working
memory stays under a budget of N x (U + M) float32 values by default (at
least MIN_BUDGET, 64 MiB: with few probe images a tiny budget would cut the
words into chunks so small that per-chunk overhead dominates): the
words are taken in chunks (:meth:`Similarity.top` keeps only each unit's best
words, so the (U, M) matrix is never held).  Ties between images (for the top
sets) go to the lower image index, ties between words to the lower word
index.

Register another function with :func:`register_similarity`;
:func:`list_similarities` names them and :func:`get_similarity` builds one.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ..errors import ConfigError, close_matches

_REGISTRY: dict[str, Callable[..., "Similarity"]] = {}

MIN_BUDGET = 2**24  # float32 values (64 MiB): the smallest default working memory of a similarity step


def register_similarity(name: str):
    """Class decorator: register a :class:`Similarity` subclass under ``name``.

    Parameters
    ----------
    name : str
        The name :func:`get_similarity` and ``netdissect describe
        --similarity`` take (letters, digits, ``_``).

    Returns
    -------
    callable
        The decorator; it returns the class unchanged.

    Raises
    ------
    ConfigError
        For an empty name or one with other characters.
    """
    if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
        raise ConfigError(f"similarity name {name!r} must be letters, digits and '_'")

    def deco(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def list_similarities() -> list[str]:
    """Names of the registered similarity functions.

    Returns
    -------
    list of str
        Sorted: ``cos``, ``cos3``, ``rank_reorder``, ``soft_wpmi``, ``wpmi``...
    """
    return sorted(_REGISTRY)


def get_similarity(name: "str | Similarity", **params: Any) -> "Similarity":
    """The similarity function ``name`` with its defaults, some replaced by ``params``.

    Parameters
    ----------
    name : str or Similarity
        A registered name (a :class:`Similarity` is returned as it is).
    **params
        Parameters of the function (``top_k=``, ``a=``, ``lam=``...).

    Returns
    -------
    Similarity
        The function object.

    Raises
    ------
    ConfigError
        For an unknown name (with close matches) or parameter.
    """
    if isinstance(name, Similarity):
        if params:
            raise ConfigError("parameters apply to a similarity name, not to a Similarity object")
        return name
    if name not in _REGISTRY:
        hint = close_matches(str(name), _REGISTRY)
        raise ConfigError(f"similarity {name!r} is not one of {', '.join(list_similarities())}"
                          + (f"; {hint}" if hint else ""))
    return _REGISTRY[name](**params)


def _chunks(total: int, width: int):
    for start in range(0, total, width):
        yield slice(start, min(total, start + width))


def top_images(q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each unit's ``k`` most active images, ties to the lower image index.

    Parameters
    ----------
    q : torch.Tensor
        (N, U) summary activations.
    k : int
        Images per unit (at most N).

    Returns
    -------
    values : torch.Tensor
        (k, U) activations, descending down each column.
    indices : torch.Tensor
        (k, U) int64 image indices.
    """
    order = torch.argsort(q, dim=0, descending=True, stable=True)[:k]
    return q.gather(0, order), order


def inclusion_probabilities(k: int, top_k: int, p_start: float = 0.998, p_end: float = 0.97,
                            device: torch.device | str = "cpu") -> torch.Tensor:
    """SoftWPMI's p_i: the probability that the image of rank i is in a unit's set.

    p_i = p_start - (i / top_k)(p_start - p_end) for ranks i = 0..k-1 (0 =
    the most active image), as in CLIP-Dissect's code.

    Parameters
    ----------
    k : int
        Ranks wanted (``top_k``, or fewer when the probe has fewer images).
    top_k : int
        The function's ``top_k`` (the schedule's denominator).
    p_start, p_end : float
        The schedule's ends.
    device : torch.device or str
        Where the result lives.

    Returns
    -------
    torch.Tensor
        (k,) float32.
    """
    i = torch.arange(k, dtype=torch.float32, device=device)
    return p_start - i / top_k * (p_start - p_end)


class Similarity:
    """A similarity between units and words (CLIP-Dissect, Oikarinen & Weng 2023).

    Subclasses set :meth:`prepare` (whatever depends on all words or all
    images, computed once) and :meth:`block` (the scores of a chunk of words),
    and ``cost`` (float32 values of working memory per word of a chunk, as a
    function of N and U).

    Parameters
    ----------
    **params
        The function's parameters (see each subclass); unknown ones raise
        :class:`ConfigError`.
    """

    name = ""
    #: parameter name -> default
    defaults: dict[str, Any] = {}

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            allowed = ", ".join(self.defaults) or "none"
            raise ConfigError(f"similarity {self.name!r} has no parameter {', '.join(map(repr, unknown))} "
                              f"(parameters: {allowed})")
        self.params: dict[str, Any] = {**self.defaults, **params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    # -- for subclasses --------------------------------------------------------------
    def prepare(self, p: torch.Tensor, q: torch.Tensor, width: int) -> Any:
        """State shared by every chunk of words (default: the summaries as float32).

        Parameters
        ----------
        p : torch.Tensor
            (N, M) concept-activation matrix.
        q : torch.Tensor
            (N, U) unit summaries.
        width : int
            Words per chunk (for passes over all words).
        """
        return q

    def block(self, state: Any, p: torch.Tensor, words: slice) -> torch.Tensor:
        """(U, len(words)) scores of the words ``words`` (columns of ``p``)."""
        raise NotImplementedError

    def cost(self, n: int, units: int) -> int:
        """Working float32 values per word of a chunk."""
        return n + 2 * units

    # -- public --------------------------------------------------------------------------
    def _check(self, p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if p.dim() != 2 or q.dim() != 2 or p.shape[0] != q.shape[0]:
            raise ConfigError(f"similarity {self.name!r} needs P (N, M) and Q (N, U) over the same N images, got "
                              f"{tuple(p.shape)} and {tuple(q.shape)}")
        if p.shape[0] == 0:
            raise ConfigError(f"similarity {self.name!r}: no probe images")
        return p.float(), q.to(p.device).float()

    def width(self, n: int, units: int, words: int, budget: int | None = None) -> int:
        """Words per chunk so that the working memory stays under ``budget`` float32 values.

        Parameters
        ----------
        n, units, words : int
            N images, U units, M words.
        budget : int, optional
            Float32 values; default N x (U + M), at least ``MIN_BUDGET``.

        Returns
        -------
        int
            Between 1 and ``words``.
        """
        budget = max(n * (units + words), MIN_BUDGET) if budget is None else int(budget)
        return max(1, min(words, budget // max(1, self.cost(n, units))))

    def __call__(self, p: torch.Tensor, q: torch.Tensor, *, budget: int | None = None) -> torch.Tensor:
        """Every unit's score for every word.

        Parameters
        ----------
        p : torch.Tensor
            (N, M) concept-activation matrix.
        q : torch.Tensor
            (N, U) unit summaries.
        budget : int, optional
            Working memory in float32 values besides the inputs and the
            result (default N x (U + M), at least ``MIN_BUDGET``).

        Returns
        -------
        torch.Tensor
            (U, M) float32 scores on ``p``'s device.

        Raises
        ------
        ConfigError
            For inputs of mismatched shapes.
        """
        p, q = self._check(p, q)
        width = self.width(p.shape[0], q.shape[1], p.shape[1], budget)
        state = self.prepare(p, q, width)
        return torch.cat([self.block(state, p, cols) for cols in _chunks(p.shape[1], width)], dim=1)

    def top(self, p: torch.Tensor, q: torch.Tensor, k: int = 5, *,
            budget: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each unit's ``k`` best words, without holding the (U, M) score matrix.

        NaN scores (a dead unit under ``rank_reorder``) rank last; ties go to
        the lower word index.

        Parameters
        ----------
        p : torch.Tensor
            (N, M) concept-activation matrix.
        q : torch.Tensor
            (N, U) unit summaries.
        k : int
            Words per unit (at most M).
        budget : int, optional
            Working memory in float32 values (default N x (U + M), at least ``MIN_BUDGET``).

        Returns
        -------
        scores : torch.Tensor
            (U, k) float32, best first.
        indices : torch.Tensor
            (U, k) int64 word indices.

        Raises
        ------
        ConfigError
            For inputs of mismatched shapes or ``k`` < 1.
        """
        p, q = self._check(p, q)
        if int(k) < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        k = min(int(k), p.shape[1])
        units = q.shape[1]
        width = self.width(p.shape[0], units, p.shape[1], budget)
        state = self.prepare(p, q, width)
        best = torch.empty(units, 0, device=p.device)
        best_i = torch.empty(units, 0, dtype=torch.int64, device=p.device)
        for cols in _chunks(p.shape[1], width):
            s = self.block(state, p, cols).float()
            s = torch.nan_to_num(s, nan=-math.inf)
            i = torch.arange(cols.start, cols.stop, device=p.device).expand(units, -1)
            s, i = torch.cat([best, s], 1), torch.cat([best_i, i], 1)
            order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
            best, best_i = s.gather(1, order), i.gather(1, order)
        return best, best_i


def _unit_columns(x: torch.Tensor, min_norm: float) -> torch.Tensor:
    return x / x.norm(dim=0, keepdim=True).clamp_min(min_norm)


@register_similarity("cos")
class Cos(Similarity):
    """Cosine of each unit's activations and each word's column of P, over the probe images.

    A column of norm 0 (a unit that never fires) scores 0 with every word.
    """

    defaults: dict[str, Any] = {}

    def prepare(self, p, q, width):
        """Q with unit-norm columns."""
        return _unit_columns(q, 1e-30)

    def block(self, state, p, words):
        """(U, w) cosines."""
        return state.t() @ _unit_columns(p[:, words], 1e-30)

    def cost(self, n, units):
        """One normalised column of P and one column of scores per word."""
        return n + units


def _cube(x: torch.Tensor, min_norm: float) -> torch.Tensor:
    x = x - x.mean(dim=0, keepdim=True)
    return _unit_columns(x**3, min_norm)


@register_similarity("cos3")
class Cos3(Similarity):
    """Cosine after centring each column over the images and cubing it (``min_norm`` = 1e-3, as the reference)."""

    defaults: dict[str, Any] = {"min_norm": 1e-3}

    def prepare(self, p, q, width):
        """Q centred, cubed, normalised."""
        return _cube(q, self.params["min_norm"])

    def block(self, state, p, words):
        """(U, w) cosines of the cubed columns."""
        return state.t() @ _cube(p[:, words], self.params["min_norm"])

    def cost(self, n, units):
        """Two temporary columns of P and one of scores per word."""
        return 2 * n + units


@register_similarity("rank_reorder")
class RankReorder(Similarity):
    """Rank reorder: how well P[., t] orders a unit's top activations (p=3, top 5%, scale 0.5, 5 permutations).

    The top set holds ``int(N * top_fraction)`` images (at least 2, at most
    N).  A unit whose top activations are all equal has a zero baseline and
    scores NaN (ranked last by :meth:`Similarity.top`); so does a word whose
    mean P over the top set is negative (CLIP cosines are positive).
    """

    defaults: dict[str, Any] = {"p": 3.0, "top_fraction": 0.05, "scale": 0.5, "permutations": 5, "seed": 0}

    def top_count(self, n: int) -> int:
        """Images in a unit's top set for ``n`` probe images."""
        return min(n, max(2, int(n * self.params["top_fraction"])))

    def prepare(self, p, q, width):
        """Top images, their ascending activations and each unit's permutation baseline."""
        n = self.top_count(q.shape[0])
        values, indices = top_images(q, n)  # (n, U), descending
        ascending = values.flip(0)
        units = q.shape[1]
        perms = self.permutations(units, n, device=q.device)  # (U, R, n)
        asc_u = ascending.t()  # (U, n)
        shuffled = asc_u.gather(1, perms.reshape(units, -1)).view(units, -1, n)
        baseline = (asc_u.unsqueeze(1) - shuffled).abs().pow(self.params["p"]).mean(dim=(1, 2))  # (U,)
        return values, indices, ascending, baseline

    def permutations(self, units: int, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The random orders of each unit's top activations: (U, permutations, n) int64, from ``seed``."""
        g = torch.Generator().manual_seed(int(self.params["seed"]))
        r = torch.rand(units, int(self.params["permutations"]), n, generator=g)
        return r.argsort(dim=-1).to(device)

    def block(self, state, p, words):
        """(U, w) scores: -err / baseline / mean(P over the top set)^scale."""
        values, indices, ascending, baseline = state
        n, units = indices.shape
        chunk = p[:, words]
        w = chunk.shape[1]
        g = chunk[indices.reshape(-1)].view(n, units, w)  # P of each unit's top images
        mean_p = g.mean(dim=0)  # (U, w)
        order = torch.argsort(g, dim=0, stable=True)  # r-th lowest P -> its row
        reordered = values.unsqueeze(-1).expand(n, units, w).gather(0, order)
        err = (reordered - ascending.unsqueeze(-1)).abs().pow(self.params["p"]).mean(dim=0)
        return -(err / baseline.unsqueeze(1)) / mean_p.pow(self.params["scale"])

    def cost(self, n, units):
        """P, its order (int64) and the reordered activations of every unit's top set, per word."""
        return 6 * self.top_count(n) * units


def _row_logsumexp(p: torch.Tensor, a: float, width: int) -> torch.Tensor:
    """Each image's log sum_t exp(a P[i, t]), over chunks of words: (N,)."""
    out = torch.full((p.shape[0],), -math.inf, device=p.device)
    for cols in _chunks(p.shape[1], width):
        out = torch.logaddexp(out, torch.logsumexp(a * p[:, cols], dim=1))
    return out


@register_similarity("wpmi")
class WPMI(Similarity):
    """Weighted pointwise mutual information (top_k=28, a=2, lam=0.6; min_prob=1e-7).

    With fewer than ``top_k`` probe images every image is in each unit's set.
    """

    defaults: dict[str, Any] = {"top_k": 28, "a": 2.0, "lam": 0.6, "min_prob": 1e-7}

    def prepare(self, p, q, width):
        """Each image's softmax normaliser and each unit's top images."""
        k = min(int(self.params["top_k"]), q.shape[0])
        return _row_logsumexp(p, self.params["a"], width), top_images(q, k)[1]

    def log_p_given_unit(self, state, p, words) -> torch.Tensor:
        """(U, w) log p(t | q_k)."""
        lse, indices = state
        probs = torch.exp(self.params["a"] * p[:, words] - lse.unsqueeze(1))  # row-softmax P'
        logs = torch.log(probs + self.params["min_prob"])
        out = torch.zeros(indices.shape[1], logs.shape[1], device=p.device)
        for rank in range(indices.shape[0]):
            out += logs[indices[rank]]
        return out

    def block(self, state, p, words):
        """(U, w) log p(t|q_k) - lam log p(t), p(t) the mean of p(t|q_j) over the layer's units."""
        log_pt_unit = self.log_p_given_unit(state, p, words)
        log_pt = torch.logsumexp(log_pt_unit, dim=0) - math.log(log_pt_unit.shape[0])
        return log_pt_unit - self.params["lam"] * log_pt

    def cost(self, n, units):
        """P' and its log, and two columns of units per word."""
        return 2 * n + 2 * units


@register_similarity("soft_wpmi")
class SoftWPMI(WPMI):
    """Soft WPMI, CLIP-Dissect's default (top_k=100, a=10, lam=1; p_i from 0.998 down to 0.97; min_prob=1e-7).

    The image of rank i belongs to the unit's set with probability p_i
    (:func:`inclusion_probabilities`).  With fewer than ``top_k`` probe images
    the schedule is cut at N ranks.
    """

    defaults: dict[str, Any] = {"top_k": 100, "a": 10.0, "lam": 1.0, "p_start": 0.998, "p_end": 0.97,
                                "min_prob": 1e-7}

    def log_p_given_unit(self, state, p, words):
        """(U, w) log p(t | q_k) = sum_i log(1 - p_i + p_i P'[i, t] + min_prob)."""
        lse, indices = state
        k = indices.shape[0]
        pr = inclusion_probabilities(k, int(self.params["top_k"]), self.params["p_start"], self.params["p_end"])
        probs = torch.exp(self.params["a"] * p[:, words] - lse.unsqueeze(1))
        out = torch.zeros(indices.shape[1], probs.shape[1], device=p.device)
        for rank in range(k):
            pi = float(pr[rank])
            out += torch.log((1 - pi) + pi * probs[indices[rank]] + self.params["min_prob"])
        return out

    def cost(self, n, units):
        """P' and three columns of units per word."""
        return n + 3 * units
