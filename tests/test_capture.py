"""Capturing layer outputs with hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netdissect.capture import Capture, layer_shapes, to_grid
from netdissect.errors import CaptureError, LayerError


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
    with Capture(net, ["conv", "conv2"]) as cap:
        net(x)
        acts = dict(cap.activations)
    assert hook_count(net) == 0
    assert acts["conv"].shape == (2, 4, 8, 8)
    # the in-place ReLU ran after the hook; the captured copy keeps negative values
    assert (acts["conv"] < 0).any()
    assert torch.allclose(acts["conv"], net.conv(x))


def test_hooks_removed_when_forward_raises():
    net = Net(fail=True)
    with pytest.raises(RuntimeError, match="boom"):
        with Capture(net, ["conv"]):
            net(torch.randn(1, 3, 8, 8))
    assert hook_count(net) == 0


def test_run_stops_after_last_needed_layer():
    net = Net()
    with Capture(net, ["conv"]) as cap:
        acts = cap.run(torch.randn(1, 3, 8, 8))
    assert net.calls == 0  # never reached the end of forward
    assert acts["conv"].shape == (1, 4, 8, 8)


def test_module_firing_twice_is_an_error():
    net = SharedRelu()
    with pytest.raises(CaptureError, match="'relu'.*ran twice"):
        with Capture(net, ["relu"]) as cap:
            cap.run(torch.randn(1, 3, 4, 4), stop_early=False)
    assert hook_count(net) == 0


def test_unknown_layer_lists_close_matches():
    with pytest.raises(LayerError, match=r"'conv3'.*did you mean 'conv2'|'conv3'.*'conv'"):
        Capture(Net(), ["conv3"])


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
    with Capture(model, ["blocks.2"]) as cap:
        acts = cap.run(torch.randn(1, 3, 64, 64))
    assert acts["blocks.2"].shape == (1, 192, 4, 4)


def test_layer_shapes_dry_run():
    rows = {r[0]: r for r in layer_shapes(Net().eval(), torch.randn(1, 3, 8, 8))}
    assert rows["conv"][2] == (1, 4, 8, 8)
    assert rows["head"][2] == (1, 2)
    assert rows["relu"][3] == 1
