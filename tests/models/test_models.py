"""Loading models by spec, checkpoints, preprocessing."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

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


# --- checkpoints that PyTorch itself loads (issue 8, kind 2) ---------------------------------

def _small_bn_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 2, 1), torch.nn.BatchNorm2d(2))


def _old_pytorch_state(model):
    """A state dict as PyTorch before 0.4.1 saved it: no ``num_batches_tracked``, no version-2 metadata."""
    return {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def test_batchnorm_without_num_batches_tracked_loads_as_pytorch_loads_it(tmp_path):
    src = _small_bn_model()
    with torch.no_grad():
        for m in src.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    old = _old_pytorch_state(src)
    assert len(old) == len(src.state_dict()) - 2
    for name, payload in (("plain.pt", old),
                          ("wrapped.pt", {"state_dict": {"module." + k: v for k, v in old.items()}}),
                          ("plain.safetensors", old)):
        path = tmp_path / name
        save_file(payload, str(path)) if name.endswith(".safetensors") else torch.save(payload, path)
        ours = load_weights(_small_bn_model(), path)
        theirs = _small_bn_model()
        theirs.load_state_dict(old, strict=True)  # PyTorch accepts it: BatchNorm fills the buffer
        assert state_hash(ours) == state_hash(theirs)
        for k, v in old.items():
            assert torch.equal(ours.state_dict()[k], v), (name, k)


def test_missing_num_batches_tracked_is_refused_where_pytorch_refuses_it(tmp_path):
    # Saved by a current PyTorch (BatchNorm version 2 in the metadata), then the buffer
    # deleted: load_state_dict(strict=True) refuses this, and so do we, naming the key.
    model = _small_bn_model()
    sd = model.state_dict()
    del sd["1.num_batches_tracked"]
    assert sd._metadata["1"]["version"] == 2
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        _small_bn_model().load_state_dict(torch.load(_save(tmp_path / "a.pt", sd), weights_only=True))
    with pytest.raises(ModelError, match=r"new\.pt.*does not fit.*keys 1 missing \(e\.g\. 1\.num_batches_tracked\)"):
        load_weights(_small_bn_model(), _save(tmp_path / "new.pt", sd))
    # the metadata follows the keys when a DataParallel "module." prefix is removed
    wrapped = torch.nn.DataParallel(_small_bn_model()).state_dict()
    del wrapped["module.1.num_batches_tracked"]
    with pytest.raises(ModelError, match=r"keys 1 missing \(e\.g\. 1\.num_batches_tracked\)"):
        load_weights(_small_bn_model(), _save(tmp_path / "dp.pt", {"state_dict": wrapped}))


def _save(path, obj):
    torch.save(obj, path)
    return path


def test_checkpoint_that_does_not_fit_leaves_the_model_as_it_was(tmp_path):
    model = _small_bn_model()
    before = state_hash(model)
    other = _small_bn_model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    sd = other.state_dict()
    sd["3.weight"] = torch.zeros(5, 4, 1, 1)  # wrong shape; every other key fits and would be copied
    sd["extra.bias"] = torch.zeros(1)
    with pytest.raises(ModelError, match=r"bad\.pt.*keys 1 unexpected \(e\.g\. extra\.bias\), "
                                         r"1 with the wrong shape \(e\.g\. 3\.weight: "
                                         r"file \(5, 4, 1, 1\) vs model \(2, 4, 1, 1\)\)"):
        load_weights(model, _save(tmp_path / "bad.pt", sd))
    assert state_hash(model) == before


RESNET20 = (Path(__file__).resolve().parents[3] / "shared" / "assets" / "weights" / "cifar10_resnet"
            / "resnet20.th")


class _CifarBlock(torch.nn.Module):
    """He et al. 2016 CIFAR BasicBlock, option A: the shortcut is a zero-padded strided identity."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.pad = (cout - cin) // 2 if (stride != 1 or cin != cout) else None

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x if self.pad is None else torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return torch.relu(out + short)


class _CifarResNet20(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(16)
        stages, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            stages.append(torch.nn.Sequential(*[_CifarBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                                for i in range(3)]))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = torch.nn.Linear(64, 10)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(out.mean(dim=(2, 3)))


@pytest.mark.assets
@pytest.mark.skipif(not RESNET20.is_file(), reason=f"test assets not found ({RESNET20})")
def test_cifar_resnet20_saved_by_an_old_pytorch_loads():
    raw = torch.load(RESNET20, map_location="cpu", weights_only=True)["state_dict"]
    assert not any(k.endswith("num_batches_tracked") for k in raw)
    ours = load_weights(_CifarResNet20(), RESNET20).eval()
    theirs = _CifarResNet20()
    theirs.load_state_dict({k[len("module."):]: v for k, v in raw.items()}, strict=True)
    assert state_hash(ours) == state_hash(theirs)
    assert torch.equal(ours.linear.weight, raw["module.linear.weight"])
    assert torch.equal(ours.layer3[2].bn2.running_var, raw["module.layer3.2.bn2.running_var"])
    assert int(ours.layer2[0].bn1.num_batches_tracked) == 0
    with torch.no_grad():
        out = ours(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
