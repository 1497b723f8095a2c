"""Compare dissections: networks, training tasks, checkpoints (Bau et al. 2017, section 4; METHODS A3, A4).

For each (run, layer): unique detectors per category under both counting
conventions of METHODS A4 (``per-category``: a unit counts in every category
whose best concept clears the cut-off; ``top-label``: only in the category of
its single best label), the detector share, the distribution of each unit's
best IoU, and which concepts each run gains or loses against the one before.

Output folder (``write``)::

    unique.csv     run, layer, convention, category, unique, units
    detectors.csv  run, layer, units, detectors, share, mean_best_iou
    changes.csv    before, after, layer, convention, category, concept, change ("gained" / "lost")
    index.html     the page, with plots/*.png|svg
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd

from ..errors import ConfigError
from ..labeling.iou import CONVENTIONS, is_detector

if TYPE_CHECKING:  # pragma: no cover
    from ..results import DissectionData

#: the layer name under which a run's concepts over all its layers are compared
ALL_LAYERS = "(all layers)"


def _open(run) -> "DissectionData":
    from ..dissection import Dissection
    from ..results import DissectionData

    return run if isinstance(run, DissectionData) else Dissection.load(run)


def _run_names(runs: list, names: Sequence[str] | None) -> list[str]:
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(runs) or len(set(names)) != len(names):
            raise ConfigError(f"names {names} must give one distinct name per run ({len(runs)} runs)")
        return names
    out: list[str] = []
    for r in runs:
        base = r.run_dir.name or str(r.run_dir)
        name, k = base, 2
        while name in out:
            name, k = f"{base} ({k})", k + 1
        out.append(name)
    return out


def detector_concepts(result: "DissectionData", layer: str, convention: str) -> pd.DataFrame:
    """The distinct concepts that ``layer``'s units detect, under ``convention`` (METHODS A4).

    Parameters
    ----------
    result : DissectionData
        A dissection.
    layer : str
        One of its layers.
    convention : str
        ``"per-category"``: per category, the best-in-category labels of
        units whose best-in-category IoU clears the cut-off; ``"top-label"``:
        the single best labels of detector units.

    Returns
    -------
    pandas.DataFrame
        Columns category, concept, units (how many units detect it), best_iou;
        one row per distinct (category, concept).

    Raises
    ------
    ConfigError
        For an unknown convention or layer.
    """
    if convention not in CONVENTIONS:
        raise ConfigError(f"convention {convention!r} is not one of {CONVENTIONS}")
    tally = result.tally(layer)
    threshold = result.iou_threshold
    parts = []
    if convention == "top-label":
        hit = tally[is_detector(tally["score"], threshold)]
        parts.append(pd.DataFrame({"category": hit["category"], "concept": hit["label"], "iou": hit["score"]}))
    else:
        for cat in result.concepts.categories:
            hit = tally[is_detector(tally[f"{cat}-iou"], threshold)]
            parts.append(pd.DataFrame({"category": cat, "concept": hit[f"{cat}-label"], "iou": hit[f"{cat}-iou"]}))
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["category", "concept", "iou"])
    if rows.empty:
        return pd.DataFrame({"category": pd.Series(dtype=str), "concept": pd.Series(dtype=str),
                             "units": pd.Series(dtype=int), "best_iou": pd.Series(dtype=float)})
    out = rows.groupby(["category", "concept"], sort=True).agg(units=("iou", "size"), best_iou=("iou", "max"))
    return out.reset_index()


class Comparison:
    """Several dissections side by side (see :func:`compare`).

    Attributes
    ----------
    runs : list of DissectionData
        The runs, in the order given.
    names : list of str
        A distinct name per run (the folder names by default).
    unique : pandas.DataFrame
        run, layer, convention, category, unique (distinct concepts), units (detector units).
    detectors : pandas.DataFrame
        run, layer, units, detectors, share (detectors / units), mean_best_iou.
    best_iou : pandas.DataFrame
        run, layer, unit, category, label, iou: each unit's best label (for distributions).
    changes : pandas.DataFrame
        before, after, layer, convention, category, concept, change: concepts
        gained or lost from each run to the next (:meth:`changes_between`).
    """

    def __init__(self, runs: Sequence, names: Sequence[str] | None = None):
        self.runs = [_open(r) for r in runs]
        if len(self.runs) < 1:
            raise ConfigError("compare needs at least one run")
        self.names = _run_names(self.runs, names)
        unique, det, best = [], [], []
        for name, r in zip(self.names, self.runs):
            for layer in r.layers:
                s = r.summary["layers"][layer]
                for convention in CONVENTIONS:
                    counts = s["unique_detectors"][convention]
                    for cat in r.concepts.categories:
                        unique.append({"run": name, "layer": layer, "convention": convention, "category": cat,
                                       "unique": counts["unique"].get(cat, 0), "units": counts["units"].get(cat, 0)})
                det.append({"run": name, "layer": layer, "units": s["units"], "detectors": s["detectors"],
                            "share": s["detectors"] / max(s["units"], 1), "mean_best_iou": s["mean_best_iou"]})
            labels = r.labels
            best.append(pd.DataFrame({"run": name, "layer": labels["layer"], "unit": labels["unit"],
                                      "category": labels["category"], "label": labels["label"],
                                      "iou": labels["iou"]}))
        self.unique = pd.DataFrame(unique)
        self.detectors = pd.DataFrame(det)
        self.best_iou = pd.concat(best, ignore_index=True)
        pairs = [self.changes_between(a, b) for a, b in zip(self.names, self.names[1:])]
        self.changes = pd.concat(pairs, ignore_index=True) if pairs else _empty_changes()

    def run(self, name: str) -> "DissectionData":
        """The run called ``name``.

        Raises
        ------
        ConfigError
            For a name not among :attr:`names`.
        """
        if name not in self.names:
            raise ConfigError(f"no run named {name!r} in this comparison (runs: {', '.join(self.names)})")
        return self.runs[self.names.index(name)]

    def concepts(self, name: str, layer: str, convention: str = "top-label") -> set[tuple[str, str]]:
        """The (category, concept) pairs detected in ``layer`` of run ``name`` (``ALL_LAYERS``: any layer)."""
        r = self.run(name)
        layers = r.layers if layer == ALL_LAYERS else [layer]
        out: set[tuple[str, str]] = set()
        for l in layers:
            t = detector_concepts(r, l, convention)
            out.update(zip(t["category"], t["concept"]))
        return out

    def changes_between(self, before: str, after: str) -> pd.DataFrame:
        """Concepts gained and lost from run ``before`` to run ``after``.

        Compared per layer the two runs share, and over all layers of each
        (``layer`` = :data:`ALL_LAYERS`), under both conventions.

        Returns
        -------
        pandas.DataFrame
            before, after, layer, convention, category, concept, change ("gained" or "lost").

        Raises
        ------
        ConfigError
            For a run name not in the comparison.
        """
        a, b = self.run(before), self.run(after)
        shared = [l for l in a.layers if l in b.layers]
        rows = []
        for layer in shared + [ALL_LAYERS]:
            for convention in CONVENTIONS:
                old, new = self.concepts(before, layer, convention), self.concepts(after, layer, convention)
                for change, items in (("gained", new - old), ("lost", old - new)):
                    for cat, concept in sorted(items):
                        rows.append({"before": before, "after": after, "layer": layer, "convention": convention,
                                     "category": cat, "concept": concept, "change": change})
        return pd.DataFrame(rows) if rows else _empty_changes()

    def write(self, out: str | Path) -> Path:
        """Write the CSV files, the plots and ``index.html`` into the folder ``out``; returns the page."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.unique.to_csv(out / "unique.csv", index=False)
        self.detectors.to_csv(out / "detectors.csv", index=False)
        self.changes.to_csv(out / "changes.csv", index=False)
        from ..report.experiments import write_compare_page

        return write_compare_page(self, out)

    def plot_unique(self, convention: str = "per-category", ax=None):
        """Unique detectors per category for every (run, layer), stacked bars; returns the Axes."""
        from ..report.experiments import plot_compare_unique

        return plot_compare_unique(self, convention=convention, ax=ax)

    def __repr__(self) -> str:
        return f"Comparison({', '.join(self.names)})"


def _empty_changes() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series(dtype=str) for k in
                         ("before", "after", "layer", "convention", "category", "concept", "change")})


def compare(runs: Sequence, *, names: Sequence[str] | None = None, out: str | Path | None = None) -> Comparison:
    """Compare several dissections (Bau et al. 2017, section 4.2-4.3; METHODS A3).

    Parameters
    ----------
    runs : sequence of str, Path or Dissection
        Run directories (or loaded runs), in the order to show them; gained
        and lost concepts are counted from each run to the next.
    names : sequence of str, optional
        One distinct name per run (default: the folder names).
    out : str or Path, optional
        When given, write the CSV files, plots and ``index.html`` there.

    Returns
    -------
    Comparison
        The tables.

    Raises
    ------
    ConfigError
        For no runs, or names that do not match the runs.
    DatasetError
        For a folder that holds no complete dissection.
    """
    result = Comparison(runs, names)
    if out is not None:
        result.write(out)
    return result
