"""Tests of the colour namer (netdissect.data.colornames)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netdissect.data.colornames import COLOR_CONCEPTS, COLOR_NAMES, color_map, name_colors, srgb_to_lab
from netdissect.data.synthetic import _PALETTE
from netdissect.errors import DatasetError

ASSETS = Path(__file__).resolve().parents[3] / "shared" / "assets"
W2C = ASSETS / "reference" / "netdissect" / "w2color.npy"


def name(rgb) -> str:
    return COLOR_NAMES[int(name_colors(np.array(rgb, dtype=np.uint8)))]


def test_names_are_the_eleven_basic_terms_in_broden_order():
    # the order of van de Weijer et al.'s table (w2color.npy), which Broden's colour codes follow
    assert COLOR_NAMES == ("black", "blue", "brown", "grey", "green", "orange", "pink", "purple", "red", "white",
                           "yellow")
    assert COLOR_CONCEPTS[0] == "black-c" and COLOR_CONCEPTS[-1] == "yellow-c"


def test_lab_known_values():
    lab = srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255], [128, 128, 128]], np.uint8))
    np.testing.assert_allclose(lab[0], [100, 0, 0], atol=0.01)
    np.testing.assert_allclose(lab[1], [0, 0, 0], atol=0.01)
    np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.05)  # standard sRGB red
    np.testing.assert_allclose(lab[3], [32.30, 79.19, -107.86], atol=0.05)  # standard sRGB blue
    np.testing.assert_allclose(lab[4], [53.59, 0, 0], atol=0.02)
    # float input gives the same as uint8
    np.testing.assert_allclose(srgb_to_lab(np.array([255.0, 0.0, 0.0])), lab[2])


@pytest.mark.parametrize("rgb,expected", [
    ((0, 0, 0), "black"), ((255, 255, 255), "white"), ((128, 128, 128), "grey"),
    ((255, 0, 0), "red"), ((0, 0, 255), "blue"), ((0, 128, 0), "green"), ((0, 255, 0), "green"),
    ((255, 255, 0), "yellow"), ((255, 165, 0), "orange"), ((128, 0, 128), "purple"), ((75, 0, 130), "purple"),
    ((255, 192, 203), "pink"), ((255, 105, 180), "pink"), ((135, 206, 235), "blue"), ((120, 80, 40), "brown"),
    ((150, 105, 65), "brown"), ((15, 15, 30), "black"), ((90, 60, 40), "brown"), ((200, 200, 205), "white"),
])
def test_canonical_colours(rgb, expected):
    assert name(rgb) == expected


def test_synthetic_palette_is_named_as_painted():
    # The synthetic data set paints each named colour with tones chosen to be named so.
    for colour, variants in _PALETTE.items():
        for pair in variants:
            for tone in pair:
                assert name(tone) == colour, (colour, tone)


def test_shapes_and_dtype():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = name_colors(img)
    assert out.shape == (5, 7) and out.dtype == np.uint8 and out.max() < 11
    # pixel by pixel equals the whole-array call
    assert all(out[i, j] == name_colors(img[i, j]) for i in range(5) for j in range(7))
    with pytest.raises(DatasetError, match=r"shape \(\.\.\., 3\)"):
        name_colors(np.zeros((4, 4)))
    with pytest.raises(DatasetError, match="uint8 image"):
        color_map(np.zeros((4, 4, 3), np.float32))


def test_color_map_averages_each_label_cell():
    # 2x2 blocks of one colour plus noise that averages out: each label pixel is named by its block mean.
    rng = np.random.default_rng(1)
    blocks = rng.integers(20, 236, (6, 8, 3))
    big = np.repeat(np.repeat(blocks, 2, 0), 2, 1)
    noise = np.array([[[10], [-10]], [[-10], [10]]])  # zero mean per 2x2 block
    img = (big + np.tile(noise, (6, 8, 3))).astype(np.uint8)
    np.testing.assert_array_equal(color_map(img, (6, 8)), name_colors(blocks.astype(np.uint8)))
    np.testing.assert_array_equal(color_map(img), name_colors(img))


@pytest.mark.skipif(not W2C.is_file(), reason=f"test assets not found at {ASSETS} (../shared/assets)")
@pytest.mark.assets
def test_agreement_with_broden_reference_on_real_photos():
    """Our namer agrees with the van de Weijer lookup Broden used on > 85% of real photo pixels (subset)."""
    table = np.load(W2C)
    files = []
    for pattern in ("imagenet-samples/*.jpg", "camvid/*/images/*.jpg", "dtd10/*/*.jpg"):
        found = sorted((ASSETS / "data").glob(pattern))
        files += found[:: max(1, len(found) // 40)]
    agree = total = 0
    for f in files:
        with Image.open(f) as im:
            img = np.asarray(im.convert("RGB").resize((112, 112), Image.Resampling.BOX))
        ours = name_colors(img)
        ref = table[img[..., 0] // 8, img[..., 1] // 8, img[..., 2] // 8]
        agree += int((ours == ref).sum())
        total += ours.size
    assert len(files) >= 100
    assert agree / total > 0.85
    # and over the table's own RGB grid
    centres = (np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij"), -1) * 8 + 4).astype(np.uint8)
    assert (name_colors(centres) == table).mean() > 0.85
