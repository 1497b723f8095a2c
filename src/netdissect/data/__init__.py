"""Concept data: the protocol, the Broden reader and writer, synthetic concepts.

:func:`open_dataset` turns a spec into a data set: a folder in Broden format,
or a registered name with options, e.g. ``synthetic`` or
``synthetic:n=500,seed=1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import DatasetError, close_matches
from .protocol import Concept, ConceptDataset, ConceptTable, Sample

#: name -> factory(**options) for data sets that are not a folder path.
DATASETS: dict[str, Callable[..., ConceptDataset]] = {}


def register_dataset(name: str):
    """Decorator registering a data set factory under ``name``."""

    def deco(fn):
        DATASETS[name] = fn
        return fn

    return deco


def _parse_options(text: str, spec: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise DatasetError(
                f"data spec {spec!r}: option {part!r} is not KEY=VALUE (example: synthetic:n=500,seed=1)"
            )
        options[key.strip()] = value.strip()
    return options


def open_dataset(spec: "str | Path | ConceptDataset") -> ConceptDataset:
    """Open a concept data set from a spec.

    ``spec`` is a data set object (returned as is), a folder in Broden format,
    or ``NAME[:KEY=VALUE,...]`` for a registered name (see :data:`DATASETS`).
    """
    if not isinstance(spec, (str, Path)):
        return spec
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        from .broden import BrodenDataset

        return BrodenDataset(path)
    name, _, rest = text.partition(":")
    if name in DATASETS:
        return DATASETS[name](**_parse_options(rest, text))
    if path.exists():
        raise DatasetError(f"data {text!r} is a file, not a folder in Broden format")
    hint = close_matches(name, DATASETS)
    raise DatasetError(
        f"data {text!r} is neither an existing folder nor a known data set name "
        f"(known: {', '.join(sorted(DATASETS))})" + (f"; {hint}" if hint else "")
    )


# Register the built-in data sets.
from . import synthetic as _synthetic  # noqa: E402,F401

__all__ = [
    "Concept",
    "ConceptDataset",
    "ConceptTable",
    "Sample",
    "DATASETS",
    "open_dataset",
    "register_dataset",
]
