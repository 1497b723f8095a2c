"""Turn any model into an LWTA model: replace its activation modules by :class:`~netdissect.lwta.layer.LWTA`.

As DISCOVER does (Panousis et al., NeurIPS 2023, section 4): every ReLU of a
ResNet, the MLP GELU of a ViT block.  Replaced are modules of the classes
ReLU, ReLU6, GELU and SiLU (torch's and timm's, by class name), and the
fused BatchNorm + ReLU6 of netdissect's EfficientNet-Lite.  Activations
called as functions inside a ``forward`` (``F.relu(x)``) are not seen and
stay as they are; :func:`convert` raises when it finds nothing to replace.

Converted models load by spec as any ``--model``::

    lwta:efficientnet_lite0?U=4
    lwta:torchvision:resnet18?U=8&mode=argmax&classes=10
    lwta:module:netdissect.lwta.nets:small_resnet?U=2&classes=6

Options after ``?`` (``&``-separated): ``U`` (an integer, or ``off`` to keep
the activations: the baseline with the same head), ``tau``, ``mode``
(``sample``/``argmax``), ``seed``, ``classes`` (a new, seeded N-way last
linear layer).  State dicts of converted models hold exactly the keys of
the original (LWTA has no parameters), so saved weights load with
``--weights``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from .layer import DEFAULT_TAU, LWTA, MODES

log = logging.getLogger(__name__)

#: activation classes replaced (matched by class name, so timm's and torch's alike)
ACTIVATION_NAMES = ("ReLU", "ReLU6", "GELU", "GELUTanh", "QuickGELU", "SiLU", "Swish")


@dataclass(frozen=True)
class Change:
    """One replaced module: its name, what it was, what it is now."""

    name: str
    old: str
    new: str

    def __str__(self) -> str:
        return f"{self.name}: {self.old} -> {self.new}"


class BatchNormLWTA(nn.BatchNorm2d):
    """netdissect's EfficientNet-Lite ``BatchNormAct`` with LWTA instead of ReLU6 (same state dict keys).

    Parameters
    ----------
    channels : int
        Channels of the (B, C, H, W) input.
    eps : float
        BatchNorm epsilon.
    act : LWTA
        The competition applied after normalising.
    """

    def __init__(self, channels: int, eps: float, act: LWTA):
        super().__init__(channels, eps=eps)
        self.lwta = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Batch-normalise (B, C, H, W) ``x``, then the LWTA competition."""
        return self.lwta(super().forward(x))


def _is_activation(module: nn.Module) -> bool:
    return type(module).__name__ in ACTIVATION_NAMES and not list(module.children())


def _fused_bn(module: nn.Module) -> bool:
    from ..models.efficientnet_lite import BatchNormAct

    return type(module) is BatchNormAct and bool(module.act)


def convert(model: nn.Module, U: int, *, tau: float = DEFAULT_TAU, mode: str = "sample", seed: int = 0,
            kl: bool = False) -> list[Change]:
    """Replace every activation module of ``model`` (in place) by ``LWTA(U)``.

    Parameters
    ----------
    model : torch.nn.Module
        Any model; changed in place.
    U, tau, mode, seed, kl
        Passed to each new :class:`~netdissect.lwta.layer.LWTA`.

    Returns
    -------
    list of Change
        What was replaced, in ``named_modules`` order.  A module used at two
        places (torchvision's BasicBlock ReLU) is one LWTA used at both.

    Raises
    ------
    ConfigError
        For bad LWTA options.
    ModelError
        When the model has no activation module to replace (activations
        called as functions in ``forward`` are not converted).
    """
    LWTA(U, tau, mode, seed, kl)  # checks the options once
    changes: list[Change] = []
    done: dict[int, nn.Module] = {}
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent._modules.items()):  # shared children at every place
            if child is None:
                continue
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if id(child) in done:
                setattr(parent, child_name, done[id(child)])
                continue
            if _is_activation(child):
                new: nn.Module = LWTA(U, tau, mode, seed, kl)
            elif _fused_bn(child):
                new = BatchNormLWTA(child.num_features, child.eps, LWTA(U, tau, mode, seed, kl))
                new.load_state_dict(child.state_dict())
                new.train(child.training)
                new.to(next(child.parameters()).device)
            else:
                continue
            done[id(child)] = new
            setattr(parent, child_name, new)
            changes.append(Change(name, type(child).__name__, type(new).__name__ + f"(U={U})"))
    if not changes:
        raise ModelError(f"{type(model).__name__} has no activation module ({', '.join(ACTIVATION_NAMES)}) to "
                         "replace; activations called as functions in forward() are not converted")
    return changes


def replace_head(model: nn.Module, classes: int) -> str:
    """Replace the last ``nn.Linear`` of ``model`` by a new ``classes``-way one (seeded); returns its name.

    Parameters
    ----------
    model : torch.nn.Module
        Changed in place.
    classes : int
        Outputs of the new layer.

    Returns
    -------
    str
        The replaced layer's name.

    Raises
    ------
    ModelError
        When the model has no ``nn.Linear``.
    """
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"{type(model).__name__} has no nn.Linear layer to replace for classes={classes}")
    name, old = linears[-1]
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(classes)
        new = nn.Linear(old.in_features, classes, bias=old.bias is not None)
    setattr(parent, name.rpartition(".")[2], new.to(old.weight.device))
    return name


def parse_spec(rest: str) -> tuple[str, dict]:
    """``INNER?U=4&mode=argmax`` -> (inner spec, options with types).

    Raises
    ------
    ModelError
        For a missing or malformed option.
    """
    inner, sep, query = rest.rpartition("?")
    if not sep:
        raise ModelError(f"model spec 'lwta:{rest}' needs options after '?', e.g. lwta:{rest}?U=4")
    opts: dict = {"U": None, "tau": DEFAULT_TAU, "mode": "sample", "seed": 0, "classes": None}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or key not in opts:
            raise ModelError(f"model spec 'lwta:{rest}': option {part!r} is not one of "
                             f"{', '.join(k + '=' for k in opts)}")
        try:
            if key == "U":
                opts[key] = "off" if value == "off" else int(value)
            elif key == "tau":
                opts[key] = float(value)
            elif key in ("seed", "classes"):
                opts[key] = int(value)
            else:
                if value not in MODES:
                    raise ValueError
                opts[key] = value
        except ValueError:
            raise ModelError(f"model spec 'lwta:{rest}': bad value for {key}: {value!r}") from None
    if opts["U"] is None:
        raise ModelError(f"model spec 'lwta:{rest}' needs U=N (units per block) or U=off")
    return inner, opts


def load_converted(rest: str):
    """The ``lwta:`` model source: load ``INNER`` by spec, optionally replace its head, convert it.

    Parameters
    ----------
    rest : str
        The spec after ``lwta:`` (``INNER?U=4[&tau=..][&mode=..][&seed=..][&classes=N]``).

    Returns
    -------
    LoadedModel
        The converted model with the inner model's preprocessing.

    Raises
    ------
    ModelError
        For a bad spec, an unloadable inner model or nothing to convert.
    """
    from ..models import load_model

    inner, opts = parse_spec(rest)
    if inner.startswith("lwta:"):
        raise ModelError(f"model spec 'lwta:{rest}': the inner model is an LWTA spec already")
    loaded = load_model(inner)
    if opts["classes"] is not None:
        replace_head(loaded.module, opts["classes"])
    if opts["U"] != "off":
        try:
            changes = convert(loaded.module, opts["U"], tau=opts["tau"], mode=opts["mode"], seed=opts["seed"])
        except ConfigError as exc:
            raise ModelError(f"model spec 'lwta:{rest}': {exc}") from None
        log.info("lwta:%s: replaced %d activations: %s", inner, len(changes), "; ".join(map(str, changes)))
    return loaded
