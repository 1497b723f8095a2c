"""Dissect every checkpoint of a training run (Bau et al. 2017, section 4.3; METHODS A3).

Each checkpoint is dissected into its own sub-run ``OUT/<checkpoint stem>/``
(each resumable, and skipped when already complete), and unique detectors
per category are plotted against the training step, parsed from the file
name (its last number: ``ckpt_001200.pt`` -> 1200), on a log x-axis.

Output folder::

    <stem>/        one dissection run per checkpoint
    series.csv     step, checkpoint, run, layer, convention, category, unique, units, detectors
    series/        index.html and the plots
"""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..errors import ConfigError
from ..labeling.iou import CONVENTIONS

SERIES_CSV = "series.csv"
PAGE_DIR = "series"
_MAGIC = re.compile(r"[*?\[]")


def is_pattern(text: str) -> bool:
    """Whether ``text`` is a glob pattern (holds ``*``, ``?`` or ``[``)."""
    return bool(_MAGIC.search(str(text)))


def step_of(path: str | Path) -> int:
    """The training step in a checkpoint's file name: the last run of digits of its stem.

    Raises
    ------
    ConfigError
        When the name holds no number.
    """
    numbers = re.findall(r"\d+", Path(path).stem)
    if not numbers:
        raise ConfigError(f"checkpoint {str(path)!r}: no training step in its file name (e.g. ckpt_1200.pt)")
    return int(numbers[-1])


def expand_weights(weights: str | Path | Sequence[str | Path]) -> list[Path]:
    """Checkpoint files from glob patterns and paths, in order of training step.

    Parameters
    ----------
    weights : str, Path or sequence of them
        Files or glob patterns (``"runs/ckpt_*.pt"``).

    Returns
    -------
    list of Path
        Distinct files sorted by :func:`step_of` (then by name).

    Raises
    ------
    ConfigError
        When a pattern matches nothing, a file is missing, or a name holds no step.
    """
    items = [weights] if isinstance(weights, (str, Path)) else list(weights)
    if not items:
        raise ConfigError("weights: give at least one checkpoint file or glob pattern")
    files: list[Path] = []
    for item in items:
        if is_pattern(str(item)):
            found = sorted(Path(p) for p in glob.glob(str(item)))
            if not found:
                raise ConfigError(f"weights pattern {str(item)!r} matches no file")
            files += found
        else:
            if not Path(item).is_file():
                raise ConfigError(f"weights file {str(item)!r} does not exist")
            files.append(Path(item))
    unique = list(dict.fromkeys(files))
    stems = [p.stem for p in unique]
    if len(set(stems)) != len(stems):
        raise ConfigError(f"checkpoints {[str(p) for p in unique]} share a file stem; each needs its own sub-run name")
    return sorted(unique, key=lambda p: (step_of(p), p.name))


def checkpoint_series(
    model: Any,
    data: Any,
    *,
    weights: str | Path | Sequence[str | Path],
    layers: list[str],
    out: str | Path,
    progress: bool = True,
    report: bool = False,
    **options: Any,
) -> "CheckpointSeries":
    """Dissect each checkpoint of ``weights`` and tabulate unique detectors against the training step.

    Parameters
    ----------
    model : str or callable
        A model spec (each checkpoint loaded into a fresh model), or a
        callable returning a fresh :class:`~netdissect.models.LoadedModel`
        or module.
    data
        As :func:`netdissect.dissect`.
    weights : str, Path or sequence
        Checkpoint files or glob patterns (:func:`expand_weights`).
    layers : list of str
        Layers to dissect.
    out : str or Path
        Folder of the series; checkpoint ``ckpt_1200.pt`` goes to ``out/ckpt_1200/``.
    progress : bool
        Show progress bars.
    report : bool
        Also write each sub-run's HTML report.
    **options
        Passed to :func:`netdissect.dissect`.

    Returns
    -------
    CheckpointSeries
        The table and plots.

    Raises
    ------
    ConfigError
        For bad ``weights`` or ``model`` (and as :func:`netdissect.dissect`).
    """
    from ..models import load_model, load_weights
    from ..pipeline import as_loaded, dissect

    files = expand_weights(weights)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for path in files:
        if isinstance(model, str):
            loaded = load_model(model, weights=path)
        elif callable(model) and not hasattr(model, "state_dict"):
            loaded = as_loaded(model())
            load_weights(loaded.module, path)
            loaded.weights = str(path)
        else:
            raise ConfigError("checkpoint_series(model=...) needs a spec string or a callable making a fresh "
                              f"model per checkpoint, got {type(model).__name__}")
        run_dir = out / path.stem
        result = dissect(loaded, data, layers=layers, out=run_dir, progress=progress, **options)
        if report:
            result.report()
        runs.append((step_of(path), path, run_dir, result))
    table = series_table(runs)
    table.to_csv(out / SERIES_CSV, index=False)
    series = CheckpointSeries(out)
    series.write_page()
    return series


def series_table(runs: list[tuple[int, Path, Path, Any]]) -> pd.DataFrame:
    """One row per (checkpoint, layer, convention, category) of finished runs (step, path, run_dir, result)."""
    rows = []
    for step, path, run_dir, result in runs:
        for layer in result.layers:
            s = result.summary["layers"][layer]
            for convention in CONVENTIONS:
                counts = s["unique_detectors"][convention]
                for cat in result.concepts.categories:
                    rows.append({"step": step, "checkpoint": str(path), "run": run_dir.name, "layer": layer,
                                 "convention": convention, "category": cat,
                                 "unique": counts["unique"].get(cat, 0), "units": counts["units"].get(cat, 0),
                                 "detectors": s["detectors"], "total_unique": counts["total_unique"]})
    return pd.DataFrame(rows)


class CheckpointSeries:
    """The result of :func:`checkpoint_series`, read from its folder.

    Parameters
    ----------
    out : str or Path
        The series folder.

    Raises
    ------
    DatasetError
        When the folder holds no ``series.csv``.
    """

    def __init__(self, out: str | Path):
        from ..errors import DatasetError

        self.out = Path(out)
        path = self.out / SERIES_CSV
        if not path.is_file():
            raise DatasetError(f"{str(self.out)!r} holds no checkpoint series (no {SERIES_CSV})")
        self.table = pd.read_csv(path, keep_default_na=False, dtype={"category": str, "layer": str, "run": str,
                                                                     "checkpoint": str, "convention": str})

    @property
    def steps(self) -> list[int]:
        """The training steps, ascending."""
        return sorted(set(int(s) for s in self.table["step"]))

    @property
    def layers(self) -> list[str]:
        """The dissected layers."""
        return list(dict.fromkeys(self.table["layer"]))

    def plot(self, layer: str | None = None, *, convention: str = "per-category", ax=None):
        """Unique detectors per category against the training step (log x-axis); returns the Axes."""
        from ..report.experiments import plot_series

        return plot_series(self, layer or self.layers[0], convention=convention, ax=ax)

    def write_page(self) -> Path:
        """Write ``OUT/series/index.html`` with the plots and the table; returns its path."""
        from ..report.experiments import write_series_page

        return write_series_page(self)

    def __repr__(self) -> str:
        return f"CheckpointSeries({str(self.out)!r}; steps {self.steps}, layers {self.layers})"
