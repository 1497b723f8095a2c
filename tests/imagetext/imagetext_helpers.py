"""Shared bits of the image-text model tests: where the test assets are, reading a photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ASSETS = Path(__file__).resolve().parents[3] / "shared" / "assets"
IMAGENET = ASSETS / "data" / "imagenet-samples"
needs_imagenet = pytest.mark.skipif(not IMAGENET.is_dir(), reason="needs ../shared/assets (test assets)")


def photo(path, size=None, square=None) -> torch.Tensor:
    """(1, 3, H, W) uint8 of an image file.

    ``size``: resized to size x size; ``square``: the shorter side resized to
    ``square`` (bicubic), then the centre square cut out.
    """
    im = Image.open(path).convert("RGB")
    if size:
        im = im.resize((size, size), Image.BICUBIC)
    if square:
        scale = square / min(im.size)
        im = im.resize((max(square, round(im.width * scale)), max(square, round(im.height * scale))), Image.BICUBIC)
        left, top = (im.width - square) // 2, (im.height - square) // 2
        im = im.crop((left, top, left + square, top + square))
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None]
