"""The result of a dissection and its run directory.

Layout of ``RUN_DIR``::

    config.json        every parameter, the model/data identity, versions
    summary.json       per layer: units, detectors, unique detectors per category
                       (both counting conventions); written last, it marks the run complete
    concepts.csv       number,name,category: the columns of the IoU matrices
    images.csv         index,image: the data set images that appear as top images
    layers/<layer>/
        tally.csv      per unit, the original NetDissect release format (unit 1-based)
        iou.npy        (units, max label + 1) float64 IoU; column = label number
        thresholds.npy (units,) float64 activation thresholds
        counts.npz     intersect (units, labels), denominator_pixels (units, categories),
                       mask_pixels (units,), truth (labels,): the raw tallies
        top_images.npz indices (units, n), scores (units, n), maps (units, n, h, w)

:class:`Dissection` loads it back; ``Dissection.labels`` is a pandas DataFrame.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .data.protocol import ConceptDataset, ConceptTable
from .errors import ConfigError, DatasetError, close_matches

#: the two conventions for counting unique detectors per category
CONVENTIONS = ("per-category", "top-label")


@dataclass
class LayerResult:
    """Everything dissection measured for one layer (arrays indexed by unit, 0-based)."""

    name: str
    units: int
    grid: tuple[int, int]
    thresholds: np.ndarray  # (U,) float64
    threshold_method: dict[str, Any]
    iou: np.ndarray  # (U, L) float64, column = label number
    intersect: np.ndarray  # (U, L) int64
    denominator_pixels: np.ndarray  # (U, G) float64
    mask_pixels: np.ndarray  # (U,) int64
    truth: np.ndarray  # (L,) int64
    top_indices: np.ndarray  # (U, n) int64, -1 = empty
    top_scores: np.ndarray  # (U, n) float32
    top_maps: np.ndarray  # (U, n, h, w) float32


def best_per_category(iou: np.ndarray, concepts: ConceptTable) -> tuple[np.ndarray, np.ndarray]:
    """(U, G) best label number and its IoU per category; ties go to the lower number."""
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


def tally_table(result: LayerResult, concepts: ConceptTable) -> pd.DataFrame:
    """The per-unit table in the original release's ``tally.csv`` format, sorted by score."""
    labels, scores = best_per_category(result.iou, concepts)
    best_cat = np.argmax(scores, axis=1)  # ties: the earlier category
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
    return table.sort_values(["score", "unit"], ascending=[False, True], kind="stable").reset_index(drop=True)


def unique_detectors(table: pd.DataFrame, categories: tuple[str, ...], threshold: float) -> dict[str, dict[str, Any]]:
    """Detector counts per category under both conventions.

    per-category: a unit counts in g when its best g-label has IoU > threshold
    (the CVPR 2017 tables); top-label: a unit counts only in the category of its
    overall label, when that exceeds the threshold (the original report's chart).
    ``unique`` counts distinct concepts, ``units`` counts units.
    """
    out: dict[str, dict[str, Any]] = {}
    per_unique, per_units, top_unique, top_units = {}, {}, {}, {}
    detectors = table[table["score"] > threshold]
    for cat in categories:
        hit = table[table[f"{cat}-iou"] > threshold]
        per_unique[cat] = int(hit[f"{cat}-label"].nunique())
        per_units[cat] = int(len(hit))
        top = detectors[detectors["category"] == cat]
        top_unique[cat] = int(top["label"].nunique())
        top_units[cat] = int(len(top))
    out["per-category"] = {"unique": per_unique, "units": per_units, "total_unique": sum(per_unique.values())}
    out["top-label"] = {"unique": top_unique, "units": top_units, "total_unique": sum(top_unique.values())}
    return out


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def write_run(
    run_dir: Path,
    config: dict[str, Any],
    concepts: ConceptTable,
    results: dict[str, LayerResult],
    dataset: ConceptDataset,
    iou_threshold: float,
) -> None:
    """Write a complete run directory; ``summary.json`` goes last and marks it complete."""
    run_dir.mkdir(parents=True, exist_ok=True)
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary_path.unlink()
    layers_dir = run_dir / "layers"
    if layers_dir.exists():
        shutil.rmtree(layers_dir)
    summary: dict[str, Any] = {"key": config["key"], "iou_threshold": iou_threshold, "layers": {}}
    referenced: set[int] = set()
    for name, r in results.items():
        d = layers_dir / name
        d.mkdir(parents=True)
        table = tally_table(r, concepts)
        table.to_csv(d / "tally.csv", index=False, float_format="%.17g")
        np.save(d / "iou.npy", r.iou)
        np.save(d / "thresholds.npy", r.thresholds)
        np.savez(d / "counts.npz", intersect=r.intersect, denominator_pixels=r.denominator_pixels,
                 mask_pixels=r.mask_pixels, truth=r.truth)
        np.savez(d / "top_images.npz", indices=r.top_indices, scores=r.top_scores, maps=r.top_maps)
        referenced.update(int(i) for i in r.top_indices.flatten() if i >= 0)
        detectors = int((table["score"] > iou_threshold).sum())
        summary["layers"][name] = {
            "units": r.units,
            "grid": list(r.grid),
            "detectors": detectors,
            "mean_best_iou": float(table["score"].mean()),
            "unique_detectors": unique_detectors(table, concepts.categories, iou_threshold),
            "threshold_method": r.threshold_method,
        }
    with open(run_dir / "concepts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "name", "category"])
        for c in concepts:
            w.writerow([c.number, c.name, c.category])
    with open(run_dir / "images.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "image"])
        for i in sorted(referenced):
            w.writerow([i, dataset.image_id(i)])
    (run_dir / "concepts.json").write_text(json.dumps(concepts.to_json(), indent=1) + "\n")
    _atomic_json(run_dir / "config.json", config)
    _atomic_json(summary_path, summary)


class Dissection:
    """A finished dissection, loaded from its run directory.

    ``labels``: DataFrame with one row per (layer, unit): layer, unit (1-based),
    category, label, iou, detector.  ``layer(name)`` gives the arrays.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        summary = self.run_dir / "summary.json"
        if not summary.is_file():
            raise DatasetError(
                f"{str(self.run_dir)!r} is not a complete dissection run (no summary.json); "
                "a run that was interrupted resumes when started again with the same arguments"
            )
        self.summary: dict[str, Any] = json.loads(summary.read_text())
        self.config: dict[str, Any] = json.loads((self.run_dir / "config.json").read_text())
        self.concepts = ConceptTable.from_json(json.loads((self.run_dir / "concepts.json").read_text()))

    @classmethod
    def load(cls, run_dir: str | Path) -> "Dissection":
        return cls(run_dir)

    @classmethod
    def load_if_complete(cls, run_dir: Path, key: str, iou_threshold: float) -> "Dissection | None":
        """The finished run in ``run_dir`` if it was made with this key and cut-off, else None."""
        try:
            summary = json.loads((Path(run_dir) / "summary.json").read_text())
        except (OSError, ValueError):
            return None
        if summary.get("key") != key or summary.get("iou_threshold") != iou_threshold:
            return None
        return cls(run_dir)

    # -- access ------------------------------------------------------------------
    @property
    def layers(self) -> list[str]:
        return list(self.summary["layers"])

    @property
    def iou_threshold(self) -> float:
        return float(self.summary["iou_threshold"])

    def _layer_dir(self, layer: str) -> Path:
        if layer not in self.summary["layers"]:
            hint = close_matches(layer, self.layers)
            raise ConfigError(f"layer {layer!r} is not in this dissection ({', '.join(self.layers)})"
                              + (f"; {hint}" if hint else ""))
        return self.run_dir / "layers" / layer

    def tally(self, layer: str) -> pd.DataFrame:
        """The layer's ``tally.csv`` (sorted by score, unit 1-based)."""
        text = {"category": str, "label": str, **{f"{c}-label": str for c in self.concepts.categories}}
        return pd.read_csv(self._layer_dir(layer) / "tally.csv", keep_default_na=False, dtype=text)

    @cached_property
    def labels(self) -> pd.DataFrame:
        frames = []
        for layer in self.layers:
            t = self.tally(layer)
            frames.append(pd.DataFrame({
                "layer": layer,
                "unit": t["unit"],
                "category": t["category"],
                "label": t["label"],
                "iou": t["score"],
                "detector": t["score"] > self.iou_threshold,
            }))
        return pd.concat(frames, ignore_index=True)

    def iou(self, layer: str) -> pd.DataFrame:
        """Units x concepts IoU (index: 1-based unit, columns: concept names)."""
        m = np.load(self._layer_dir(layer) / "iou.npy")
        numbers = self.concepts.numbers()
        names = [self.concepts[n].name for n in numbers]
        return pd.DataFrame(m[:, numbers], index=pd.RangeIndex(1, m.shape[0] + 1, name="unit"), columns=names)

    def thresholds(self, layer: str) -> np.ndarray:
        return np.load(self._layer_dir(layer) / "thresholds.npy")

    def counts(self, layer: str) -> dict[str, np.ndarray]:
        with np.load(self._layer_dir(layer) / "counts.npz") as z:
            return {k: z[k] for k in z.files}

    def top_images(self, layer: str) -> dict[str, np.ndarray]:
        """indices (U, n), scores (U, n), maps (U, n, h, w) of each unit's top images."""
        with np.load(self._layer_dir(layer) / "top_images.npz") as z:
            return {k: z[k] for k in z.files}

    @cached_property
    def image_ids(self) -> dict[int, str]:
        table = pd.read_csv(self.run_dir / "images.csv", keep_default_na=False, dtype={"image": str})
        return dict(zip(table["index"].astype(int), table["image"].astype(str)))

    def unique_detectors(self, layer: str, convention: str = "per-category") -> dict[str, int]:
        if convention not in CONVENTIONS:
            raise ConfigError(f"convention {convention!r} is not one of {CONVENTIONS}")
        self._layer_dir(layer)
        return dict(self.summary["layers"][layer]["unique_detectors"][convention]["unique"])

    def __repr__(self) -> str:
        parts = [f"{l}: {s['detectors']}/{s['units']} detectors" for l, s in self.summary["layers"].items()]
        return f"Dissection({str(self.run_dir)!r}; " + "; ".join(parts) + ")"

    # -- report and plots (netdissect.report) -------------------------------------
    def report(self, out: str | Path | None = None, **options: Any) -> Path:
        """Write the HTML report (default ``RUN_DIR/report``); returns its ``index.html``.

        Options as :func:`netdissect.report.write_report` (``dataset=``,
        ``images=``, ``thumb=``, ``columns=``, ``quality=``, ``progress=``).
        """
        from .report import write_report

        return write_report(self.run_dir, out=out, **options)

    def plot_categories(self, layer: str | None = None, *, convention: str | None = None, ax=None):
        """Bar chart of unique detectors per category; returns the matplotlib Axes.

        With ``layer``: both counting conventions side by side (or the one
        named); without: every layer, one convention (default per-category).
        """
        from .report.plots import plot_categories

        return plot_categories(self, layer, convention=convention, ax=ax)

    def plot_iou_distribution(self, layer: str | None = None, *, bins: int = 40, ax=None):
        """Histogram of each unit's best IoU with the detector cut-off; returns the Axes."""
        from .report.plots import plot_iou_distribution

        return plot_iou_distribution(self, layer, bins=bins, ax=ax)

    def plot_layers(self, *, convention: str = "per-category", ax=None):
        """Unique detectors per layer, stacked by category; returns the Axes."""
        from .report.plots import plot_layers

        return plot_layers(self, convention=convention, ax=ax)

    def _repr_html_(self) -> str:
        from .report.html import summary_html

        return summary_html(self)
