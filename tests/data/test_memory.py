"""Tests of the in-memory concept data set (netdissect.data.memory.ArrayConcepts)."""

from __future__ import annotations

import numpy as np
import pytest

from netdissect.data.memory import ArrayConcepts
from netdissect.data.protocol import Concept, ConceptTable


def table(name: str = "car") -> ConceptTable:
    return ConceptTable([Concept(1, "red-c", "color"), Concept(2, name, "object"), Concept(3, "street-s", "scene")],
                        ["color", "object", "scene"])


def arrays():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    pixel = rng.integers(0, 3, (3, 2, 4, 4)).astype(np.int32)
    return images, pixel, [[3], [], [3]]


def test_same_content_same_fingerprint():
    images, pixel, image_labels = arrays()
    a = ArrayConcepts(images, pixel, table(), image_labels)
    b = ArrayConcepts(images.copy(), pixel.astype(np.int64), table(), [list(x) for x in image_labels], name="other")
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 64


@pytest.mark.parametrize("change", ["image pixel", "pixel label", "image-level label", "image-level label moved",
                                    "concept name"])
def test_fingerprint_follows_images_labels_and_concepts(change):
    """A cache keyed by the fingerprint must never serve the results of other labels."""
    images, pixel, image_labels = arrays()
    before = ArrayConcepts(images, pixel, table(), image_labels).fingerprint()
    concepts = table()
    images, pixel, image_labels = images.copy(), pixel.copy(), [list(x) for x in image_labels]
    if change == "image pixel":
        images[1, 2, 3, 0] ^= 1
    elif change == "pixel label":
        pixel[2, 1, 0, 0] = 2 if pixel[2, 1, 0, 0] != 2 else 1
    elif change == "image-level label":
        image_labels[0] = [2]
    elif change == "image-level label moved":
        image_labels = [[], [3], [3]]
    else:
        concepts = table("truck")
    assert ArrayConcepts(images, pixel, concepts, image_labels).fingerprint() != before
