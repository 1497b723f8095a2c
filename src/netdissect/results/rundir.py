"""The run directory: its layout, and writing a finished dissection into it.

Layout of ``RUN_DIR``::

    config.json        every parameter, the model/data identity, versions (:class:`RunInfo`)
    summary.json       per layer: units, detectors, unique detectors per category
                       (both counting conventions); written last, it marks the run complete
    concepts.csv       number,name,category: the columns of the IoU matrices
    concepts.json      the concept table (categories, coverage)
    images.csv         index,image: the data set images that appear as top images
    layers/<layer>/    (<layer> encoded by :func:`netdissect.paths.encode_name`)
        tally.csv      per unit, the original NetDissect release format (unit 1-based)
        iou.npy        (units, max label + 1) float64 IoU; column = label number
        thresholds.npy (units,) float64 activation thresholds
        counts.npz     intersect (units, labels), denominator_pixels (units, categories),
                       mask_pixels (units,), truth (labels,): the raw tallies
        top_images.npz indices (units, n), scores (units, n), maps (units, n, h, w)
    labels/<method>.csv  label tables of other labeling methods (layer, unit, label, score, ...)
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..data.protocol import ConceptTable
from ..labeling.base import LayerResult
from ..labeling.iou import IoULabeler
from ..paths import encode_name

LAYERS_DIR = "layers"
LABELS_DIR = "labels"
SUMMARY = "summary.json"
CONFIG = "config.json"


def layer_dir(run_dir: Path, layer: str) -> Path:
    """The folder of ``layer``'s results inside ``run_dir`` (never outside it)."""
    return Path(run_dir) / LAYERS_DIR / encode_name(layer)


@dataclass
class RunInfo:
    """What ``config.json`` records about a run.

    Attributes
    ----------
    key : str
        Content key of the run (hash of everything below that affects results).
    netdissect : str
        Package version.
    model, weights, weights_sha256 : str
        The model spec, the weights file (or origin) and a hash of its state.
    preprocess : dict
        The model's input preprocessing.
    layers : list of str
        Dissected layers.
    data, data_fingerprint : str
        The data spec and its content key.
    images : int
        Images (or samples) in the data.
    options : dict
        The options that affect the statistics.
    source : dict
        How to rebuild the source (kind, data, segmenter, generator...).
    config : dict
        Every option (:class:`netdissect.config.DissectConfig`).
    activation_cache : str
        "disk" or "recompute": where the second pass took activations from.
    label_size, image_size : list of int
        (h, w) of labels and images.
    processes : int
        Processes that ran it (``torch.distributed`` world size).
    versions : dict
        Library versions.
    started : str
        Local start time.
    seconds : float
        Wall-clock duration.
    """

    key: str
    netdissect: str
    model: str
    weights: str | None
    weights_sha256: str
    preprocess: dict[str, Any]
    layers: list[str]
    data: str
    data_fingerprint: str
    images: int
    options: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    activation_cache: str = "recompute"
    label_size: list[int] = field(default_factory=list)
    image_size: list[int] = field(default_factory=list)
    processes: int = 1
    versions: dict[str, str] = field(default_factory=dict)
    started: str = ""
    seconds: float = 0.0

    def identity(self) -> dict[str, Any]:
        """The fields whose hash is the run's key (everything that affects the statistics)."""
        keys = ("netdissect", "model", "weights", "weights_sha256", "preprocess", "layers", "data",
                "data_fingerprint", "images", "options")
        return {k: getattr(self, k) for k in keys}

    def to_json(self) -> dict[str, Any]:
        """Every field, as the dict written to ``config.json``."""
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "RunInfo":
        """Read a ``config.json`` (unknown keys are ignored, missing optional ones defaulted)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in known})


def atomic_json(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def write_run(
    run_dir: Path,
    info: RunInfo,
    concepts: ConceptTable,
    results: dict[str, LayerResult],
    image_id,
    labeler: IoULabeler,
) -> None:
    """Write a complete run directory; ``summary.json`` goes last and marks it complete.

    Parameters
    ----------
    run_dir : Path
        The run directory (created when missing).
    info : RunInfo
        Goes to ``config.json``.
    concepts : ConceptTable
        The concepts (columns of the IoU matrices).
    results : dict of str to LayerResult
        Per layer.
    image_id : callable
        Data set index -> image id, for ``images.csv``.
    labeler : IoULabeler
        Makes each layer's ``tally.csv`` and summary (with its cut-off).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    summary_path = run_dir / SUMMARY
    if summary_path.exists():
        summary_path.unlink()
    layers_dir = run_dir / LAYERS_DIR
    if layers_dir.exists():
        shutil.rmtree(layers_dir)
    summary: dict[str, Any] = {"key": info.key, "iou_threshold": labeler.threshold, "layers": {}}
    referenced: set[int] = set()
    for name, r in results.items():
        d = layer_dir(run_dir, name)
        d.mkdir(parents=True)
        table = labeler.label(r, concepts)
        table.to_csv(d / "tally.csv", index=False, float_format="%.17g")
        np.save(d / "iou.npy", r.iou)
        np.save(d / "thresholds.npy", r.thresholds)
        np.savez(d / "counts.npz", intersect=r.intersect, denominator_pixels=r.denominator_pixels,
                 mask_pixels=r.mask_pixels, truth=r.truth)
        np.savez(d / "top_images.npz", indices=r.top_indices, scores=r.top_scores, maps=r.top_maps)
        referenced.update(int(i) for i in r.top_indices.flatten() if i >= 0)
        summary["layers"][name] = labeler.summary(r, table, concepts)
    with open(run_dir / "concepts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "name", "category"])
        for c in concepts:
            w.writerow([c.number, c.name, c.category])
    write_image_ids(run_dir, ((i, image_id(i)) for i in sorted(referenced)))
    (run_dir / "concepts.json").write_text(json.dumps(concepts.to_json(), indent=1) + "\n")
    atomic_json(run_dir / CONFIG, info.to_json())
    atomic_json(summary_path, summary)


def write_image_ids(run_dir: Path, rows: Iterable[tuple[int, str]]) -> None:
    """Write ``images.csv`` (index, image id)."""
    with open(run_dir / "images.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "image"])
        for i, image in rows:
            w.writerow([i, image])


def write_labels(run_dir: Path, method: str, table: pd.DataFrame) -> Path:
    """Write the label table of ``method`` (columns layer, unit, label, score, ...) to ``labels/<method>.csv``."""
    missing = [c for c in ("layer", "unit", "label", "score") if c not in table.columns]
    if missing:
        raise ValueError(f"label table of {method!r} lacks columns {missing}")
    d = Path(run_dir) / LABELS_DIR
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{encode_name(method)}.csv"
    tmp = path.with_suffix(".tmp")
    table.to_csv(tmp, index=False, float_format="%.17g")
    os.replace(tmp, path)
    return path
