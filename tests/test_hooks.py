"""Reading and editing layer outputs with hooks (netdissect.hooks)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netdissect.errors import CaptureError, LayerError
from netdissect.hooks import Add, Apply, Scale, SetValue, Trace, Zero, layer_info, to_grid


class Net(nn.Module):
    def __init__(self, fail: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)
        self.fail = fail
        self.calls = 0

    def forward(self, x):
        x = self.relu(self.conv(x))
        x = self.conv2(x)
        if self.fail:
            raise RuntimeError("boom")
        self.calls += 1
        return self.head(x.mean((2, 3)))


class SharedRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(self.relu(x)))


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_captures_copies_and_removes_hooks():
    net = Net().eval()
    x = torch.randn(2, 3, 8, 8)
    with Trace(net, ["conv", "conv2"]) as trace:
        net(x)
        acts = dict(trace.activations)
    assert hook_count(net) == 0
    assert acts["conv"].shape == (2, 4, 8, 8)
    # the in-place ReLU ran after the hook; the captured copy keeps negative values
    assert (acts["conv"] < 0).any()
    assert torch.allclose(acts["conv"], net.conv(x))


def test_hooks_removed_when_forward_raises():
    net = Net(fail=True)
    with pytest.raises(RuntimeError, match="boom"):
        with Trace(net, ["conv"]):
            net(torch.randn(1, 3, 8, 8))
    assert hook_count(net) == 0


def test_run_stops_after_last_needed_layer():
    net = Net()
    with Trace(net, ["conv"]) as trace:
        acts = trace.run(torch.randn(1, 3, 8, 8))
    assert net.calls == 0  # never reached the end of forward
    assert acts["conv"].shape == (1, 4, 8, 8)


def test_module_firing_twice_is_an_error():
    net = SharedRelu()
    with pytest.raises(CaptureError, match="'relu'.*ran twice"):
        with Trace(net, ["relu"]) as trace:
            trace.run(torch.randn(1, 3, 4, 4), stop_early=False)
    assert hook_count(net) == 0


def test_unknown_layer_lists_close_matches():
    with pytest.raises(LayerError, match=r"'conv3'.*did you mean 'conv2'|'conv3'.*'conv'"):
        Trace(Net(), ["conv3"])


def test_tokens_become_grids_without_class_token():
    n, d, side = 2, 5, 3
    tokens = torch.randn(n, 1 + side * side, d)
    grid = to_grid("blk", tokens)
    assert grid.shape == (n, d, side, side)
    # token 1 + (r * side + c) lands at grid position (r, c)
    assert torch.equal(grid[:, :, 1, 2], tokens[:, 1 + 1 * side + 2, :])
    assert to_grid("blk", torch.randn(n, 16, d)).shape == (n, d, 4, 4)


def test_layer_without_grid_is_an_error():
    with pytest.raises(LayerError, match="no spatial or token grid"):
        to_grid("head", torch.randn(2, 10))
    with pytest.raises(LayerError, match="do not form a square grid"):
        to_grid("blk", torch.randn(2, 7, 4))


def test_timm_vit_block_is_captured_as_grid():
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64).eval()
    with Trace(model, ["blocks.2"]) as trace:
        acts = trace.run(torch.randn(1, 3, 64, 64))
    assert acts["blocks.2"].shape == (1, 192, 4, 4)


def test_layer_info_dry_run():
    rows = {r.name: r for r in layer_info(Net().eval(), torch.randn(1, 3, 8, 8))}
    assert rows["conv"].shape == (1, 4, 8, 8) and rows["conv"].units == 4 and rows["conv"].has_grid
    assert rows["head"].shape == (1, 2) and not rows["head"].has_grid and rows["head"].units is None
    assert rows["relu"].calls == 1 and rows["relu"].type == "ReLU"
    shared = {r.name: r for r in layer_info(SharedRelu(), torch.randn(1, 3, 4, 4))}
    assert shared["relu"].calls == 2


# -- edits -------------------------------------------------------------------------


class Mixer(nn.Module):
    """Hand-weighted: layer ``units`` is 3 channels; output[j] = sum over positions of units j and j+1 (j = 0, 1)."""

    def __init__(self):
        super().__init__()
        self.units = nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        u = self.relu(self.units(x))  # in place after the traced layer
        s = u.sum((2, 3))
        return torch.stack([s[:, 0] + s[:, 1], s[:, 1] + s[:, 2]], dim=1)


def test_zeroing_a_unit_changes_exactly_the_outputs_that_depend_on_it():
    net = Mixer()
    x = torch.rand(4, 3, 5, 5) + 0.1
    base = net(x.clone())
    for k, changed in ((0, [True, False]), (2, [False, True]), (1, [True, True])):
        with Trace(net, ["units"], edit={"units": Zero([k])}) as trace:
            out = trace.forward(x.clone())
            seen = trace.activations["units"]
        assert [bool((out[:, j] != base[:, j]).all()) for j in range(2)] == changed
        assert [bool((out[:, j] == base[:, j]).all()) for j in range(2)] == [not c for c in changed]
        # what the trace read is the edited output, intact despite the in-place ReLU after it
        assert torch.equal(seen[:, k], torch.zeros_like(seen[:, k]))
        others = [u for u in range(3) if u != k]
        assert torch.equal(seen[:, others], x[:, others])
    assert hook_count(net) == 0


def test_edit_inside_a_spatial_mask_only():
    net = Mixer()
    x = torch.rand(2, 3, 4, 4) + 0.1
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1:3, 0] = True
    with Trace(net, ["units"], edit={"units": SetValue([1], 7.0, mask=mask)}) as trace:
        trace.forward(x)
        seen = trace.activations["units"]
    expected = x.clone()
    expected[:, 1][:, mask] = 7.0
    assert torch.equal(seen, expected)


def test_per_unit_values_scale_add_and_apply():
    x = torch.randn(2, 3, 2, 2)
    values = torch.tensor([10.0, 20.0, 30.0])
    assert torch.equal(SetValue([0, 2], values)(x)[:, 2], torch.full((2, 2, 2), 30.0))
    assert torch.equal(SetValue([0, 2], values)(x)[:, 1], x[:, 1])
    assert torch.equal(Scale(2.0, units=[1])(x)[:, 1], 2 * x[:, 1])
    assert torch.equal(Add(torch.tensor([1.0, 2.0, 3.0]))(x), x + torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1))
    assert torch.equal(Apply(torch.relu, units=[0])(x)[:, 0], x[:, 0].clamp(min=0))
    # a per-sample selector: each batch element ablates its own unit (batched ablations)
    sel = torch.tensor([[True, False, False], [False, False, True]])
    y = Zero(sel)(x)
    assert (y[0, 0] == 0).all() and torch.equal(y[0, 1:], x[0, 1:])
    assert (y[1, 2] == 0).all() and torch.equal(y[1, :2], x[1, :2])
    # soft selection interpolates: half of the way to the target
    assert torch.allclose(Zero(torch.tensor([0.5, 0.0, 1.0]))(x), x * torch.tensor([0.5, 1.0, 0.0]).view(1, 3, 1, 1))
    # token outputs (N, T, D): units on the last axis, a mask over tokens
    tokens = torch.randn(2, 5, 4)
    tmask = torch.tensor([False, True, True, False, False])
    z = Zero([3], mask=tmask)(tokens)
    assert (z[:, 1:3, 3] == 0).all() and torch.equal(z[:, [0, 3, 4]], tokens[:, [0, 3, 4]])


def test_edit_units_out_of_range_is_an_error():
    from netdissect.errors import ConfigError

    with pytest.raises(ConfigError, match=r"out of range for a layer with 3 units"):
        Zero([5])(torch.randn(1, 3, 2, 2))


def test_gradients_flow_only_when_asked():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1))
    x = torch.randn(2, 3, 4, 4)
    with Trace(net, ["0"]) as trace:
        out = trace.forward(x, grad=True)
        out.sum().backward()
        a = trace.activations["0"]
        assert a.requires_grad and a.grad is not None and a.grad.shape == (2, 4, 4, 4)
        # units whose ReLU was off get no gradient
        assert torch.equal(a.grad == 0, (a <= 0).expand_as(a.grad) | (a.grad == 0))
        out = trace.forward(x)  # default: no graph
        assert not out.requires_grad and not trace.activations["0"].requires_grad
    assert hook_count(net) == 0


def test_hooks_removed_after_an_edit_raises():
    net = Mixer()

    def broken(t):
        raise ValueError("bad edit")

    with pytest.raises(ValueError, match="bad edit"):
        with Trace(net, ["units"], edit={"units": broken}) as trace:
            trace.forward(torch.randn(1, 3, 2, 2))
    assert hook_count(net) == 0
    assert torch.equal(net(torch.ones(1, 3, 1, 1)), torch.tensor([[2.0, 2.0]]))
