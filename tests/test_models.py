"""Loading models by spec, checkpoints, preprocessing."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from netdissect.errors import ModelError
from netdissect.models import Preprocess, load_model, load_weights, state_hash


def test_builtin_efficientnet_lite0_equals_timm_with_real_weights():
    timm = pytest.importorskip("timm")
    ours = load_model("efficientnet_lite0")
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    ref.load_state_dict(dict(zip(ref.state_dict().keys(), ours.module.state_dict().values())))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours.module(x), ref(x), atol=1e-5)
    assert ours.preprocess.mean == (0.5, 0.5, 0.5) and ours.preprocess.interpolation == "bicubic"
    assert ours.preprocess.size is None  # a CNN takes the data set's own size


def test_torchvision_spec_and_weights_file(tmp_path):
    a = load_model("torchvision:resnet18")
    path = tmp_path / "r18.safetensors"
    save_file(a.module.state_dict(), str(path))
    b = load_model("torchvision:resnet18", weights=path)
    assert state_hash(a.module) == state_hash(b.module)
    pt = tmp_path / "r18.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in a.module.state_dict().items()}}, pt)
    c = load_model("torchvision:resnet18", weights=pt)
    assert state_hash(c.module) == state_hash(a.module)


def test_checkpoint_that_does_not_fit_names_file_and_keys(tmp_path):
    a = load_model("torchvision:resnet18")
    path = tmp_path / "r34.pt"
    torch.save(load_model("torchvision:resnet34").module.state_dict(), path)
    with pytest.raises(ModelError, match=r"r34\.pt.*does not fit.*unexpected.*layer1\.2"):
        load_weights(a.module, path)
    bad = tmp_path / "fc.pt"
    sd = a.module.state_dict()
    sd["fc.weight"] = torch.zeros(10, 512)
    torch.save(sd, bad)
    with pytest.raises(ModelError, match=r"wrong shape.*fc\.weight"):
        load_weights(a.module, bad)


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": ModelError("not a tensor")}, path)
    with pytest.raises(ModelError, match="weights_only=True"):
        load_weights(torch.nn.Linear(1, 1), path)


def test_unknown_specs_say_what_is_allowed():
    with pytest.raises(ModelError, match="did you mean 'resnet18'"):
        load_model("torchvision:resnet19")
    with pytest.raises(ModelError, match="unknown source 'hub'"):
        load_model("hub:foo")
    with pytest.raises(ModelError, match="not a built-in model"):
        load_model("efficientnet_lite9")
    with pytest.raises(ModelError, match="no weights 'NOPE'.*IMAGENET1K_V1"):
        load_model("torchvision:resnet18:NOPE")


def test_module_spec(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(textwrap.dedent("""
        import torch
        def tiny():
            m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
            m.netdissect_preprocess = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
            return m
        def not_a_model():
            return 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_model("module:mymodels:tiny")
    assert isinstance(loaded.module, torch.nn.Sequential)
    assert loaded.preprocess.std == (0.25, 0.25, 0.25)
    with pytest.raises(ModelError, match="not a torch.nn.Module"):
        load_model("module:mymodels:not_a_model")
    with pytest.raises(ModelError, match="no callable 'tinyy'.*did you mean 'tiny'"):
        load_model("module:mymodels:tinyy")
    sys.modules.pop("mymodels", None)


def test_timm_vit_needs_fixed_size():
    pytest.importorskip("timm")
    loaded = load_model("timm:vit_tiny_patch16_224")
    assert loaded.preprocess.size == (224, 224)
    x = loaded.preprocess(torch.zeros(1, 3, 112, 112, dtype=torch.uint8))
    assert x.shape == (1, 3, 224, 224)


def test_preprocess_normalises_and_orders_channels():
    img = torch.tensor([[[[255]], [[0]], [[51]]]], dtype=torch.uint8)
    rgb = Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))(img).flatten().tolist()
    bgr = Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channel_order="BGR")(img).flatten().tolist()
    assert rgb == pytest.approx([1.0, 0.0, 0.2])
    assert bgr == pytest.approx([0.2, 0.0, 1.0])
