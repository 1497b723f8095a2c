"""The ink segmenter: grey above a threshold is ink; an optional classifier gives image-level classes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netdissect.errors import ConfigError
from netdissect.segment import InkSegmenter, load_segmenter


def test_ink_is_grey_above_the_threshold():
    seg = load_segmenter("ink?threshold=100")
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    images[0, :, 1, 2] = 101
    images[1, :, 0, 0] = 100
    out = seg.segment(images)
    assert out.pixel_labels.shape == (2, 1, 4, 4) and out.pixel_labels.sum() == 1
    assert out.pixel_labels[0, 0, 1, 2] == 1 and (out.image_labels == 0).all()
    assert seg.spec() == "ink?threshold=100" and load_segmenter(seg.spec()).fingerprint() == seg.fingerprint()
    assert [c.name for c in seg.concepts] == ["ink"]
    half = load_segmenter("ink?size=2").segment(torch.full((1, 3, 4, 4), 255, dtype=torch.uint8))
    assert half.pixel_labels.shape == (1, 1, 2, 2) and (half.pixel_labels == 1).all()


def test_a_classifier_adds_image_level_classes():
    class Bright(nn.Module):  # class 1 when the image is mostly bright, else class 0
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([0.5 - m, m - 0.5], dim=1)

    seg = InkSegmenter(classifier=Bright())
    assert [c.name for c in seg.concepts] == ["ink", "digit-0", "digit-1"]
    images = torch.zeros(2, 3, 28, 28, dtype=torch.uint8)
    images[1] = 255
    assert seg.segment(images).image_labels[:, 0].tolist() == [2, 3]
    assert seg.fingerprint() != InkSegmenter().fingerprint()


def test_bad_ink_specs():
    with pytest.raises(ConfigError, match="threshold must be"):
        load_segmenter("ink?threshold=300")
    with pytest.raises(ConfigError, match="unknown option"):
        load_segmenter("ink?thresh=3")
    with pytest.raises(ConfigError, match="takes no argument"):
        load_segmenter("ink:x")
