"""The oracle returns exactly the labels its data set stores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netdissect.data.loader import collate
from netdissect.data.memory import ArrayConcepts
from netdissect.data.protocol import Concept, ConceptTable
from netdissect.data.synthetic import SyntheticConcepts
from netdissect.errors import ConfigError
from netdissect.segment import OracleSegmenter, Segmenter, load_segmenter


def test_synthetic_labels_are_returned_exactly():
    ds = SyntheticConcepts(n=8)
    seg = load_segmenter("oracle", dataset=ds)
    assert isinstance(seg, OracleSegmenter) and isinstance(seg, Segmenter)
    assert seg.concepts is ds.concepts
    assert seg.label_size(ds.image_size) == ds.label_size
    indices = torch.tensor([5, 0, 7, 2])
    images = torch.zeros((4, 3, *ds.image_size), dtype=torch.uint8)
    out = seg.segment(images, indices)
    expected = collate([(int(i), ds.load_labels(int(i))) for i in indices])
    assert out.pixel_labels.dtype == out.image_labels.dtype == torch.int64
    assert torch.equal(out.pixel_labels, expected.pixel_labels)
    assert torch.equal(out.image_labels, expected.image_labels)
    for row, i in enumerate(indices.tolist()):
        stored = ds.load_labels(i)
        np.testing.assert_array_equal(out.pixel_labels[row].numpy(), stored.pixel_labels)
        np.testing.assert_array_equal(out.image_labels[row].numpy(), stored.image_labels)


def test_padding_of_layers_and_image_labels():
    table = ConceptTable([Concept(1, "a", "object"), Concept(2, "s-s", "scene"), Concept(3, "t-s", "scene")],
                         ["object", "scene"])
    images = np.zeros((3, 4, 4, 3), dtype=np.uint8)
    pixel = np.zeros((3, 2, 2, 2), dtype=np.int32)
    pixel[0, 0, 0, 0] = 1
    pixel[2, 1, 1, 1] = 1
    ds = ArrayConcepts(images, pixel, table, image_labels=[[2, 3], [], [3]])
    seg = OracleSegmenter(ds)
    out = seg.segment(None, [1, 2, 0])
    assert out.pixel_labels.shape == (3, 2, 2, 2)
    assert out.pixel_labels[1, 1, 1, 1] == 1 and out.pixel_labels[2, 0, 0, 0] == 1
    assert out.image_labels.tolist() == [[0, 0], [3, 0], [2, 3]]
    # a batch without image labels still has one (zero) column
    assert seg.segment(None, [1]).image_labels.tolist() == [[0]]


def test_errors():
    ds = SyntheticConcepts(n=4)
    seg = OracleSegmenter(ds)
    with pytest.raises(ConfigError, match="needs indices="):
        seg.segment(torch.zeros((1, 3, 224, 224), dtype=torch.uint8))
    with pytest.raises(ConfigError, match="2 images but 1 indices"):
        seg.segment(torch.zeros((2, 3, 8, 8), dtype=torch.uint8), torch.tensor([0]))
    with pytest.raises(IndexError):
        seg.segment(None, [9])
    with pytest.raises(ConfigError, match="needs a concept data set"):
        OracleSegmenter(object())
    with pytest.raises(ConfigError, match="takes no weights"):
        load_segmenter("oracle", dataset=ds, weights="w.pt")


def test_spec_fingerprint_and_device():
    ds = SyntheticConcepts(n=4)
    seg = OracleSegmenter(ds)
    assert seg.spec() == "oracle"
    assert seg.fingerprint() == load_segmenter("oracle", dataset=SyntheticConcepts(n=4)).fingerprint()
    assert seg.fingerprint() != OracleSegmenter(SyntheticConcepts(n=4, seed=1)).fingerprint()
    assert seg.to("cpu") is seg
    assert seg.segment(None, [0]).pixel_labels.device.type == "cpu"
