"""Tests of the built-in SqueezeNet-Places365 architecture (netdissect.models.squeezenet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from netdissect.models import load_model
from netdissect.models.squeezenet import PLACES365_PREPROCESS, SqueezeNetPlaces365
from netdissect.models.weights import read_state_dict

ASSETS = Path(__file__).resolve().parents[3] / "shared" / "assets"
WEIGHTS = ASSETS / "weights" / "squeezenet_places365"
_skip = pytest.mark.skipif(not (WEIGHTS / "squeezenet_places365.safetensors").is_file(),
                           reason=f"test assets not found at {ASSETS} (../shared/assets)")


def needs_assets(test):
    return pytest.mark.assets(_skip(test))


def test_shapes_of_every_stage():
    model = load_model("squeezenet_places365").module
    shapes = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
             for n in ("conv1", "pool1", "fire2", "fire3", "fire5", "fire9", "conv10")]
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert out.shape == (2, 365)
    assert shapes == {"conv1": (2, 64, 112, 112), "pool1": (2, 64, 55, 55), "fire2": (2, 128, 55, 55),
                      "fire3": (2, 128, 55, 55), "fire5": (2, 256, 27, 27), "fire9": (2, 512, 13, 13),
                      "conv10": (2, 365, 13, 13)}
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 1 + 8 * 3 and all(m.eps == 0 for m in bns)
    assert all(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.55
               for n, m in model.named_modules() if n.endswith("act"))


def test_preprocess_is_bgr_minus_caffe_means_over_255():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1, 3, 8, 8), dtype=np.uint8)
    got = PLACES365_PREPROCESS(torch.from_numpy(img))
    bgr = img[:, ::-1].astype(np.float64)
    expected = (bgr - np.array([104.051, 112.514, 116.676]).reshape(1, 3, 1, 1)) / 255.0
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    assert PLACES365_PREPROCESS.size is None  # dissection feeds the data set's own size


def test_random_init_is_reproducible():
    a = load_model("squeezenet_places365").module.state_dict()
    b = load_model("squeezenet_places365").module.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(k.endswith("num_batches_tracked") for k in a)


@needs_assets
def test_weights_load_strictly_with_matching_keys():
    state = read_state_dict(WEIGHTS / "squeezenet_places365.safetensors")
    assert set(state) == set(SqueezeNetPlaces365().state_dict())


@needs_assets
def test_mountain_photo_is_a_mountain_scene():
    from PIL import Image

    loaded = load_model("squeezenet_places365", weights=WEIGHTS / "squeezenet_places365.safetensors")
    names = [line.split()[0][3:] for line in (WEIGHTS / "categories_places365.txt").read_text().splitlines()]
    with Image.open(ASSETS / "data" / "photos" / "mountains.jpg") as im:
        img = np.asarray(im.convert("RGB").resize((256, 256), Image.Resampling.BILINEAR))[16:240, 16:240]
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
    with torch.no_grad():
        probs = loaded.module(loaded.preprocess(x)).softmax(1)[0]
    top3 = [names[i] for i in probs.topk(3).indices]
    assert top3 == ["mountain_path", "valley", "glacier"]
    assert probs.topk(3).values.sum() > 0.5
