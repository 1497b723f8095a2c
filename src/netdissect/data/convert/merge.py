"""Merging Broden folders into one data set with one label table: :class:`MergedBroden`, :func:`merge_broden`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import DatasetError
from ..broden import BrodenDataset
from ..protocol import Concept, ConceptTable, Sample
from .common import ordered_categories, write_converted


class MergedBroden:
    """Several Broden-format data sets as one, with one label table.

    Concepts are matched by name across the sources (``tree`` of one and
    ``tree`` of another become one concept; the 11 ``-c`` colours of every
    converted source are one colour category).  A name found in several
    categories gets one concept, whose primary category is the one with the
    largest coverage summed over the sources (as Broden does for a label
    seen as object and as part).  Label numbers are renumbered densely: by
    category (Broden's order), then in order of first appearance.  Every
    source must have the same image and label size.  Image ids are
    ``<source folder name>/<id>``.

    Parameters
    ----------
    sources : sequence of str, os.PathLike or BrodenDataset
        The Broden folders (or opened data sets), in order.

    Raises
    ------
    DatasetError
        With no source, when a source does not open, or when the sources'
        image or label sizes differ.
    """

    def __init__(self, sources: Sequence["str | os.PathLike[str] | BrodenDataset"]):
        if len(sources) < 1:
            raise DatasetError("merge needs at least one source folder")
        self.sources = [s if isinstance(s, BrodenDataset) else BrodenDataset(s) for s in sources]
        first = self.sources[0]
        for ds in self.sources[1:]:
            if ds.image_size != first.image_size or ds.label_size != first.label_size:
                raise DatasetError(
                    f"cannot merge {ds.root} (images {ds.image_size[0]}x{ds.image_size[1]}, labels "
                    f"{ds.label_size[0]}x{ds.label_size[1]}) with {first.root} (images "
                    f"{first.image_size[0]}x{first.image_size[1]}, "
                    f"labels {first.label_size[0]}x{first.label_size[1]}): "
                    f"all sources need the same sizes; convert them with the same --size"
                )
        self.image_size = first.image_size
        self.label_size = first.label_size
        # Unify by name.
        order: list[str] = []
        coverage: dict[str, dict[str, float]] = {}
        first_cat: dict[str, str] = {}
        for ds in self.sources:
            for c in ds.concepts:
                if c.name not in coverage:
                    order.append(c.name)
                    coverage[c.name] = {}
                    first_cat[c.name] = c.category
                cov = c.coverage or {c.category: 0.0}
                for cat, v in cov.items():
                    if cat in ds.concepts.categories:
                        coverage[c.name][cat] = coverage[c.name].get(cat, 0.0) + float(v)
                coverage[c.name].setdefault(c.category, 0.0)
        categories = ordered_categories(cat for ds in self.sources for cat in ds.concepts.categories)
        primary = {}
        for name in order:
            cov = coverage[name]
            primary[name] = max(cov, key=lambda c: (cov[c], c == first_cat[name], -categories.index(c)))
        numbered = sorted(order, key=lambda n: (categories.index(primary[n]), order.index(n)))
        self.number = {name: k + 1 for k, name in enumerate(numbered)}
        self.concepts = ConceptTable(
            [Concept(self.number[n], n, primary[n], coverage[n]) for n in numbered],
            [c for c in categories if any(primary[n] == c for n in numbered)] or categories[:1],
        )
        # Per source: old number -> new number.
        self._remap = []
        for ds in self.sources:
            lut = np.zeros(ds.concepts.max_number + 1, dtype=np.int32)
            for c in ds.concepts:
                lut[c.number] = self.number[c.name]
            self._remap.append(lut)
        # Index: (source, index within it) and a prefix per source.
        names = [ds.root.name for ds in self.sources]
        self._prefix = []
        for k, n in enumerate(names):
            self._prefix.append(n if names.count(n) == 1 else f"{n}_{k + 1}")
        self._offsets = np.cumsum([0] + [len(ds) for ds in self.sources])
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __repr__(self) -> str:
        return f"MergedBroden({len(self.sources)} sources, {len(self)} images, {len(self.concepts)} concepts)"

    def _locate(self, index: int) -> tuple[int, int]:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"image index {index} out of range for {n} images")
        s = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return s, i - int(self._offsets[s])

    def _remapped(self, s: int, sample: Sample) -> Sample:
        lut = self._remap[s]
        pixel = lut[sample.pixel_labels] if sample.pixel_labels.size else sample.pixel_labels
        image_labels = lut[sample.image_labels].astype(np.int64) if sample.image_labels.size else sample.image_labels
        return Sample(sample.image, pixel.astype(np.int32, copy=False), image_labels)

    def __getitem__(self, index: int) -> Sample:
        s, i = self._locate(index)
        return self._remapped(s, self.sources[s][i])

    def load_labels(self, index: int) -> Sample:
        """The source's labels of image ``index``, renumbered (``image`` is None)."""
        s, i = self._locate(index)
        return self._remapped(s, self.sources[s].load_labels(i))

    def image_id(self, index: int) -> str:
        """``<source prefix>/<id in the source>``."""
        s, i = self._locate(index)
        return f"{self._prefix[s]}/{self.sources[s].image_id(i)}"

    def split_name(self, index: int) -> str:
        """The split of image ``index`` in its source."""
        s, i = self._locate(index)
        return self.sources[s].split_name(i)

    def image_file(self, index: int) -> Path:
        """The source's encoded image file (copied as is by :func:`write_broden` when the format matches)."""
        s, i = self._locate(index)
        return self.sources[s].image_path(i)

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the sources' fingerprints and the merged concept table (cached)."""
        if self._fingerprint is None:
            h = hashlib.sha256(b"netdissect-merged-1\n")
            for ds in self.sources:
                h.update(ds.fingerprint().encode())
            h.update(self.concepts.fingerprint().encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def spec(self) -> str:
        """``merged:`` and the source folders joined by ``+``."""
        return "merged:" + "+".join(str(ds.root) for ds in self.sources)


def merge_broden(sources, out, *, image_format="jpg", quality=95, workers=0, progress=False,
                 overwrite=False) -> Path:
    """Merge Broden folders (see :class:`MergedBroden`) into one Broden folder ``out``.

    Images whose file format matches ``image_format`` are copied byte for
    byte; label maps are renumbered and written again.
    """
    ds = MergedBroden(sources)
    return write_converted(ds, out, image_format, quality, workers, progress, overwrite)


__all__ = ["MergedBroden", "merge_broden"]
