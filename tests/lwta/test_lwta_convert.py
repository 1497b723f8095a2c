"""Conversion: what changes, U = 1 equals the model without activations, save/load round trips, specs."""

import copy

import pytest
import torch
from torch import nn

from netdissect.errors import ModelError
from netdissect.lwta import LWTA, convert
from netdissect.lwta.convert import BatchNormLWTA, parse_spec
from netdissect.lwta.nets import SmallResNet
from netdissect.lwta.train import save_weights
from netdissect.models import load_model

SMALL = "module:netdissect.lwta.nets:small_resnet"


def _without_activations(model):
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU)):
                setattr(parent, name, nn.Identity())
    return model


def test_convert_lists_every_activation():
    torch.manual_seed(0)
    model = SmallResNet(classes=3, width=8)
    changes = convert(model, 4)
    names = [c.name for c in changes]
    assert names == ["stem.2"] + [f"layer{i}.act{j}" for i in range(1, 5) for j in (1, 2)]
    assert str(changes[0]) == "stem.2: ReLU -> LWTA(U=4)"
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


def test_shared_activation_module_stays_shared():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(4, 4), relu, nn.Linear(4, 4), relu)
    changes = convert(model, 2)
    assert len(changes) == 1 and model[1] is model[3] and isinstance(model[1], LWTA)


def test_u1_equals_the_model_without_its_activations():
    torch.manual_seed(1)
    model = SmallResNet(classes=3, width=8).eval()
    plain = _without_activations(copy.deepcopy(model))
    convert(model, 1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))


def test_u1_efficientnet_lite_fused_batchnorm():
    from netdissect.models.efficientnet_lite import BatchNormAct

    loaded = load_model("efficientnet_lite0_random")
    plain = copy.deepcopy(loaded.module)
    for m in plain.modules():
        if isinstance(m, BatchNormAct):
            m.act = False
    changes = convert(loaded.module, 1)
    assert any(c.old == "BatchNormAct" for c in changes)
    assert isinstance(loaded.module.bn2, BatchNormLWTA)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.module.eval()(x), plain.eval()(x))


def test_vit_mlp_gelu_is_converted():
    tv = pytest.importorskip("torchvision")
    vit = tv.models.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=16,
                                      mlp_dim=32, num_classes=3)
    changes = convert(vit, 8)
    assert [c.name for c in changes] == ["encoder.layers.encoder_layer_0.mlp.1"]
    assert vit.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_nothing_to_convert_raises():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.relu(self.fc(x))

    with pytest.raises(ModelError, match="activations called as functions"):
        convert(Functional(), 2)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_converted_model_round_trips_through_save_and_load(tmp_path, suffix):
    spec = f"lwta:{SMALL}?U=4&mode=argmax&classes=5"
    a = load_model(spec)
    with torch.no_grad():
        for p in a.module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = save_weights(a.module, tmp_path / f"w{suffix}")
    b = load_model(spec, weights=path)
    assert b.weights == str(path.resolve())
    assert set(a.module.state_dict()) == set(SmallResNet().state_dict())  # LWTA adds no keys
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a.module(x), b.module(x))
    assert not torch.equal(load_model(spec).module(x), b.module(x))


def test_spec_options_and_errors():
    inner, opts = parse_spec("torchvision:resnet18?U=8&mode=argmax&seed=3&tau=0.5")
    assert inner == "torchvision:resnet18"
    assert opts == {"U": 8, "tau": 0.5, "mode": "argmax", "seed": 3, "classes": None}
    m = load_model(f"lwta:{SMALL}?U=2&seed=4&classes=7").module
    layer = m.stem[2]
    assert (layer.U, layer.seed, layer.mode) == (2, 4, "sample") and m.fc.out_features == 7
    base = load_model(f"lwta:{SMALL}?U=off&classes=7").module  # the baseline with the same head
    assert isinstance(base.stem[2], nn.ReLU) and torch.equal(base.fc.weight, m.fc.weight)
    with pytest.raises(ModelError, match="needs options after"):
        load_model(f"lwta:{SMALL}")
    with pytest.raises(ModelError, match="option 'V=2' is not one of"):
        load_model(f"lwta:{SMALL}?V=2")
    with pytest.raises(ModelError, match="bad value for mode: 'greedy'"):
        load_model(f"lwta:{SMALL}?U=2&mode=greedy")
    with pytest.raises(ModelError, match="U must be a positive integer"):
        load_model(f"lwta:{SMALL}?U=0")
