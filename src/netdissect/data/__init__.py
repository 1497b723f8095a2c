"""Concept data: the data set protocol and the ways to open a data set.

This package holds the protocol, the Broden reader and writer, synthetic
concepts, converters, colour naming and downloads.
:func:`open_dataset` turns a spec into a data set: a folder in Broden format
(``path/to/broden`` or ``path/to/broden?split=val``), or a registered name
with options, e.g. ``synthetic``, ``synthetic:n=500,seed=1``, or a
downloaded data set such as ``broden1_224`` / ``broden1_224:split=train``
(looked up under :func:`netdissect.data.download.data_root`, or
``broden1_224:root=DIR``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import DatasetError, close_matches
from .protocol import Concept, ConceptDataset, ConceptTable, Sample

# name -> factory(**options) for data sets that are not a folder path
_DATASETS: dict[str, Callable[..., ConceptDataset]] = {}


def register_dataset(name: str):
    """Decorator registering a data set factory ``fn(**options) -> ConceptDataset`` under ``name``."""

    def deco(fn):
        _DATASETS[name] = fn
        return fn

    return deco


def list_datasets() -> list[str]:
    """Names of the registered data sets (``synthetic``, the downloadable Broden sets...)."""
    return sorted(_DATASETS)


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

    ``spec`` is a data set object (returned as is), a folder in Broden format
    (optionally ``FOLDER?split=NAME`` to keep one split), or
    ``NAME[:KEY=VALUE,...]`` for a registered name (see :func:`list_datasets`),
    which also takes its options after ``?`` (``broden1_224?split=val``).

    Parameters
    ----------
    spec : str, pathlib.Path or ConceptDataset
        What to open.

    Returns
    -------
    ConceptDataset
        The data set.

    Raises
    ------
    DatasetError
        For a malformed or unknown option, a file that is not a folder, or a
        name that is neither a folder nor registered.
    """
    if not isinstance(spec, (str, Path)):
        return spec
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        from .broden import BrodenDataset

        return BrodenDataset(path)
    base, question, query = text.partition("?")
    query_options = _parse_options(query.replace("&", ","), text) if question else {}
    if question:
        base_path = Path(base).expanduser()
        if base_path.is_dir():
            from .broden import BrodenDataset

            unknown = sorted(set(query_options) - {"split"})
            if unknown:
                raise DatasetError(
                    f"data spec {text!r}: unknown option(s) {', '.join(unknown)} for a Broden folder; "
                    f"allowed: split (e.g. {base}?split=val)"
                )
            return BrodenDataset(base_path, split=query_options.get("split"))
    name, _, rest = base.partition(":")
    if name in _DATASETS:
        return _DATASETS[name](**{**_parse_options(rest, text), **query_options})
    if path.exists():
        raise DatasetError(f"data {text!r} is a file, not a folder in Broden format")
    hint = close_matches(name, _DATASETS)
    raise DatasetError(
        f"data {text!r} is neither an existing folder nor a known data set name "
        f"(known: {', '.join(sorted(_DATASETS))})" + (f"; {hint}" if hint else "")
    )


# Register the built-in data sets.
from . import synthetic as _synthetic  # noqa: E402,F401
from .download import KNOWN_DATASETS as _KNOWN_DOWNLOADS  # noqa: E402


def _downloaded_factory(name: str):
    def open_downloaded(root: str | None = None, split: str | None = None, **unknown) -> ConceptDataset:
        if unknown:
            raise DatasetError(
                f"data set {name!r}: unknown option(s) {', '.join(sorted(unknown))}; allowed: root, split"
            )
        from .broden import BrodenDataset
        from .download import downloaded_folder

        return BrodenDataset(downloaded_folder(name, root), split=split or None)

    open_downloaded.__doc__ = f"The downloaded {name!r} (``netdissect data download {name}``)."
    return open_downloaded


for _name in _KNOWN_DOWNLOADS:
    register_dataset(_name)(_downloaded_factory(_name))

__all__ = [
    "Concept",
    "ConceptDataset",
    "ConceptTable",
    "Sample",
    "list_datasets",
    "open_dataset",
    "register_dataset",
]
