"""ACE and the optimisation of a soft unit set, by known answers on the painter generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gan_helpers import NAMES, painter

from netdissect.generators import LayerSplit, SoftColorScore, average_causal_effect, optimize_units
from netdissect.segment import load_segmenter


@pytest.fixture(scope="module")
def seg():
    return load_segmenter("color")


def test_ace_of_the_planted_unit_is_the_concepts_full_area(seg):
    split = LayerSplit(painter(), "units")
    blue = average_causal_effect(split, seg, "blue-c", [2], 2.0, samples=6)
    assert (blue.inserted == 1.0).all() and (blue.ablated == 0.0).all() and blue.ace == 1.0
    assert blue.interval == (1.0, 1.0)
    red = average_causal_effect(split, seg, "red-c", [0], 2.0, samples=6)
    assert red.ace == 0.5  # green and blue rows cover red
    none = average_causal_effect(split, seg, "blue-c", [0, 1], 2.0, samples=6)
    assert none.ace == pytest.approx(0.0)
    # a region: only the left half of the grid
    mask = torch.zeros(4, 4)
    mask[:, :2] = 1
    assert average_causal_effect(split, seg, "blue-c", [2], 2.0, samples=4, mask=mask).ace == 0.5


def blueness(images):
    """A planted soft score of the painter's blue: how much bluer than red and green a pixel is."""
    return (images[:, 2] - images[:, :2].amax(dim=1)).clamp(0, 1)


def test_optimised_soft_unit_set_converges_to_the_planted_unit(seg):
    split = LayerSplit(painter(), "units")
    opt = optimize_units(split, seg, "blue-c", blueness, lr=0.05, epochs=12, batch_size=2,
                         accumulate=1, train=8, search=20)
    assert opt.alpha.shape == (3,) and (opt.init == 0.5).all()
    assert opt.alpha[2] > 0.95 and (opt.alpha[:2] < 0.1).all(), opt.alpha
    assert opt.top(1) == [2] and opt.values[2] == pytest.approx(2.0)
    assert opt.losses[-1] < opt.losses[0]


def test_soft_colour_score_follows_the_colour_namer():
    from netdissect.data.colornames import COLOR_CONCEPTS, name_colors

    rng = np.random.default_rng(0)
    colors = rng.integers(0, 256, (1, 3000, 3)).astype(np.uint8)
    x = torch.from_numpy(colors[0] / 255).float().T.reshape(1, 3, 1, -1).repeat_interleave(2, 2)
    x = x.repeat_interleave(2, 3)  # each colour a 2x2 block: one label pixel
    scores = torch.stack([SoftColorScore(name)(x)[0, 0] for name in COLOR_CONCEPTS])
    assert scores.sum(dim=0).allclose(torch.ones(3000), atol=1e-4)
    assert (scores.argmax(dim=0).numpy() == name_colors(colors)[0]).mean() > 0.9
    pure = torch.eye(3).T.reshape(1, 3, 1, 3).repeat_interleave(2, 2).repeat_interleave(2, 3)  # red, green, blue
    for k, name in enumerate(NAMES):
        assert SoftColorScore(name)(pure)[0, 0, k] > 0.8
    pure.requires_grad_(True)
    SoftColorScore("blue-c")(pure).sum().backward()
    assert torch.isfinite(pure.grad).all()
