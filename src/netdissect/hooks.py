"""Read and edit the outputs of named layers in one forward pass.

    with Trace(model, ["layer3", "layer4"]) as trace:
        acts = trace.run(x)            # {"layer3": (N, C, H, W), ...}; stops after layer4

    with Trace(model, ["layer4"], edit={"layer4": Zero([3, 17])}) as trace:
        logits = trace.forward(x)      # the whole network, units 3 and 17 of layer4 zeroed

Hooks are plain forward hooks, removed when the block exits, also when the
forward raises.  What a hook stores is the layer's output *after* its edit,
that is what the rest of the network sees; without gradients it is detached
and copied, so an in-place operation later in the network (an in-place ReLU)
cannot change it.  A module that fires twice in one forward pass (a shared
ReLU) raises :class:`~netdissect.errors.CaptureError`: its output would be
ambiguous.  Token outputs ``(N, 1 + H*W, D)`` (a ViT block) become
``(N, D, H, W)`` grids with the class token dropped.

Edits (:class:`Edit` and its kinds :class:`Zero`, :class:`SetValue`,
:class:`Scale`, :class:`Add`, :class:`Apply`) change chosen units, optionally
only inside a spatial mask; they are the interventions of Bau et al. 2020
(PNAS, "Understanding the role of individual units"): ablation sets units to
zero, insertion sets them to a high value in a region.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from .errors import CaptureError, ConfigError, LayerError, close_matches


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass early."""


# -- layers ---------------------------------------------------------------------


def resolve_layers(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    """Map layer names to modules.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    names : iterable of str
        Dotted names as in ``model.named_modules()``.

    Returns
    -------
    dict
        name -> module, in the order given.

    Raises
    ------
    LayerError
        When no name is given or a name is not a module of ``model`` (the
        message lists close matches).
    """
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
    """The tensor a module returned, or the first tensor of a returned tuple/list, else None."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _replace_first(output, tensor: torch.Tensor):
    if isinstance(output, torch.Tensor):
        return tensor
    return type(output)([tensor, *output[1:]]) if isinstance(output, list) else (tensor, *output[1:])


def token_grid_side(tokens: int) -> tuple[int, int] | None:
    """(prefix, side) when ``tokens`` = prefix + side**2 with prefix 1 (class token) or 0, else None."""
    for prefix in (1, 0):
        side = math.isqrt(tokens - prefix) if tokens > prefix else 0
        if side > 0 and side * side == tokens - prefix:
            return prefix, side
    return None


def to_grid(name: str, x: torch.Tensor) -> torch.Tensor:
    """Activations as an (N, C, H, W) grid.

    Parameters
    ----------
    name : str
        The layer's name (for messages).
    x : torch.Tensor
        (N, C, H, W) passes through; tokens (N, T, D) with T = 1 + H*W (class
        token first) or T = H*W become (N, D, H, W).

    Returns
    -------
    torch.Tensor
        (N, C, H, W).

    Raises
    ------
    LayerError
        For any other shape.
    """
    if x.dim() == 4:
        return x
    if x.dim() == 3:
        n, t, d = x.shape
        found = token_grid_side(t)
        if found is not None:
            prefix, side = found
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


@dataclass(frozen=True)
class LayerInfo:
    """What a dry run learned about one module.

    Attributes
    ----------
    name : str
        Dotted module name.
    type : str
        The module's class name.
    shape : tuple of int or None
        Output shape of its first call, batch dimension included; None when it
        returned no tensor.
    calls : int
        How many times it ran in one forward pass (more than one: not
        dissectable, its output is ambiguous).
    """

    name: str
    type: str
    shape: tuple[int, ...] | None
    calls: int

    @property
    def has_grid(self) -> bool:
        """True when the output is a feature map (N, C, H, W) or square token grid (N, T, D)."""
        if self.shape is None:
            return False
        return len(self.shape) == 4 or (len(self.shape) == 3 and token_grid_side(self.shape[1]) is not None)

    @property
    def units(self) -> int | None:
        """Channels of a feature map or features of a token; None without a grid."""
        if not self.has_grid:
            return None
        return self.shape[1] if len(self.shape) == 4 else self.shape[2]


def layer_info(model: nn.Module, x: torch.Tensor) -> list[LayerInfo]:
    """Dry run: a :class:`LayerInfo` for every module that ran, in ``named_modules`` order.

    Parameters
    ----------
    model : torch.nn.Module
        The network (its mode is left unchanged).
    x : torch.Tensor
        One input batch for it.
    """
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
    return [LayerInfo(*records[n]) for n, _ in model.named_modules() if n in records]


# -- edits ----------------------------------------------------------------------


class Edit:
    """An intervention on a layer's output: replace chosen units by a target value.

    The output's unit (channel) axis is 1 for (N, C, ...) maps and 2D (N, C)
    features, and the last axis for tokens (N, T, D).  Where ``units`` and
    ``mask`` select, the output becomes ``target(x)``; elsewhere it is left
    exactly as it was.  With a float ``mask`` or float unit weights the result
    is ``x + m * (target - x)``, a soft intervention (the soft unit sets of ACE).

    Parameters
    ----------
    units : sequence of int, or torch.Tensor, optional
        Which units: indices (0-based), a (C,) bool/float selector, or an
        (N, C) selector giving each batch element its own units (batched
        ablations).  None: all units.
    mask : torch.Tensor, optional
        Where: (H, W) or (N, H, W) for feature maps, (T,) or (N, T) for tokens;
        bool or float in [0, 1].  None: everywhere.
    """

    def __init__(self, units: Sequence[int] | torch.Tensor | None = None, mask: torch.Tensor | None = None):
        self.units = units
        self.mask = mask

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """The value selected positions take: a tensor broadcastable to ``x``."""
        raise NotImplementedError

    # unit axis and the shape of a per-unit vector broadcast against x
    @staticmethod
    def _unit_axis(x: torch.Tensor) -> int:
        return x.dim() - 1 if x.dim() == 3 else 1

    def _per_unit(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(C,) or (N, C) -> a view that broadcasts along x's unit axis."""
        axis = self._unit_axis(x)
        shape = [1] * x.dim()
        if v.dim() == 2:
            shape[0] = v.shape[0]
        shape[axis] = v.shape[-1]
        return v.reshape(shape)

    def _selector(self, x: torch.Tensor) -> torch.Tensor | None:
        axis = self._unit_axis(x)
        c = x.shape[axis]
        units = self.units
        if units is None:
            sel = None
        else:
            if not isinstance(units, torch.Tensor):
                idx = torch.as_tensor(list(units), dtype=torch.long)
                if idx.numel() and (int(idx.min()) < -c or int(idx.max()) >= c):
                    raise ConfigError(f"edit units {list(units)} out of range for a layer with {c} units")
                units = torch.zeros(c, dtype=torch.bool)
                units[idx] = True
            if units.shape[-1] != c or units.dim() > 2:
                raise ConfigError(f"edit unit selector of shape {tuple(units.shape)} does not fit {c} units "
                                  "(expected (C,) or (N, C))")
            sel = self._per_unit(units.to(x.device), x)
        if self.mask is not None:
            m = self.mask.to(x.device)
            if x.dim() == 4:
                m = m.reshape(-1, 1, *m.shape[-2:]) if m.dim() == 3 else m.reshape(1, 1, *m.shape)
            elif x.dim() == 3:
                m = m.reshape(-1, m.shape[-1], 1)
            else:
                raise ConfigError(f"a spatial edit mask needs a map or token output, got shape {tuple(x.shape)}")
            sel = m if sel is None else (sel & m if sel.dtype == m.dtype == torch.bool else sel * m)
        return sel

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the edit to ``x`` and return the new tensor (``x`` itself is not changed)."""
        target = self.target(x)
        sel = self._selector(x)
        if sel is None:
            return torch.broadcast_to(target, x.shape).to(x.dtype).clone() if target.shape != x.shape else target
        if sel.dtype == torch.bool:
            return torch.where(sel, target.to(x.dtype), x)
        return x + sel.to(x.dtype) * (target.to(x.dtype) - x)


class Zero(Edit):
    """Set units to 0 (ablation).  ``Zero(units, mask=None)``."""

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """A 0-d zero of ``x``'s dtype and device."""
        return torch.zeros((), dtype=x.dtype, device=x.device)


class SetValue(Edit):
    """Set units to fixed values (insertion).

    Parameters
    ----------
    units : see :class:`Edit`
    values : float or torch.Tensor
        One value, or (C,) per-unit values over *all* units of the layer (so a
        per-unit 99.5th percentile can be passed as is).
    mask : see :class:`Edit`
    """

    def __init__(self, units, values, mask=None):
        super().__init__(units, mask)
        self.values = values

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """``values`` as a 0-d tensor, or per unit broadcast along ``x``'s unit axis."""
        v = torch.as_tensor(self.values, dtype=x.dtype, device=x.device)
        return v if v.dim() == 0 else self._per_unit(v, x)


class Scale(Edit):
    """Multiply units by ``factor`` (a float or a (C,) per-unit tensor).

    Parameters
    ----------
    factor : float or torch.Tensor
        One factor, or (C,) per-unit factors over all units of the layer.
    units, mask
        As :class:`Edit`.
    """

    def __init__(self, factor, units=None, mask=None):
        super().__init__(units, mask)
        self.factor = factor

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` times ``factor`` (per unit along the unit axis when a (C,) tensor)."""
        f = torch.as_tensor(self.factor, dtype=x.dtype, device=x.device)
        return x * (f if f.dim() == 0 else self._per_unit(f, x))


class Add(Edit):
    """Add a vector along the unit axis: ``vector`` is (C,) (or a float).

    Parameters
    ----------
    vector : float or torch.Tensor
        One value, or a (C,) vector over all units of the layer.
    units, mask
        As :class:`Edit`.
    """

    def __init__(self, vector, units=None, mask=None):
        super().__init__(units, mask)
        self.vector = vector

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus ``vector`` (per unit along the unit axis when a (C,) tensor)."""
        v = torch.as_tensor(self.vector, dtype=x.dtype, device=x.device)
        return x + (v if v.dim() == 0 else self._per_unit(v, x))


class Apply(Edit):
    """Replace the output by ``fn(output)`` where selected (``fn`` must not change its input in place).

    Parameters
    ----------
    fn : callable
        Tensor -> tensor broadcastable to the layer's output.
    units, mask
        As :class:`Edit`.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], units=None, mask=None):
        super().__init__(units, mask)
        self.fn = fn

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """``fn(x)``."""
        return self.fn(x)


# -- tracing --------------------------------------------------------------------


class Trace:
    """Context manager that reads (and optionally edits) the outputs of ``layers``.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    layers : iterable of str
        Layers to read (``named_modules`` names).  Edited layers are added
        when missing.
    edit : mapping of str to Edit or callable, optional
        Per layer, an :class:`Edit` (or any callable tensor -> tensor) applied
        to its output before the rest of the network sees it.
    grid : bool
        Store outputs as (N, C, H, W) grids (:func:`to_grid`); False keeps
        them as returned.
    clone : bool
        Without gradients, store a detached copy (safe against later in-place
        operations).  Set False only when nothing downstream writes in place.

    Raises
    ------
    LayerError
        For an unknown layer name.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], *, edit: Mapping[str, Callable] | None = None,
                 grid: bool = True, clone: bool = True):
        self.model = model
        self.edit = dict(edit or {})
        names = list(layers)
        names += [n for n in self.edit if n not in names]
        self.modules = resolve_layers(model, names)
        self.grid = grid
        self.clone = clone
        self.activations: dict[str, torch.Tensor] = {}
        self.output = None
        self._handles: list = []
        self._stop_early = False
        self._grad = False

    def _make_hook(self, name: str):
        edit = self.edit.get(name)

        def hook(module, inputs, output):
            if name in self.activations:
                raise CaptureError(
                    f"layer {name!r} ({type(module).__name__}) ran twice in one forward pass, so its output is "
                    "ambiguous (a module reused inside the network, such as torchvision's shared ReLU in "
                    "Bottleneck blocks); use its parent block or another layer instead"
                )
            tensor = first_tensor(output)
            if tensor is None:
                raise LayerError(f"layer {name!r} returned {type(output).__name__}, not a tensor")
            edited = edit(tensor) if edit is not None else tensor
            if self._grad:
                if edited.requires_grad:
                    edited.retain_grad()
                stored = edited
                passed = edited.clone() if edit is not None or self.clone else edited  # in-place ops hit the copy
            else:
                stored = edited.detach()
                if self.clone:
                    stored = stored.clone()
                passed = edited
            self.activations[name] = to_grid(name, stored) if self.grid else stored
            if self._stop_early and len(self.activations) == len(self.modules):
                raise _StopForward
            if passed is not tensor:
                return _replace_first(output, passed)
            return None

        return hook

    def _reset(self, module, inputs):
        self.activations = {}

    def __enter__(self) -> "Trace":
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
        """Remove every hook (also done on leaving the ``with`` block)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _call(self, x, *, grad: bool, stop_early: bool):
        if not self._handles:
            raise CaptureError("Trace.run()/forward() must be called inside `with Trace(...) as trace:`")
        self._stop_early, self._grad = stop_early, grad
        self.output = None
        try:
            with contextlib.nullcontext() if grad else torch.no_grad():
                self.output = self.model(x)
        except _StopForward:
            pass
        finally:
            self._stop_early, self._grad = False, False
        missing = [n for n in self.modules if n not in self.activations]
        if missing:
            raise CaptureError(
                f"layers {missing} did not run in the forward pass (modules defined but not called by forward)"
            )
        return self.output

    def run(self, x, *, grad: bool = False, stop_early: bool = True) -> dict[str, torch.Tensor]:
        """Forward ``x`` and return the stored outputs, layer name -> tensor.

        Parameters
        ----------
        x : torch.Tensor or any input of ``model``
            The batch.
        grad : bool
            Keep the autograd graph (stored outputs then require grad and get
            ``.grad`` after a backward pass); default off (``no_grad``).
        stop_early : bool
            End the forward after the last traced layer (default).  With
            False the whole network runs, so a layer that fires again later
            is detected, and :attr:`output` holds the model's output.

        Raises
        ------
        CaptureError
            A layer ran twice or did not run.
        """
        self._call(x, grad=grad, stop_early=stop_early)
        return self.activations

    def forward(self, x, *, grad: bool = False):
        """Run the whole network with the edits and return its output (outputs read go to :attr:`activations`)."""
        return self._call(x, grad=grad, stop_early=False)
