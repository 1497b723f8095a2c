"""A finished dissection, read back from its run directory (see :mod:`netdissect.results.rundir`)."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.protocol import ConceptTable
from ..errors import ConfigError, DatasetError, close_matches
from ..labeling.iou import CONVENTIONS, is_detector
from ..paths import decode_name
from .rundir import CONFIG, LABELS_DIR, SUMMARY, RunInfo, layer_dir


class DissectionData:
    """The saved results of a dissection: tables, matrices, top images.

    ``labels`` is a DataFrame with one row per (layer, unit): layer, unit
    (1-based), category, label, iou, detector, method (``"iou"``); the label
    tables of other methods (words from :func:`netdissect.describe`) are
    :meth:`label_table`.  The per-layer accessors take
    a layer name and raise :class:`ConfigError` (with close matches) for one
    the run does not have.

    Parameters
    ----------
    run_dir : str or Path
        A complete run directory.

    Raises
    ------
    DatasetError
        When ``run_dir`` holds no complete run (no ``summary.json``).
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        summary = self.run_dir / SUMMARY
        if not summary.is_file():
            from .description import word_methods

            if word_methods(self.run_dir):
                raise DatasetError(
                    f"{str(self.run_dir)!r} holds word descriptions only (`netdissect describe`), no dissection: "
                    f"read them with netdissect.Description.load({str(self.run_dir)!r}), or dissect into the same "
                    "folder to have IoU labels beside them"
                )
            raise DatasetError(
                f"{str(self.run_dir)!r} is not a complete dissection run (no summary.json); "
                "a run that was interrupted resumes when started again with the same arguments"
            )
        self.summary: dict[str, Any] = json.loads(summary.read_text())
        self.config: dict[str, Any] = json.loads((self.run_dir / CONFIG).read_text())
        self.concepts = ConceptTable.from_json(json.loads((self.run_dir / "concepts.json").read_text()))

    @classmethod
    def load(cls, run_dir: str | Path):
        """Read the run in ``run_dir``."""
        return cls(run_dir)

    @classmethod
    def load_if_complete(cls, run_dir: Path, key: str, iou_threshold: float):
        """The finished run in ``run_dir`` if it was made with this key and cut-off, else None."""
        try:
            summary = json.loads((Path(run_dir) / SUMMARY).read_text())
        except (OSError, ValueError):
            return None
        if summary.get("key") != key or summary.get("iou_threshold") != iou_threshold:
            return None
        return cls(run_dir)

    # -- access ------------------------------------------------------------------
    @cached_property
    def info(self) -> RunInfo:
        """``config.json`` as a typed :class:`RunInfo`."""
        return RunInfo.from_json(self.config)

    @property
    def layers(self) -> list[str]:
        """The dissected layers, in order."""
        return list(self.summary["layers"])

    @property
    def iou_threshold(self) -> float:
        """The detector cut-off of this run."""
        return float(self.summary["iou_threshold"])

    def layer_dir(self, layer: str) -> Path:
        """The folder of ``layer``'s files.

        Raises
        ------
        ConfigError
            For a layer this run does not have.
        """
        if layer not in self.summary["layers"]:
            hint = close_matches(layer, self.layers)
            raise ConfigError(f"layer {layer!r} is not in this dissection ({', '.join(self.layers)})"
                              + (f"; {hint}" if hint else ""))
        return layer_dir(self.run_dir, layer)

    def tally(self, layer: str) -> pd.DataFrame:
        """The layer's ``tally.csv`` (sorted by score, unit 1-based)."""
        text = {"category": str, "label": str, **{f"{c}-label": str for c in self.concepts.categories}}
        return pd.read_csv(self.layer_dir(layer) / "tally.csv", keep_default_na=False, dtype=text)

    @cached_property
    def labels(self) -> pd.DataFrame:
        """One row per (layer, unit): layer, unit (1-based), category, label, iou, detector, method ("iou")."""
        frames = []
        for layer in self.layers:
            t = self.tally(layer)
            frames.append(pd.DataFrame({
                "layer": layer,
                "unit": t["unit"],
                "category": t["category"],
                "label": t["label"],
                "iou": t["score"],
                "detector": is_detector(t["score"], self.iou_threshold),
                "method": "iou",
            }))
        return pd.concat(frames, ignore_index=True)

    def label_methods(self) -> list[str]:
        """Labeling methods with a table in this run: ``"iou"`` first, then any in ``labels/``."""
        d = self.run_dir / LABELS_DIR
        others = sorted(decode_name(p.stem) for p in d.glob("*.csv")) if d.is_dir() else []
        return ["iou"] + [m for m in others if m != "iou"]

    def label_table(self, method: str) -> pd.DataFrame:
        """The label table of ``method`` (for ``"iou"``: :attr:`labels`).

        A word table (:func:`netdissect.describe`) has the columns layer,
        unit (1-based), label, score, concept, label_2, score_2, ...

        Raises
        ------
        ConfigError
            For a method without a table in this run.
        """
        if method == "iou":
            return self.labels
        from ..paths import encode_name

        path = self.run_dir / LABELS_DIR / f"{encode_name(method)}.csv"
        if not path.is_file():
            raise ConfigError(f"this run has no labels from method {method!r} "
                              f"(it has: {', '.join(self.label_methods())})")
        from .description import read_label_csv

        return read_label_csv(path)

    def _load(self, layer: str, name: str) -> dict[str, np.ndarray] | np.ndarray:
        """A layer's .npy array or .npz arrays, never unpickling (object arrays are refused)."""
        path = self.layer_dir(layer) / name
        try:
            if name.endswith(".npz"):
                with np.load(path, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}
            return np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DatasetError(f"{path} is missing: the run directory {str(self.run_dir)!r} is incomplete") from None
        except (ValueError, OSError, EOFError) as exc:  # object arrays, truncated or foreign files
            raise DatasetError(f"{path} cannot be read as netdissect arrays ({str(exc).splitlines()[0]}); "
                               "it holds pickled objects or is damaged: dissect again into a fresh --out") from None

    def iou(self, layer: str) -> pd.DataFrame:
        """Units x concepts IoU (index: 1-based unit, columns: concept names)."""
        m = self._load(layer, "iou.npy")
        numbers = self.concepts.numbers()
        names = [self.concepts[n].name for n in numbers]
        return pd.DataFrame(m[:, numbers], index=pd.RangeIndex(1, m.shape[0] + 1, name="unit"), columns=names)

    def thresholds(self, layer: str) -> np.ndarray:
        """(U,) float64 per-unit activation thresholds."""
        return self._load(layer, "thresholds.npy")

    def counts(self, layer: str) -> dict[str, np.ndarray]:
        """The raw tallies: intersect, denominator_pixels, mask_pixels, truth."""
        return self._load(layer, "counts.npz")

    def top_images(self, layer: str) -> dict[str, np.ndarray]:
        """The ``indices`` (U, n), ``scores`` (U, n) and ``maps`` (U, n, h, w) of each unit's top images."""
        return self._load(layer, "top_images.npz")

    @cached_property
    def image_ids(self) -> dict[int, str]:
        """Data set index -> image id, for every image that is some unit's top image."""
        table = pd.read_csv(self.run_dir / "images.csv", keep_default_na=False, dtype={"image": str})
        return dict(zip(table["index"].astype(int), table["image"].astype(str)))

    def unique_detectors(self, layer: str, convention: str = "per-category") -> dict[str, int]:
        """Unique detectors per category of ``layer`` under ``convention`` (see :data:`CONVENTIONS`)."""
        if convention not in CONVENTIONS:
            raise ConfigError(f"convention {convention!r} is not one of {CONVENTIONS}")
        self.layer_dir(layer)
        return dict(self.summary["layers"][layer]["unique_detectors"][convention]["unique"])

    def __repr__(self) -> str:
        parts = [f"{l}: {s['detectors']}/{s['units']} detectors" for l, s in self.summary["layers"].items()]
        return f"{type(self).__name__}({str(self.run_dir)!r}; " + "; ".join(parts) + ")"
