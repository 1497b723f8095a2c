"""Image-text models by spec: images and words embedded in one space.

Specs (:func:`list_image_text` lists the registered names):

- ``classifier:MODEL_SPEC[?classes=FILE]``: any classifier that
  :func:`netdissect.models.load_model` opens (``classifier:efficientnet_lite2``,
  ``classifier:torchvision:resnet50:IMAGENET1K_V2``) as a closed-vocabulary
  model: image embedding = softmax class probabilities, text embedding =
  one-hot of the class name.  1000-class models get the ImageNet-1k names;
  others need ``?classes=FILE`` (one name per line);
- ``open_clip:ARCH[:PRETRAINED]``, e.g. ``open_clip:ViT-B-16:openai`` (needs
  ``pip install 'netdissect[text]'``; weights are downloaded by open_clip);
- ``hf:MODEL_ID``, a Hugging Face CLIP or SigLIP model, e.g.
  ``hf:openai/clip-vit-base-patch16``, ``hf:google/siglip-base-patch16-224``,
  or ``hf:/path/to/saved/model`` (needs ``pip install 'netdissect[text]'``);
- ``synthetic_clip``: the project's own small model, trained on its synthetic
  concept scenes, shipped in the package (no download).

Any spec takes ``?weights=FILE`` (the same as ``weights=FILE``): a classifier
checkpoint, an open_clip checkpoint, or synthetic_clip weights.  Loading
imports the optional libraries (open_clip, transformers) only when a spec
needs them.  Register another kind with :func:`register_image_text`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import ConfigError, close_matches
from .base import ImageTextModel

__all__ = ["ImageTextModel", "list_image_text", "load_image_text", "register_image_text", "parse_spec"]

#: name -> loader(rest_of_spec, *, weights, options) -> ImageTextModel
_LOADERS: dict[str, Callable[..., ImageTextModel]] = {}


def register_image_text(name: str):
    """Decorator: register a loader for specs ``name`` and ``name:REST``.

    Parameters
    ----------
    name : str
        The spec prefix (letters, digits, ``_``, ``-``).

    Returns
    -------
    callable
        A decorator taking ``fn(rest: str, *, weights: str | None, options:
        dict[str, str]) -> ImageTextModel``, where ``rest`` is the spec after
        ``name:`` ('' for a bare ``name``) and ``options`` the ``?key=value``
        pairs other than ``weights``; the loader raises :class:`ConfigError`
        for an option it does not know.

    Raises
    ------
    ConfigError
        For a name with ``:`` or ``?`` in it.
    """
    if not isinstance(name, str) or not name or any(c in name for c in ":?&="):
        raise ConfigError(f"image-text model name {name!r} must be a non-empty string without ':', '?', '&', '='")

    def deco(fn):
        _LOADERS[name] = fn
        return fn

    return deco


def list_image_text() -> list[str]:
    """Names of the registered kinds of image-text model (spec prefixes).

    Returns
    -------
    list of str
        Sorted names: ``classifier``, ``hf``, ``open_clip``, ``synthetic_clip``...
    """
    return sorted(_LOADERS)


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split ``NAME[:REST][?key=value&...]`` into its parts.

    Parameters
    ----------
    spec : str
        An image-text model spec.

    Returns
    -------
    name : str
        The registered name.
    rest : str
        The part after ``NAME:`` ('' when absent).
    options : dict of str to str
        The ``?key=value`` pairs.

    Raises
    ------
    ConfigError
        For an empty spec or a malformed or repeated option.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"image-text model spec must be a non-empty string, got {spec!r}")
    base, _, query = spec.strip().partition("?")
    options: dict[str, str] = {}
    for item in query.split("&") if query else []:
        key, eq, value = item.partition("=")
        if not eq or not key or not value:
            raise ConfigError(f"image-text model spec {spec!r}: option {item!r} must look like key=value")
        if key in options:
            raise ConfigError(f"image-text model spec {spec!r}: option {key!r} is given twice")
        options[key] = value
    name, _, rest = base.partition(":")
    return name, rest, options


def load_image_text(spec, *, weights: str | Path | None = None) -> ImageTextModel:
    """Open an image-text model by spec (an :class:`ImageTextModel` object is returned as it is).

    Parameters
    ----------
    spec : str or ImageTextModel
        See the module docstring; ``list_image_text()`` names the kinds.
    weights : str or pathlib.Path, optional
        A weights file for the model (same as ``?weights=FILE``).

    Returns
    -------
    ImageTextModel
        The model, on the CPU, in eval mode.

    Raises
    ------
    ConfigError
        For an unknown kind (with close matches), a malformed spec or option,
        or a word list that does not fit the model.
    ModelError
        When the model cannot be built: a missing optional library (the
        message says ``pip install 'netdissect[text]'``), weights that cannot
        be downloaded or do not fit.
    """
    if not isinstance(spec, str):
        if isinstance(spec, ImageTextModel):
            if weights is not None:
                raise ConfigError("weights= applies to a spec string, not to an image-text model object")
            return spec
        raise ConfigError(f"image-text model must be a spec string or an ImageTextModel, got {type(spec).__name__}")
    name, rest, options = parse_spec(spec)
    if "weights" in options:
        given = options.pop("weights")
        if weights is not None and str(weights) != given:
            raise ConfigError(f"image-text model spec {spec!r} names weights {given!r} and weights={str(weights)!r}")
        weights = given
    if name not in _LOADERS:
        hint = close_matches(name, _LOADERS)
        raise ConfigError(
            f"image-text model spec {spec!r}: unknown kind {name!r}; known: "
            + ", ".join(f"{n}:..." if n != "synthetic_clip" else n for n in sorted(_LOADERS))
            + (f"; {hint}" if hint else "")
        )
    return _LOADERS[name](rest, weights=None if weights is None else str(weights), options=options)


def _no_options(kind: str, options: dict[str, str], allowed: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        choices = ("weights",) + allowed
        hint = close_matches(unknown[0], choices)
        raise ConfigError(f"{kind} image-text models take no option {', '.join(map(repr, unknown))}; "
                          f"allowed: {', '.join(choices)}" + (f"; {hint}" if hint else ""))


@register_image_text("classifier")
def _classifier(rest: str, *, weights, options):
    from .classifier import load_classifier_image_text

    _no_options("classifier", options, ("classes",))
    return load_classifier_image_text(rest, weights=weights, classes=options.get("classes"))


@register_image_text("open_clip")
def _open_clip(rest: str, *, weights, options):
    from .openclip import load_open_clip

    _no_options("open_clip", options)
    arch, _, pretrained = rest.partition(":")
    return load_open_clip(arch, pretrained or None, weights=weights)


@register_image_text("hf")
def _hf(rest: str, *, weights, options):
    from .hf import load_hf

    _no_options("hf", options)
    if weights is not None:
        raise ConfigError("hf: image-text models take no weights file; save the model with save_pretrained "
                          "and give its folder as hf:/path/to/folder")
    return load_hf(rest)


@register_image_text("synthetic_clip")
def _synthetic_clip(rest: str, *, weights, options):
    from .small import load_synthetic_clip

    _no_options("synthetic_clip", options)
    if rest:
        raise ConfigError(f"synthetic_clip takes nothing after the name, got 'synthetic_clip:{rest}'; "
                          "give other weights with ?weights=FILE")
    return load_synthetic_clip(weights)
