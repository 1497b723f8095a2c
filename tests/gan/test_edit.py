"""Inverting an image into a generator and editing it through units."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gan_helpers import painter, small_dcgan
from PIL import Image

from netdissect.errors import ConfigError
from netdissect.generators import LayerSplit, edit_features, invert, load_mask
from netdissect.generators.edit import image_to_output


def test_inversion_reconstructs_an_image_the_generator_made():
    split = LayerSplit(small_dcgan(), "net.3")
    assert split.mode == "sequential" and split.feature_shape == (16, 8, 8)
    target = split.render(split.features(split.latents(7, [0])))
    inv = invert(split, target, z_steps=150, feature_steps=150, starts=2)
    # mean squared error in [0, 1] pixel units: below 1e-4 (an RMS error under 1%) after the feature stage
    assert inv.error < 1e-4 and inv.error <= inv.z_error
    again = split.render(inv.features)
    assert float(((again - target) ** 2).mean() / 4) == pytest.approx(inv.error, rel=1e-4)


def test_inversion_of_a_uint8_photo_and_an_edit_inside_a_box(tmp_path):
    split = LayerSplit(painter(), "units")
    image = split.to_images(split.render(split.features(split.latents(0, [1]))))[0].permute(1, 2, 0).numpy()
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    assert torch.equal(image_to_output(split, path), image_to_output(split, image))
    inv = invert(split, path, z_steps=0, feature_steps=100, feature_lr=0.05)
    assert inv.error < 1e-3
    # switch every unit off in the top-left quarter: it turns black there and nowhere else
    mask = load_mask(split, box="0,0,32,32")
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    before = split.to_images(split.render(inv.features))[0]
    after = split.to_images(split.render(edit_features(inv.features, [0, 1, 2], mask, "off")))[0]
    assert (after[:, :32, :32] <= 3).all()
    assert torch.equal(after[:, 32:], before[:, 32:]) and torch.equal(after[:, :, 32:], before[:, :, 32:])
    on = split.to_images(split.render(edit_features(inv.features, [2], mask, "on", 2.0)))[0]
    assert (on[:, :32, :32].permute(1, 2, 0) == torch.tensor([0, 0, 255], dtype=torch.uint8)).all()


def test_masks_from_a_png_and_bad_masks(tmp_path):
    split = LayerSplit(painter(), "units")
    paint = np.zeros((64, 64), np.uint8)
    paint[48:, :] = 255
    Image.fromarray(paint).save(tmp_path / "m.png")
    mask = load_mask(split, png=tmp_path / "m.png")
    assert mask[3].tolist() == [1, 1, 1, 1] and mask[:3].sum() == 0
    with pytest.raises(ConfigError, match="exactly one"):
        load_mask(split)
    with pytest.raises(ConfigError, match="four numbers"):
        load_mask(split, box="1,2,3")
    with pytest.raises(ConfigError, match="selects no pixel"):
        load_mask(split, box="70,70,80,80")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_mask(split, png=tmp_path / "missing.png")
    with pytest.raises(ConfigError, match="mode must be"):
        edit_features(torch.zeros(1, 3, 4, 4), [0], mask, "up")
