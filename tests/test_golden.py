"""Golden results of the real EfficientNet-Lite0 weights (and real photos where the assets exist)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from netdissect.models import load_model

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"
GOLDEN = json.loads((Path(__file__).parent / "golden" / "efficientnet_lite0_synthetic.json").read_text())


def test_efficientnet_lite0_dissection_matches_golden(tmp_path):
    from golden.make_golden import compute

    got = compute(tmp_path / "run")
    for layer, expected in GOLDEN["layers"].items():
        actual = got["layers"][layer]
        assert abs(actual["detectors"] - expected["detectors"]) <= 2, layer
        assert [(t["unit"], t["label"]) for t in actual["top"]] == [(t["unit"], t["label"]) for t in expected["top"]]
        assert np.allclose([t["score"] for t in actual["top"]], [t["score"] for t in expected["top"]], atol=5e-4)
        assert np.allclose(actual["thresholds_head"], expected["thresholds_head"], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not (ASSETS / "data" / "imagenet-samples").is_dir(), reason="needs ../shared/assets (test assets)")
def test_efficientnet_lite0_classifies_real_imagenet_photos():
    files = sorted((ASSETS / "data" / "imagenet-samples").glob("*.jpg"))
    wnids = sorted({f.name.split("_")[0] for f in files})
    chosen = files[::10]  # 100 photos across the classes
    loaded = load_model("efficientnet_lite0")
    pre = loaded.preprocess
    images = []
    for f in chosen:  # the model's own evaluation recipe: resize the short side, centre crop
        im = Image.open(f).convert("RGB")
        scale = pre.resize_size / min(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
        left, top = (im.width - pre.crop_size) // 2, (im.height - pre.crop_size) // 2
        images.append(np.asarray(im.crop((left, top, left + pre.crop_size, top + pre.crop_size))))
    x = pre(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2))
    with torch.no_grad():
        predicted = loaded.module(x).argmax(1).tolist()
    truth = [wnids.index(f.name.split("_")[0]) for f in chosen]
    accuracy = np.mean([p == t for p, t in zip(predicted, truth)])
    assert accuracy >= 0.8, accuracy  # about 88% on all 1000 photos
