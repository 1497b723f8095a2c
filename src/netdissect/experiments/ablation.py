"""Unit ablation for classifiers (Bau et al. 2020, PNAS, "Understanding the role of individual units"; METHODS B2).

A unit is ablated by setting its channel to zero at every position.  For each
class c the metric is the one-vs-rest balanced accuracy of the top-1
prediction, ``BA_c = (recall_c + TNR_c) / 2`` with ``TN_c = (N - true_c) -
(pred_c - correct_c)``, or (``metric="probability"``) the mean softmax
probability of class c on the images of class c.  Units are ranked per class
on one split by ``imp(u, c) = metric_c(ablate u) - metric_c(base)`` (more
negative = more important), and tested on another: ablate the top n, and all
but the top n.

Cost: the network runs to the layer once per batch
(:meth:`~netdissect.experiments.split.ModelSplit.head`); the ablated copies
of the layer's output are stacked along the batch axis, many conditions at a
time, and only the rest of the network runs on them
(:func:`~netdissect.experiments.split.split_model` says how: ``"fx"`` runs
the tail alone, ``"trace"`` the whole network with the layer replaced).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import ConfigError
from .split import ModelSplit, split_model

#: numbers of top units removed (or kept) in the test curves; values past the layer's size are dropped
DEFAULT_NS = (1, 2, 4, 8, 20, 64, 128, 256)
METRICS = ("balanced_accuracy", "probability")
#: units in a class's top this many are "important" to it (PNAS 2020 Fig. 3)
IMPORTANT_TOP = 4


# -- counting -------------------------------------------------------------------


class ClassCounts:
    """Per-condition, per-class outcome counts of a classifier (S conditions, K classes).

    ``update(logits, targets)`` takes (S, B, K) logits and (B,) targets.
    Same contract as the statistics of :mod:`netdissect.stats` (``update``,
    ``merge``, ``state_dict``, ``load_state_dict``).

    Parameters
    ----------
    conditions : int
        S.
    classes : int
        K.
    """

    def __init__(self, conditions: int, classes: int):
        self.true = np.zeros(classes, np.int64)
        self.pred = np.zeros((conditions, classes), np.int64)
        self.correct = np.zeros((conditions, classes), np.int64)
        self.prob = np.zeros((conditions, classes), np.float64)
        self.n = 0

    def update(self, logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor | None = None,
               count_targets: bool = True) -> None:
        """Add a batch: ``logits`` (S', B, K) for condition ``rows`` (default all S), ``targets`` (B,)."""
        s, b, k = logits.shape
        rows = torch.arange(s) if rows is None else rows.cpu()
        t = targets.cpu()
        pred = logits.argmax(-1).cpu()  # (S', B)
        hit = (pred == t).to(torch.int64)
        p_own = torch.softmax(logits.double(), -1).gather(-1, targets.to(logits.device).view(1, b, 1)
                                                          .expand(s, b, 1))[..., 0].cpu()
        onehot_pred = torch.zeros(s, k, dtype=torch.int64).scatter_add_(1, pred, torch.ones_like(pred))
        corr = torch.zeros(s, k, dtype=torch.int64).scatter_add_(1, t.expand(s, b), hit)
        prob = torch.zeros(s, k, dtype=torch.float64).scatter_add_(1, t.expand(s, b), p_own)
        r = rows.numpy()
        self.pred[r] += onehot_pred.numpy()
        self.correct[r] += corr.numpy()
        self.prob[r] += prob.numpy()
        if count_targets:
            self.true += np.bincount(t.numpy(), minlength=k)
            self.n += b

    def merge(self, other: "ClassCounts") -> None:
        """Add another's counts."""
        self.true += other.true
        self.pred += other.pred
        self.correct += other.correct
        self.prob += other.prob
        self.n += other.n

    def state_dict(self) -> dict:
        """The counts as arrays."""
        return {"true": self.true, "pred": self.pred, "correct": self.correct, "prob": self.prob,
                "n": np.asarray(self.n)}

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`."""
        self.true, self.pred = np.asarray(state["true"]), np.asarray(state["pred"])
        self.correct, self.prob = np.asarray(state["correct"]), np.asarray(state["prob"])
        self.n = int(state["n"])

    def balanced_accuracy(self) -> np.ndarray:
        """(S, K) one-vs-rest balanced accuracy; NaN for a class without images (or without negatives)."""
        true = self.true[None, :].astype(np.float64)
        tn = (self.n - true) - (self.pred - self.correct)
        with np.errstate(invalid="ignore", divide="ignore"):
            return 0.5 * (self.correct / true + tn / (self.n - true))

    def probability(self) -> np.ndarray:
        """(S, K) mean probability of class c over the images of class c; NaN without images."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.prob / self.true[None, :]

    def metric(self, name: str) -> np.ndarray:
        """(S, K) the named metric (:data:`METRICS`)."""
        if name not in METRICS:
            raise ConfigError(f"metric {name!r} is not one of {METRICS}")
        return self.balanced_accuracy() if name == "balanced_accuracy" else self.probability()


# -- the sweep ------------------------------------------------------------------


def _unit_axis(x: torch.Tensor) -> int:
    return 2 if x.dim() == 3 else 1


def ablate_batched(features: torch.Tensor, selectors: torch.Tensor) -> torch.Tensor:
    """Stack ablated copies of a layer's output along the batch axis.

    Parameters
    ----------
    features : torch.Tensor
        (B, C, ...) the layer's output (tokens (B, T, C): units on the last axis).
    selectors : torch.Tensor
        (S, C) bool, True = set that unit to zero (as :class:`~netdissect.hooks.Zero`).

    Returns
    -------
    torch.Tensor
        (S * B, C, ...): rows ``s * B .. s * B + B - 1`` are the batch with
        the units of condition s zeroed.
    """
    axis = _unit_axis(features)
    shape = [selectors.shape[0]] + [1] * features.dim()
    shape[axis + 1] = selectors.shape[1]
    sel = selectors.to(features.device).reshape(shape)
    out = torch.where(sel, torch.zeros((), dtype=features.dtype, device=features.device), features.unsqueeze(0))
    return out.reshape(-1, *features.shape[1:])


Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def sweep(split: ModelSplit, batches: Batches, selectors: torch.Tensor, classes: int, *,
          rows_per_chunk: int = 1024, own_class: Sequence[int] | None = None,
          progress: Callable[[int], None] | None = None) -> ClassCounts:
    """Count the classifier's outcomes under each ablation condition.

    Parameters
    ----------
    split : ModelSplit
        The model cut at the layer (:func:`~netdissect.experiments.split.split_model`).
    batches : iterable of (x, targets)
        Model inputs (B, ...) on the model's device and (B,) int64 targets.
    selectors : torch.Tensor
        (S, C) bool: the units each condition zeroes (an all-False row is the
        unablated baseline).
    classes : int
        K, the number of model outputs.
    rows_per_chunk : int
        At most this many ablated images go through the tail at once
        (memory: rows x the layer's size).
    own_class : sequence of int, optional
        (S,) per condition a class: then condition s runs only on the images
        of that class (enough for ``metric="probability"``, far cheaper for
        many classes); its balanced accuracy is then undefined.
    progress : callable, optional
        Called with the batch size after each batch.

    Returns
    -------
    ClassCounts
        S conditions x K classes.
    """
    counts = ClassCounts(selectors.shape[0], classes)
    own = None if own_class is None else torch.as_tensor(list(own_class), dtype=torch.long)
    for x, targets in batches:
        feats = split.head(x)
        b = feats.shape[0]
        if own is None:
            groups = [(torch.arange(selectors.shape[0]), torch.arange(b))]
        else:
            groups = [((own == c).nonzero().flatten(), (targets.cpu() == c).nonzero().flatten())
                      for c in torch.unique(targets.cpu()).tolist()]
        for rows, images in groups:
            if len(rows) == 0 or len(images) == 0:
                continue
            f, xi, ti = feats[images.to(feats.device)], x[images.to(x.device)], targets[images.to(targets.device)]
            step = max(1, rows_per_chunk // len(images))
            for start in range(0, len(rows), step):
                r = rows[start:start + step]
                out = split.tail(ablate_batched(f, selectors[r]), xi, repeat=len(r))
                counts.update(out.reshape(len(r), len(images), -1).float(), ti, r, count_targets=False)
        counts.true += np.bincount(targets.cpu().numpy(), minlength=classes)
        counts.n += b
        if progress is not None:
            progress(b)
    return counts


def single_unit_selectors(units: int) -> torch.Tensor:
    """(U + 1, U) bool: row 0 ablates nothing (the baseline), row 1 + u ablates unit u."""
    return torch.cat([torch.zeros(1, units, dtype=torch.bool), torch.eye(units, dtype=torch.bool)])


# -- the experiment -------------------------------------------------------------


@dataclass
class Ablation:
    """Results of :func:`ablation`.

    Attributes
    ----------
    layer : str
        The ablated layer.
    classes : list of str
        Class names (K).
    metric : str
        ``"balanced_accuracy"`` or ``"probability"``.
    method : str
        How the model was split (``"fx"`` or ``"trace"``).
    baseline_rank : numpy.ndarray
        (K,) the metric without ablation on the ranking split.
    importance : numpy.ndarray
        (U, K) metric with unit u ablated minus baseline, ranking split;
        more negative = more important.
    baseline_test : numpy.ndarray
        (K,) the metric without ablation on the test split.
    curves : pandas.DataFrame
        One row per (class, mode, n): class, class_name, mode ("top" = the
        top n ablated, "all-but-top" = all other units ablated), n, value
        (the metric on the test split), baseline.
    units_ranked : numpy.ndarray
        (K, U) 0-based units of each class, most important first (ties of
        ``importance`` broken by the drop of the class's mean probability).
    """

    layer: str
    classes: list[str]
    metric: str
    method: str
    baseline_rank: np.ndarray
    importance: np.ndarray
    baseline_test: np.ndarray
    curves: pd.DataFrame
    units_ranked: np.ndarray
    info: dict = field(default_factory=dict)

    def top_units(self, cls: int, n: int = IMPORTANT_TOP) -> list[int]:
        """The ``n`` most important units (0-based) of class index ``cls``."""
        return [int(u) for u in self.units_ranked[cls, :n]]

    def importance_frame(self, top: int = 10) -> pd.DataFrame:
        """Per class, its ``top`` units: class, class_name, rank, unit, importance (rank and unit 1-based).

        Units are numbered from 1, as in the dissection's tables.
        """
        rows = []
        for c, name in enumerate(self.classes):
            for r, u in enumerate(self.units_ranked[c, :top]):
                rows.append({"class": c, "class_name": name, "rank": r + 1, "unit": int(u) + 1,
                             "importance": float(self.importance[u, c])})
        return pd.DataFrame(rows)

    def class_summary(self, n: int = IMPORTANT_TOP) -> pd.DataFrame:
        """Per class: baseline (test), value with its top ``n`` ablated, with all but them ablated."""
        c = self.curves
        top = c[(c["mode"] == "top") & (c["n"] == n)].set_index("class")["value"]
        keep = c[(c["mode"] == "all-but-top") & (c["n"] == n)].set_index("class")["value"]
        return pd.DataFrame({"class": range(len(self.classes)), "class_name": self.classes,
                             "baseline": self.baseline_test,
                             f"top{n}_ablated": top.reindex(range(len(self.classes))).to_numpy(),
                             f"only_top{n}_kept": keep.reindex(range(len(self.classes))).to_numpy()})

    def importance_vs_iou(self, iou: Sequence[float], top: int = IMPORTANT_TOP, pool: int = 7) -> pd.DataFrame:
        """PNAS 2020: mean IoU of units by how many classes they are important to.

        Parameters
        ----------
        iou : sequence of float
            (U,) each unit's best IoU (0-based order), e.g. from a dissection.
        top : int
            A unit is important to a class when in its top ``top``.
        pool : int
            Counts of ``pool`` or more are pooled in one row.

        Returns
        -------
        pandas.DataFrame
            classes (int, ``pool`` meaning "pool or more"), units, mean_iou, sem.

        Raises
        ------
        ConfigError
            When ``iou`` does not have one value per unit.
        """
        iou = np.asarray(iou, np.float64)
        if iou.shape != (self.importance.shape[0],):
            raise ConfigError(f"iou has shape {iou.shape}, expected ({self.importance.shape[0]},) (one per unit)")
        counts = np.bincount(self.units_ranked[:, :top].ravel(), minlength=len(iou))
        counts = np.minimum(counts, pool)
        rows = []
        for k in range(pool + 1):
            v = iou[counts == k]
            if len(v):
                rows.append({"classes": k, "units": len(v), "mean_iou": float(v.mean()),
                             "sem": float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")})
        return pd.DataFrame(rows)

    # -- saving and drawing ---------------------------------------------------
    def save(self, out: str | Path, *, iou: Sequence[float] | None = None, labels: Sequence[str] | None = None) -> Path:
        """Write the tables, plots and an HTML page into folder ``out``; returns ``out/index.html``.

        ``iou`` and ``labels`` are per unit in 0-based order (U,).  Files:
        ``summary.json``, ``importance.npy`` (U, K), ``units_ranked.npy`` (K, U), ``ranking.csv``,
        ``curves.csv``, ``classes.csv``, ``curves.png``, and with ``iou``
        ``importance_iou.csv`` and ``importance_iou.png``.
        """
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "importance.npy", self.importance)
        np.save(out / "units_ranked.npy", self.units_ranked)
        ranking = self.importance_frame()
        if labels is not None:
            ranking["label"] = [labels[u - 1] for u in ranking["unit"]]
        if iou is not None:
            ranking["iou"] = [float(iou[u - 1]) for u in ranking["unit"]]
        ranking.to_csv(out / "ranking.csv", index=False)
        self.curves.to_csv(out / "curves.csv", index=False)
        summary = self.class_summary()
        summary.to_csv(out / "classes.csv", index=False)
        from ..report.units import plot_ablation_curves, plot_importance_iou

        plot_ablation_curves(self, out / "curves.png")
        files = ["curves.png"]
        by_iou = None
        if iou is not None:
            by_iou = self.importance_vs_iou(iou)
            by_iou.to_csv(out / "importance_iou.csv", index=False)
            plot_importance_iou(by_iou, out / "importance_iou.png")
            files.append("importance_iou.png")
        (out / "summary.json").write_text(json.dumps({
            "layer": self.layer, "metric": self.metric, "method": self.method, "classes": self.classes,
            "baseline_rank": self.baseline_rank.tolist(), "baseline_test": self.baseline_test.tolist(),
            **self.info}, indent=2, default=float))
        from ..report.units import ablation_page

        page = out / "index.html"
        page.write_text(ablation_page(self, summary, ranking, by_iou, files))
        return page


def ablation(model: nn.Module, layer: str, rank_batches: Callable[[], Batches], test_batches: Callable[[], Batches],
             classes: Sequence[str], *, metric: str = "balanced_accuracy", ns: Sequence[int] = DEFAULT_NS,
             split_method: str = "auto", rows_per_chunk: int = 1024,
             progress: Callable[[str, int], None] | None = None) -> Ablation:
    """Rank each class's units by single-unit ablation on one split; test top-n ablations on another.

    PNAS 2020 ("ttv": rank on train, test on val; METHODS B2).  Units whose
    ablation changes the metric equally (with balanced accuracy on few
    images, most change no prediction) are ordered by the drop of the class's
    mean probability on its images, from the same sweep.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (eval mode, on its device); outputs (N, K) logits.
    layer : str
        The layer whose units are ablated.
    rank_batches, test_batches : callable
        Each returns a fresh iterable of (x, targets) batches: the ranking
        split and the test split (they may be the same data, for an
        in-sample ranking).
    classes : sequence of str
        K class names.
    metric : str
        ``"balanced_accuracy"`` (one-vs-rest, the paper's) or
        ``"probability"`` (the class's mean softmax probability on its own
        images; the ablations of class c then run only on c's images).
    ns : sequence of int
        Sizes n of the top-unit sets; those above the layer's unit count are
        dropped.
    split_method : str
        As :func:`~netdissect.experiments.split.split_model`.
    rows_per_chunk : int
        Ablated images per tail call.
    progress : callable, optional
        ``progress(phase, images)`` after each batch.

    Returns
    -------
    Ablation

    Raises
    ------
    ConfigError
        For an unknown metric, or when the model's output does not have
        ``len(classes)`` columns.
    """
    if metric not in METRICS:
        raise ConfigError(f"metric {metric!r} is not one of {METRICS}")
    split = split_model(model, layer, method=split_method)
    k = len(classes)
    own = metric == "probability"

    def tick(phase):
        return None if progress is None else (lambda b: progress(phase, b))

    first = iter(rank_batches())
    x0, t0 = next(first)
    f0 = split.head(x0)
    units = f0.shape[_unit_axis(f0)]
    out0 = split.tail(f0, x0)
    if out0.shape[-1] != k:
        raise ConfigError(f"the model outputs {out0.shape[-1]} values per image but {k} classes were given")

    def chain():
        yield x0, t0
        yield from first

    sel = single_unit_selectors(units)
    counts = sweep(split, chain(), sel, k, rows_per_chunk=rows_per_chunk, progress=tick("rank"))
    m = counts.metric(metric)
    baseline_rank, importance = m[0], m[1:] - m[0][None, :]
    # ties (common for balanced accuracy on few images: most single units change no prediction) are broken by
    # the drop of the class's mean probability, counted in the same sweep
    p = counts.probability()
    tiebreak = p[1:] - p[0][None, :]
    ranked = np.lexsort((np.nan_to_num(tiebreak, nan=np.inf).T, np.nan_to_num(importance, nan=np.inf).T),
                        axis=-1)  # (K, U): primary key last

    ns = sorted({int(n) for n in ns if 0 < int(n) < units})
    rows, meta = [torch.zeros(units, dtype=torch.bool)], [(-1, "base", 0)]
    for c in range(k):
        for n in ns:
            top = torch.zeros(units, dtype=torch.bool)
            top[torch.as_tensor(ranked[c, :n])] = True
            rows += [top, ~top]
            meta += [(c, "top", n), (c, "all-but-top", n)]
    selectors = torch.stack(rows)
    own_class = [max(c, 0) for c, _, _ in meta] if own else None
    if own:  # the baseline row must run on every class's images: one baseline row per class
        selectors = torch.cat([torch.zeros(k, units, dtype=torch.bool), selectors[1:]])
        meta = [(c, "base", 0) for c in range(k)] + meta[1:]
        own_class = [c for c, _, _ in meta]
    test = sweep(split, test_batches(), selectors, k, rows_per_chunk=rows_per_chunk, own_class=own_class,
                 progress=tick("test"))
    tm = test.metric(metric)
    if own:
        baseline_test = np.array([tm[c, c] for c in range(k)])
    else:
        baseline_test = tm[0]
    records = []
    for i, (c, mode, n) in enumerate(meta):
        if mode == "base":
            continue
        records.append({"class": c, "class_name": classes[c], "mode": mode, "n": n, "value": float(tm[i, c]),
                        "baseline": float(baseline_test[c])})
    curves = pd.DataFrame(records, columns=["class", "class_name", "mode", "n", "value", "baseline"])
    return Ablation(layer=layer, classes=list(classes), metric=metric, method=split.method,
                    baseline_rank=baseline_rank, importance=importance, baseline_test=baseline_test,
                    curves=curves, units_ranked=ranked,
                    info={"units": int(units), "ns": ns, "rank_images": int(counts.n), "test_images": int(test.n)})
