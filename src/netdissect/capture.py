"""Capture the outputs of named layers in one forward pass.

    with Capture(model, ["layer3", "layer4"]) as cap:
        cap.run(x)                # forward, stopping after the last needed layer
        acts = cap.activations    # {"layer3": (N, C, H, W), "layer4": ...}

Hooks are plain forward hooks, removed when the block exits, also when the
forward raises.  Each output is detached and copied inside the hook, so an
in-place operation later in the network cannot change it.  A module that fires
twice in one forward pass (a shared ReLU) raises :class:`CaptureError`: its
output would be ambiguous.  Token outputs ``(N, 1 + H*W, D)`` (a ViT block)
become ``(N, D, H, W)`` grids with the class token dropped.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from .errors import CaptureError, LayerError, close_matches


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass early."""


def resolve_layers(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    """Map layer names (``named_modules`` dotted names) to modules, or raise with close matches."""
    modules = dict(model.named_modules())
    out: dict[str, nn.Module] = {}
    names = list(names)
    if not names:
        raise LayerError("no layers given; list the model's layers with `netdissect layers MODEL`")
    for name in names:
        if name not in modules:
            hint = close_matches(name, [n for n in modules if n])
            raise LayerError(
                f"layer {name!r} is not a module of {type(model).__name__}"
                + (f"; {hint}" if hint else "")
                + " (list the layers with `netdissect layers MODEL`)"
            )
        out[name] = modules[name]
    return out


def first_tensor(output) -> torch.Tensor | None:
    """The tensor a module returned, or the first tensor of a tuple/list it returned."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def to_grid(name: str, x: torch.Tensor) -> torch.Tensor:
    """Activations as an (N, C, H, W) grid.

    (N, C, H, W) passes through; tokens (N, T, D) with T = 1 + H*W (class
    token first) or T = H*W become (N, D, H, W).  Anything else raises
    :class:`LayerError`.
    """
    if x.dim() == 4:
        return x
    if x.dim() == 3:
        n, t, d = x.shape
        for prefix in (1, 0):
            side = math.isqrt(t - prefix) if t > prefix else 0
            if side * side == t - prefix and side > 0:
                return x[:, prefix:, :].transpose(1, 2).reshape(n, d, side, side)
        raise LayerError(
            f"layer {name!r} outputs tokens of shape {tuple(x.shape)}: {t} tokens do not form a square grid "
            "(with or without one class token)"
        )
    raise LayerError(
        f"layer {name!r} outputs shape {tuple(x.shape)}, which has no spatial or token grid; "
        "dissection needs (N, C, H, W) feature maps or (N, 1+H*W, D) tokens: pick a convolutional or "
        "transformer-block layer (see `netdissect layers MODEL`)"
    )


class Capture:
    """Context manager capturing the outputs of ``layers`` of ``model``.

    ``grid=True`` turns each output into an (N, C, H, W) grid with
    :func:`to_grid`; ``grid=False`` keeps raw outputs.  ``activations`` maps
    layer name to the tensor of the latest forward pass.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], *, grid: bool = True, clone: bool = True):
        self.model = model
        self.modules = resolve_layers(model, layers)
        self.grid = grid
        self.clone = clone
        self.activations: dict[str, torch.Tensor] = {}
        self._handles: list = []
        self._stop_early = False

    # -- hooks ---------------------------------------------------------------
    def _make_hook(self, name: str):
        def hook(module, inputs, output):
            if name in self.activations:
                raise CaptureError(
                    f"layer {name!r} ({type(module).__name__}) ran twice in one forward pass, so its output is "
                    "ambiguous (a module reused inside the network, such as torchvision's shared ReLU in "
                    "Bottleneck blocks); capture its parent block or another layer instead"
                )
            tensor = first_tensor(output)
            if tensor is None:
                raise LayerError(f"layer {name!r} returned {type(output).__name__}, not a tensor")
            tensor = tensor.detach()
            if self.clone:
                tensor = tensor.clone()
            self.activations[name] = to_grid(name, tensor) if self.grid else tensor
            if self._stop_early and len(self.activations) == len(self.modules):
                raise _StopForward

        return hook

    def _reset(self, module, inputs):
        self.activations = {}

    def __enter__(self) -> "Capture":
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._reset))
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- running -------------------------------------------------------------
    def run(self, x: torch.Tensor, *, stop_early: bool = True) -> dict[str, torch.Tensor]:
        """Forward ``x`` without gradients, by default stopping after the last needed layer.

        With ``stop_early=False`` the whole forward runs, so a layer that fires
        again later is detected.
        """
        if not self._handles:
            raise CaptureError("Capture.run() must be called inside `with Capture(...) as cap:`")
        self._stop_early = stop_early
        try:
            with torch.no_grad():
                self.model(x)
        except _StopForward:
            pass
        finally:
            self._stop_early = False
        missing = [n for n in self.modules if n not in self.activations]
        if missing:
            raise CaptureError(
                f"layers {missing} did not run in the forward pass (modules defined but not called by forward)"
            )
        return self.activations


def layer_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str, tuple | None, int]]:
    """Dry run: (name, type, output shape of the first call, number of calls) for every module."""
    records: dict[str, list] = {}
    handles = []

    def make(name):
        def hook(module, inputs, output):
            if name in records:
                records[name][3] += 1
                return
            t = first_tensor(output)
            records[name] = [name, type(module).__name__, tuple(t.shape) if t is not None else None, 1]

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(make(name)))
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    order = [n for n, _ in model.named_modules() if n in records]
    return [tuple(records[n]) for n in order]
