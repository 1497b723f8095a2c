"""Word descriptions of units, read back from a run directory (see :func:`netdissect.describe`).

A describe run writes, for its labeling method (``words-soft_wpmi`` by
default), two files under ``RUN_DIR/labels/``:

- ``<method>.csv``: the label table, one row per (layer, unit): layer, unit
  (1-based), label (the best word), score, concept (the source name(s) the
  word stands for, e.g. Broden's ``red-c``), then ``label_2``, ``score_2``...
- ``<method>.json``: what made it (model, layers, probe, image-text model,
  vocabulary, similarity function and parameters, the content key).

That is all a describe-only run directory holds (plus ``.describe/``, the
resumable state of its engine pass); beside a dissection the same two files
sit next to the IoU results, and :class:`netdissect.Dissection` lists the
method in :meth:`~netdissect.results.DissectionData.label_methods`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..errors import ConfigError, DatasetError
from ..paths import decode_name, encode_name
from .rundir import LABELS_DIR, SUMMARY

#: ``kind`` recorded in a word table's JSON file
KIND = "words"


def word_methods(run_dir: str | Path) -> list[str]:
    """The word-labeling methods with a finished table in ``run_dir``.

    Parameters
    ----------
    run_dir : str or Path
        A run directory.

    Returns
    -------
    list of str
        Method names, sorted.
    """
    d = Path(run_dir) / LABELS_DIR
    out = []
    if d.is_dir():
        for meta in d.glob("*.json"):
            try:
                info = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(info, dict) and info.get("kind") == KIND and meta.with_suffix(".csv").is_file():
                out.append(decode_name(meta.stem))
    return sorted(out)


def read_label_csv(path: Path) -> pd.DataFrame:
    """A label table, its text columns (layer, label..., concept) read as text (``"007"`` stays ``"007"``).

    Parameters
    ----------
    path : Path
        The CSV file.

    Returns
    -------
    pandas.DataFrame
        The table.
    """
    header = pd.read_csv(path, nrows=0).columns
    text = {c: str for c in header if c in ("layer", "concept", "category") or c.startswith("label")}
    return pd.read_csv(path, keep_default_na=False, dtype=text)


class Description:
    """The word labels of one method in a run directory (CLIP-Dissect, Oikarinen & Weng 2023).

    Parameters
    ----------
    run_dir : str or Path
        The run directory.
    method : str, optional
        The method; may be left out when the folder has one word table.

    Attributes
    ----------
    labels : pandas.DataFrame
        One row per (layer, unit): layer, unit (1-based), label, score,
        concept, label_2, score_2, ...
    info : dict
        What made it (``labels/<method>.json``).

    Raises
    ------
    DatasetError
        When the folder has no finished word table.
    ConfigError
        For a method it has no table of, or no ``method`` when it has several.
    """

    def __init__(self, run_dir: str | Path, method: str | None = None):
        self.run_dir = Path(run_dir)
        methods = word_methods(self.run_dir)
        if not methods:
            raise DatasetError(f"{str(self.run_dir)!r} holds no word descriptions (labels/<method>.csv and .json "
                               "from `netdissect describe`)")
        if method is None:
            if len(methods) > 1:
                raise ConfigError(f"{str(self.run_dir)!r} holds word tables of several methods "
                                  f"({', '.join(methods)}): name one")
            method = methods[0]
        if method not in methods:
            raise ConfigError(f"{str(self.run_dir)!r} has no word table of method {method!r} "
                              f"(it has: {', '.join(methods)})")
        self.method = method
        base = self.run_dir / LABELS_DIR / encode_name(method)
        self.info: dict[str, Any] = json.loads(base.with_suffix(".json").read_text())
        self.labels: pd.DataFrame = read_label_csv(base.with_suffix(".csv"))

    @classmethod
    def load(cls, run_dir: str | Path, method: str | None = None) -> "Description":
        """Read ``method``'s word table in ``run_dir`` (see the class)."""
        return cls(run_dir, method)

    @classmethod
    def load_if_complete(cls, run_dir: str | Path, method: str, key: str) -> "Description | None":
        """The table of ``method`` in ``run_dir`` when it was made with this content key, else None."""
        meta = Path(run_dir) / LABELS_DIR / f"{encode_name(method)}.json"
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(info, dict) or info.get("key") != key or not meta.with_suffix(".csv").is_file():
            return None
        return cls(run_dir, method)

    @property
    def layers(self) -> list[str]:
        """The described layers, in order."""
        return list(self.info.get("layers", list(dict.fromkeys(self.labels["layer"]))))

    @property
    def has_dissection(self) -> bool:
        """Whether the run directory also holds a finished dissection (IoU labels)."""
        return (self.run_dir / SUMMARY).is_file()

    def table(self, layer: str) -> pd.DataFrame:
        """One layer's rows.

        Raises
        ------
        ConfigError
            For a layer this run did not describe.
        """
        if layer not in self.layers:
            raise ConfigError(f"layer {layer!r} was not described ({', '.join(self.layers)})")
        return self.labels[self.labels["layer"] == layer].reset_index(drop=True)

    def evaluate(self, truth: Sequence[str], *, layer: str | None = None, text_model: Any = None) -> dict[str, Any]:
        """Top-1/top-5 accuracy (and mean cosine) against known names of a layer's units.

        See :func:`netdissect.labeling.words.evaluate`; ``layer`` defaults
        to the only (or last) described layer.
        """
        from ..labeling.words import evaluate

        layer = layer or self.layers[-1]
        return evaluate(self.table(layer), truth, text_model=text_model)

    def agreement(self) -> pd.DataFrame:
        """Where the words agree with the IoU labels of the dissection in the same folder.

        Raises
        ------
        DatasetError
            When the folder holds no finished dissection.
        """
        from ..labeling.words import agreement
        from .dissection import DissectionData

        return agreement(DissectionData(self.run_dir).labels, self.labels)

    def __repr__(self) -> str:
        info = self.info
        return (f"Description({str(self.run_dir)!r}, method={self.method!r}: {len(self.labels)} units of "
                f"{', '.join(self.layers)}; {info.get('similarity')} over {info.get('words')} words of "
                f"{info.get('vocabulary')!r} with {info.get('image_text')!r})")
