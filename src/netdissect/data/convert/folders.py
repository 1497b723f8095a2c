"""One folder per class (DTD, scene folders): :class:`ImageFolders`, :func:`convert_folders`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DatasetError
from ..colornames import COLOR_CONCEPTS
from ..protocol import Concept, ConceptTable
from .common import (
    IMAGE_SUFFIXES,
    ConvertedDataset,
    Record,
    color_concepts,
    images_in,
    ordered_categories,
    write_converted,
)


class ImageFolders(ConvertedDataset):
    """An image-level data set: one folder per class under ``source``.

    Every image in ``source/<class>/`` (recursively) carries the image-level
    concept ``<class><suffix>`` of ``category`` (``texture`` by default; the
    suffix defaults to ``-s`` for ``scene``, as in Broden, and to nothing
    otherwise).  Files directly in ``source`` and hidden folders are
    ignored; a class folder without images raises :class:`DatasetError`.
    All images go to ``split``.
    """

    kind = "folders"

    def __init__(
        self,
        source: "str | os.PathLike[str]",
        *,
        category: str = "texture",
        suffix: str | None = None,
        split: str = "train",
        size=224,
        fit: str = "stretch",
        colors: bool = True,
    ):
        super().__init__(size, fit, colors)
        self.source = Path(source).expanduser()
        if not self.source.is_dir():
            raise DatasetError(f"class-folder source {self.source} is not a folder")
        category = str(category).strip()
        if not category or category == "color" and colors:
            raise ConfigError(f"category={category!r} must be a non-empty name other than 'color'")
        if suffix is None:
            suffix = "-s" if category == "scene" else ""
        folders = sorted(d for d in self.source.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not folders:
            raise DatasetError(f"class-folder source {self.source} has no class folders (one folder per class)")
        first = len(COLOR_CONCEPTS) + 1 if colors else 1
        concepts = color_concepts() if colors else []
        records = []
        for k, folder in enumerate(folders):
            files = images_in(folder)
            if not files:
                raise DatasetError(
                    f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); every class needs at "
                    f"least one image"
                )
            concepts.append(Concept(first + k, folder.name + suffix, category))
            for p in files:
                rel = p.relative_to(self.source).with_suffix("").as_posix()
                records.append(Record(rel, split, p, {"label": first + k}))
        self.concepts = ConceptTable(concepts, ordered_categories((["color"] if colors else []) + [category]))
        self.records = records
        self.options = {"source": str(self.source.resolve()), "category": category, "suffix": suffix, "split": split}

    def _source_labels(self, record: Record) -> tuple[list[np.ndarray], list[int]]:
        return [], [record.data["label"]]


def convert_folders(source, out, *, category="texture", suffix=None, split="train", size=224, fit="stretch",
                    colors=True, image_format="jpg", quality=95, workers=0, progress=False,
                    overwrite=False) -> Path:
    """Convert a folder-per-class data set (see :class:`ImageFolders`) into a Broden folder ``out``."""
    ds = ImageFolders(source, category=category, suffix=suffix, split=split, size=size, fit=fit, colors=colors)
    return write_converted(ds, out, image_format, quality, workers, progress, overwrite)


__all__ = ["ImageFolders", "convert_folders"]
