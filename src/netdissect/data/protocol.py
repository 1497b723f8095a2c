"""The concept-data protocol every data source implements.

A concept data set is a sequence of :class:`Sample` s that share one image size
and one label size, plus a :class:`ConceptTable` that names every label number
and gives its category.  Label number 0 always means "no label".

Pixel labels come as label *layers*: an image may carry several labels at the
same pixel (an object and its part, a colour and a texture), each in its own
layer.  Image-level labels (scenes, whole-image textures) cover every pixel of
their image.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import DatasetError


@dataclass(frozen=True)
class Concept:
    """One labelled concept.

    ``number`` is the code used in label maps (>= 1); ``category`` is its
    primary category, the only one it is scored in; ``coverage`` maps each
    category the label appears in to its coverage there (used to pick the
    primary category and kept for writing Broden files).
    """

    number: int
    name: str
    category: str
    coverage: dict[str, float] = field(default_factory=dict, compare=False)


class ConceptTable:
    """The label numbers of a data set, their names and categories.

    ``categories`` is ordered; concept numbers need not be dense.

    Parameters
    ----------
    concepts : iterable of Concept
        The concepts, each with a distinct label number >= 1.
    categories : sequence of str
        Distinct category names, in order; every concept's category is one.

    Raises
    ------
    DatasetError
        For duplicate categories, a label number < 1 or used twice, or a
        concept whose category is not listed.
    """

    def __init__(self, concepts: Iterable[Concept], categories: Sequence[str]):
        self.categories: tuple[str, ...] = tuple(categories)
        if len(set(self.categories)) != len(self.categories):
            raise DatasetError(f"duplicate category names in {self.categories}")
        self._by_number: dict[int, Concept] = {}
        for c in concepts:
            if c.number < 1:
                raise DatasetError(
                    f"concept {c.name!r} has label number {c.number}; numbers start at 1 (0 means no label)"
                )
            if c.number in self._by_number:
                raise DatasetError(
                    f"label number {c.number} is used twice ({self._by_number[c.number].name!r}, {c.name!r})"
                )
            if c.category not in self.categories:
                raise DatasetError(
                    f"concept {c.name!r} has category {c.category!r}, not one of {list(self.categories)}"
                )
            self._by_number[c.number] = c

    # -- lookups ---------------------------------------------------------
    def __len__(self) -> int:
        return len(self._by_number)

    def __iter__(self):
        return iter(sorted(self._by_number.values(), key=lambda c: c.number))

    def __getitem__(self, number: int) -> Concept:
        try:
            return self._by_number[int(number)]
        except KeyError:
            raise DatasetError(f"label number {number} is not in the concept table") from None

    def __contains__(self, number: object) -> bool:
        return number in self._by_number

    @property
    def max_number(self) -> int:
        """The largest label number (0 for an empty table)."""
        return max(self._by_number, default=0)

    def by_name(self, name: str) -> Concept:
        """The concept called ``name``; raises DatasetError when there is none."""
        for c in self._by_number.values():
            if c.name == name:
                return c
        raise DatasetError(f"no concept named {name!r}")

    def names(self) -> list[str]:
        """Names indexed by label number (``""`` for 0 and unused numbers)."""
        out = [""] * (self.max_number + 1)
        for c in self._by_number.values():
            out[c.number] = c.name
        return out

    def category_index(self) -> np.ndarray:
        """(max_number + 1,) int64: primary category index per label number, -1 where none."""
        out = np.full(self.max_number + 1, -1, dtype=np.int64)
        for c in self._by_number.values():
            out[c.number] = self.categories.index(c.category)
        return out

    def numbers(self) -> list[int]:
        """The label numbers in use, ascending."""
        return sorted(self._by_number)

    def to_json(self) -> dict:
        """Categories and concepts (number, name, category, coverage) as a JSON-ready dict."""
        return {
            "categories": list(self.categories),
            "concepts": [
                {"number": c.number, "name": c.name, "category": c.category, "coverage": c.coverage}
                for c in self
            ],
        }

    @classmethod
    def from_json(cls, obj: dict) -> "ConceptTable":
        """The table :meth:`to_json` wrote."""
        return cls(
            [Concept(int(c["number"]), c["name"], c["category"], dict(c.get("coverage", {}))) for c in obj["concepts"]],
            obj["categories"],
        )

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the table's JSON (keys sorted)."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()


@dataclass
class Sample:
    """One image with its labels.

    image: (H, W, 3) uint8 RGB at the data set's ``image_size``.
    pixel_labels: (L, sh, sw) int32 label numbers at ``label_size``; L may be 0.
    image_labels: (M,) int64 label numbers that cover the whole image.
    """

    image: np.ndarray | None
    pixel_labels: np.ndarray
    image_labels: np.ndarray


@runtime_checkable
class ConceptDataset(Protocol):
    """What the dissection engine needs from a concept data set.

    Implementations: :class:`netdissect.data.broden.BrodenDataset`,
    :class:`netdissect.data.synthetic.SyntheticConcepts`.
    """

    concepts: ConceptTable
    image_size: tuple[int, int]  # (ih, iw)
    label_size: tuple[int, int]  # (sh, sw)

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample:
        """The image and its labels."""

    def load_labels(self, index: int) -> Sample:
        """The labels only (``image`` is None): the cheap path for a second pass."""

    def image_id(self, index: int) -> str:
        """A short, stable name of the image (a relative path for files)."""

    def fingerprint(self) -> str:
        """A content key: equal keys mean the same images and labels."""

    def spec(self) -> str:
        """A string that :func:`netdissect.data.open_dataset` opens again."""
