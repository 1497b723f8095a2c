"""Segmentation networks as segmenters: :class:`ModuleSegmenter` and the ``module:`` spec.

A segmentation network maps normalised images (N, 3, H, W) to class logits
(N, C, h, w).  :class:`ModuleSegmenter` turns its logits into label maps:
the logits are resized to the label grid by bilinear interpolation
(``align_corners=False``, antialiased when shrinking, so every logit pixel
contributes), and each label pixel takes the class with the largest logit
(ties to the lower class index).  Classes map to concept numbers 1..K in
order; a background class maps to 0 (no label).

``module:package.module:factory[?KEY=VALUE...]`` calls ``factory(**options)``
(options other than ``size`` and ``weights``, as strings).  The factory
returns either

- an object following the :class:`~netdissect.segment.base.Segmenter`
  protocol, used as it is; or
- an ``nn.Module`` of the kind above with the attribute ``concept_names``
  (C names; ``None``, ``""``, ``"background"`` or ``"__background__"`` mean
  no label), optionally ``concept_categories`` (C category names, default
  ``"object"``) and ``netdissect_preprocess`` (a
  :class:`~netdissect.models.Preprocess` or a dict of its fields; default:
  ImageNet mean and std on [0, 1] images).  The module may return the logits
  as a tensor or in a mapping under ``"out"`` (as torchvision's models do).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.protocol import Concept, ConceptTable
from ..errors import ConfigError, ModelError, close_matches
from ..models import Preprocess, load_weights, state_hash
from .base import Segmentation, Segmenter
from .registry import parse_size, register_segmenter

_VERSION = "netdissect-module-segmenter-1"
#: class names that mean "no label" (compared after ``strip().lower()``)
BACKGROUND_NAMES = ("", "background", "__background__")


def _is_background(name) -> bool:
    return name is None or str(name).strip().lower() in BACKGROUND_NAMES


class ModuleSegmenter:
    """A segmentation network: images -> class logits -> label maps.

    Parameters
    ----------
    module : nn.Module
        Maps (N, 3, H', W') normalised float images to logits (N, C, h, w),
        as a tensor or a mapping with the key ``"out"``.  Put in eval mode.
    concept_names : sequence of str or None
        C class names, in logit order; background names (``None``, ``""``,
        ``"background"``, ``"__background__"``) mean no label (0).  The other
        classes become concepts 1..K in order; classes sharing a name share
        one number.
    concept_categories : sequence of str, optional
        C category names (default: ``"object"`` for every class).
    preprocess : Preprocess, optional
        Turns uint8 images into the module's input (default: ImageNet mean
        and std on [0, 1] values, no resizing).
    size : int, str or (int, int), optional
        A fixed label size (h, w); by default a quarter of the image size,
        ``(H // 4, W // 4)`` (the PNAS 2020 protocol: 56x56 for 224 inputs).
    spec : str, optional
        The spec string that made it, returned by :meth:`spec`.

    Attributes
    ----------
    concepts : ConceptTable
        The concepts, numbered 1..K.
    class_to_label : torch.Tensor
        (C,) int64 concept number of each class (0 for background).

    Raises
    ------
    ModelError
        If the names or categories are malformed (wrong type, wrong count, a
        name in two categories).
    ConfigError
        If ``size`` is not one or two positive integers.
    """

    def __init__(
        self,
        module: nn.Module,
        concept_names: Sequence[str | None],
        *,
        concept_categories: Sequence[str] | None = None,
        preprocess: Preprocess | None = None,
        size: "int | str | tuple[int, int] | None" = None,
        spec: str | None = None,
    ):
        if not isinstance(module, nn.Module):
            raise ModelError(f"ModuleSegmenter needs a torch.nn.Module, got {type(module).__name__}")
        if isinstance(concept_names, str) or not isinstance(concept_names, Sequence) or not concept_names:
            raise ModelError(
                f"concept_names must be a non-empty list of class names (None or 'background' for no label), "
                f"got {concept_names!r}"
            )
        names = list(concept_names)
        if any(n is not None and not isinstance(n, str) for n in names):
            bad = next(n for n in names if n is not None and not isinstance(n, str))
            raise ModelError(f"concept_names must hold strings or None, got {bad!r} ({type(bad).__name__})")
        if concept_categories is None:
            categories = ["object"] * len(names)
        else:
            if isinstance(concept_categories, str) or not isinstance(concept_categories, Sequence):
                raise ModelError(f"concept_categories must be a list of category names, got {concept_categories!r}")
            categories = list(concept_categories)
            if len(categories) != len(names):
                raise ModelError(
                    f"concept_categories has {len(categories)} entries for {len(names)} concept_names; "
                    "give one per class"
                )
        number_of: dict[str, int] = {}
        category_of: dict[str, str] = {}
        concepts: list[Concept] = []
        order: list[str] = []
        lookup = []
        for name, category in zip(names, categories):
            if _is_background(name):
                lookup.append(0)
                continue
            name = name.strip()
            if not isinstance(category, str) or not category:
                raise ModelError(f"the category of class {name!r} must be a non-empty string, got {category!r}")
            if name in number_of:
                if category_of[name] != category:
                    raise ModelError(
                        f"class {name!r} appears twice with different categories ({category_of[name]!r}, {category!r})"
                    )
            else:
                number_of[name] = len(number_of) + 1
                category_of[name] = category
                concepts.append(Concept(number_of[name], name, category))
                if category not in order:
                    order.append(category)
            lookup.append(number_of[name])
        if not concepts:
            raise ModelError(f"concept_names {names!r} name no class other than background")
        self.module = module.eval()
        self.concepts = ConceptTable(concepts, order)
        self.class_names = [None if _is_background(n) else n.strip() for n in names]
        self.class_to_label = torch.tensor(lookup, dtype=torch.int64)
        if isinstance(preprocess, dict):
            preprocess = Preprocess(**preprocess)
        if preprocess is not None and not isinstance(preprocess, Preprocess):
            raise ModelError(f"preprocess must be a netdissect.models.Preprocess, got {type(preprocess).__name__}")
        self.preprocess = preprocess or Preprocess()
        self.size = None if size is None else parse_size(size, "ModuleSegmenter")
        self._spec = spec
        self._state_hash: str | None = None

    def __repr__(self) -> str:
        return f"ModuleSegmenter({type(self.module).__name__}, {len(self.class_names)} classes, spec={self._spec!r})"

    @property
    def num_classes(self) -> int:
        """C, the number of logit channels."""
        return len(self.class_names)

    def label_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the labels for images of ``image_size`` (H, W).

        Parameters
        ----------
        image_size : (int, int)
            (H, W).

        Returns
        -------
        (int, int)
            The fixed ``size`` if one was given, else ``(H // 4, W // 4)``
            (at least 1).
        """
        if self.size is not None:
            return self.size
        H, W = (int(v) for v in image_size)
        return max(1, H // 4), max(1, W // 4)

    def _device(self, fallback: torch.device) -> torch.device:
        for tensor in self.module.parameters():
            return tensor.device
        for tensor in self.module.buffers():
            return tensor.device
        return fallback

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The module's class logits for a batch, resized to the label size.

        Parameters
        ----------
        images : torch.Tensor
            (N, 3, H, W) uint8 RGB.

        Returns
        -------
        torch.Tensor
            (N, C, h, w) float logits at ``label_size((H, W))``, on the
            module's device.

        Raises
        ------
        ConfigError
            If ``images`` is not an (N, 3, H, W) uint8 tensor.
        ModelError
            If the module's output is not (N, C, h', w') logits with C
            classes.
        """
        if (not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3
                or images.dtype != torch.uint8):
            if isinstance(images, torch.Tensor):
                got = f"shape {tuple(images.shape)} {images.dtype}"
            else:
                got = type(images).__name__
            raise ConfigError(f"{self!r}.segment: images must be (N, 3, H, W) uint8 RGB, got {got}")
        device = self._device(images.device)
        x = self.preprocess(images.to(device))
        dtype = next((p.dtype for p in self.module.parameters() if p.is_floating_point()), x.dtype)
        with torch.no_grad():
            if self.module.training:
                self.module.eval()
            out = self.module(x.to(dtype))
        if isinstance(out, Mapping):
            if "out" not in out:
                raise ModelError(
                    f"{self!r}: the module returned a mapping without the key 'out' (keys: {sorted(map(str, out))})"
                )
            out = out["out"]
        if (not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != images.shape[0]
                or out.shape[1] != self.num_classes):
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError(
                f"{self!r}: the module must return logits (N={images.shape[0]}, C={self.num_classes}, h, w), got {got}"
            )
        h, w = self.label_size(tuple(images.shape[-2:]))
        out = out.float()
        if tuple(out.shape[-2:]) != (h, w):
            with torch.no_grad():
                out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return out

    def segment(self, images: torch.Tensor, indices: "torch.Tensor | None" = None) -> Segmentation:
        """Label a batch with the class of largest logit per label pixel.

        Parameters
        ----------
        images : torch.Tensor
            (N, 3, H, W) uint8 RGB.
        indices : torch.Tensor, optional
            Ignored.

        Returns
        -------
        Segmentation
            ``pixel_labels`` (N, 1, h, w) int64 concept numbers (0 where the
            background class wins), ``image_labels`` (N, 1) int64 zeros; on
            the images' device.

        Raises
        ------
        ConfigError
            If ``images`` is not an (N, 3, H, W) uint8 tensor.
        ModelError
            If the module's output is not logits of C classes.
        """
        logits = self.logits(images)
        classes = logits.argmax(dim=1)
        labels = self.class_to_label.to(classes.device)[classes].unsqueeze(1).to(images.device)
        return Segmentation(labels, torch.zeros((images.shape[0], 1), dtype=torch.int64, device=images.device))

    def to(self, device: "torch.device | str") -> "ModuleSegmenter":
        """Move the module to ``device``.

        Parameters
        ----------
        device : torch.device or str

        Returns
        -------
        ModuleSegmenter
            self.
        """
        self.module.to(device)
        return self

    def spec(self) -> str:
        """The spec string that made this segmenter (``"module"`` when built directly).

        Returns
        -------
        str
        """
        return self._spec or f"module:{type(self.module).__module__}:{type(self.module).__name__}"

    def fingerprint(self) -> str:
        """A content key over the weights, classes, preprocessing and label rule.

        Returns
        -------
        str
            A sha256 hex digest.
        """
        if self._state_hash is None:
            self._state_hash = state_hash(self.module)
        key = {
            "segmenter": _VERSION,
            "module": type(self.module).__qualname__,
            "weights": self._state_hash,
            "classes": self.class_names,
            "concepts": self.concepts.fingerprint(),
            "preprocess": self.preprocess.to_json(),
            "size": list(self.size) if self.size else "quarter",
            "resize": "bilinear-antialias",
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def module_segmenter(
    target: str,
    *,
    options: dict[str, str] | None = None,
    weights: "str | Path | None" = None,
    size: "int | str | tuple[int, int] | None" = None,
    spec: str | None = None,
) -> Segmenter:
    """Build a segmenter with a user factory, ``package.module:factory``.

    Parameters
    ----------
    target : str
        ``package.module:factory``; ``factory(**options)`` is called.
    options : dict of str to str, optional
        Keyword arguments for the factory.
    weights : str or Path, optional
        A weights file loaded (strictly) into the returned ``nn.Module``.
    size : int, str or (int, int), optional
        A fixed label size for an ``nn.Module`` result (see
        :class:`ModuleSegmenter`).
    spec : str, optional
        The whole spec, for messages and :meth:`ModuleSegmenter.spec`.

    Returns
    -------
    Segmenter
        The factory's segmenter object as is, or a :class:`ModuleSegmenter`
        around its ``nn.Module``.

    Raises
    ------
    ConfigError
        If ``target`` is not ``package.module:factory``.
    ModelError
        If the module cannot be imported, has no such callable, the factory
        fails, or returns something else than a segmenter or an
        ``nn.Module`` with ``concept_names``; or the weights do not fit.
    """
    spec = spec or f"module:{target}"
    modname, sep, factory_name = target.rpartition(":")
    if not sep or not modname or not factory_name:
        raise ConfigError(f"segmenter spec {spec!r} must look like module:package.module:factory")
    try:
        mod = importlib.import_module(modname)
    except ImportError as exc:
        raise ModelError(f"segmenter spec {spec!r}: cannot import {modname!r} ({exc})") from None
    factory = getattr(mod, factory_name, None)
    if not callable(factory):
        public = [n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n))]
        hint = close_matches(factory_name, public)
        raise ModelError(
            f"segmenter spec {spec!r}: module {modname!r} has no callable {factory_name!r}"
            + (f"; {hint}" if hint else "")
        )
    try:
        made = factory(**(options or {}))
    except TypeError as exc:
        raise ModelError(
            f"segmenter spec {spec!r}: {modname}:{factory_name}(**{options or {}}) failed: {exc}"
        ) from None
    if isinstance(made, nn.Module):
        names = getattr(made, "concept_names", None)
        if names is None:
            raise ModelError(
                f"segmenter spec {spec!r}: {modname}:{factory_name}() returned a {type(made).__name__} without the "
                "attribute concept_names (a list of one class name per logit channel; "
                "None or 'background' for no label)"
            )
        if weights is not None:
            load_weights(made, weights)
            if "weights=" not in spec:
                spec += ("&" if "?" in spec else "?") + f"weights={Path(weights).expanduser().resolve()}"
        preprocess = getattr(made, "netdissect_preprocess", None)
        try:
            return ModuleSegmenter(
                made,
                names,
                concept_categories=getattr(made, "concept_categories", None),
                preprocess=preprocess,
                size=size,
                spec=spec,
            )
        except ModelError as exc:
            raise ModelError(f"segmenter spec {spec!r}: {exc}") from None
    if isinstance(made, Segmenter):
        if weights is not None or size is not None:
            raise ConfigError(
                f"segmenter spec {spec!r}: {modname}:{factory_name}() returned a segmenter object "
                f"({type(made).__name__}); weights and size apply only to an nn.Module result"
            )
        return made
    raise ModelError(
        f"segmenter spec {spec!r}: {modname}:{factory_name}() returned {type(made).__name__}; it must return a "
        "segmenter (concepts, label_size, segment, to, spec, fingerprint) or a torch.nn.Module with concept_names"
    )


@register_segmenter("module", arg="package.module:factory")
def _module(arg: str, options: dict[str, str], *, dataset=None, weights=None, spec: str = "module") -> Segmenter:
    options = dict(options)
    size = options.pop("size", None)
    option_weights = options.pop("weights", None)
    if option_weights is not None and weights is not None:
        raise ConfigError(f"segmenter spec {spec!r}: weights given twice (in the spec and as weights={str(weights)!r})")
    if size is not None:
        size = parse_size(size, f"segmenter spec {spec!r}")
    return module_segmenter(arg, options=options, weights=weights or option_weights, size=size, spec=spec)


__all__ = ["BACKGROUND_NAMES", "ModuleSegmenter", "module_segmenter"]
