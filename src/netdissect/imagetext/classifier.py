"""Closed-vocabulary image-text models: a classifier over named classes.

A classifier is an image-text model whose vocabulary is its class names: an
image's embedding is its softmax class probabilities (N, C) and a name's is
the one-hot vector of its class (a name given to several classes marks all
of them).  The cosine of the two is then the class probability scaled by the
image's probability norm, which is what CLIP-Dissect's concept-activation
matrix needs.  Images are preprocessed with the model's own evaluation recipe
(shorter side resized to ``resize_size``, centre crop ``crop_size``, the
model's normalisation), on tensors.

Spec: ``classifier:MODEL_SPEC[?classes=FILE]`` with any
:func:`netdissect.models.load_model` spec.  Models with 1000 outputs get the
ImageNet-1k class names (torchvision's list, in the standard index order);
any other needs ``classes=FILE``, one name per line in output order.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError, ModelError, close_matches
from ..models import Preprocess
from .transforms import resize_center_crop

_PLACES_PREFIX = re.compile(r"^/[a-z]/")


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (torchvision's list, shipped with torchvision).

    Returns
    -------
    list of str
        ``['tench', 'goldfish', 'great white shark', ...]``.
    """
    import torchvision

    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def read_class_names(path) -> list[str]:
    """Class names from a text file, one per line, in output order.

    Blank lines are skipped.  A trailing integer column is dropped and so is a
    leading ``/x/`` folder, so Places365's ``categories_places365.txt``
    (``/a/airfield 0``) reads as ``airfield``, ``apartment_building/outdoor``...

    Parameters
    ----------
    path : str or pathlib.Path
        The file.

    Returns
    -------
    list of str
        The names.

    Raises
    ------
    ConfigError
        When the file cannot be read or names nothing.
    """
    p = Path(path).expanduser()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"class names file {str(p)!r} cannot be read: {exc}") from None
    names = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        head, _, last = line.rpartition(" ")
        if head and last.isdigit():
            line = head.strip()
        names.append(_PLACES_PREFIX.sub("", line))
    if not names:
        raise ConfigError(f"class names file {str(p)!r} names no class")
    return names


def _normal(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


class ClassifierImageText:
    """A classifier as a closed-vocabulary image-text model.

    Parameters
    ----------
    module : torch.nn.Module
        Maps preprocessed (N, 3, crop, crop) images to (N, C) logits.
    classes : sequence of str
        The C class names, in output order.
    preprocess : netdissect.models.Preprocess
        Its evaluation recipe: ``resize_size``, ``crop_size``,
        ``interpolation`` and the normalisation (``mean``, ``std``,
        ``channel_order``, ``size``).
    spec : str, optional
        The spec that opens it again (default ``classifier:<module class>``).

    Attributes
    ----------
    classes : list of str
        The C names, in output order.
    vocabulary : list of str
        The distinct names, in output order (a repeated name appears once).
    """

    def __init__(self, module: nn.Module, classes: Sequence[str], preprocess: Preprocess, *, spec: str | None = None):
        self.module = module.eval()
        self.classes = [str(c) for c in classes]
        if not self.classes:
            raise ConfigError("a classifier image-text model needs at least one class name")
        self.preprocess = preprocess
        self._spec = spec or f"classifier:{type(module).__name__}"
        self.vocabulary: list[str] | None = list(dict.fromkeys(self.classes))
        self._exact: dict[str, list[int]] = {}
        self._loose: dict[str, list[int]] = {}
        for i, c in enumerate(self.classes):
            self._exact.setdefault(c, []).append(i)
            self._loose.setdefault(_normal(c), []).append(i)
        self._fingerprint: str | None = None

    @property
    def device(self) -> torch.device:
        """The device of the classifier's first parameter or buffer (CPU when it has none)."""
        for t in itertools.chain(self.module.parameters(), self.module.buffers()):
            return t.device
        return torch.device("cpu")

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 RGB -> the model's input: resize, centre crop, normalise."""
        p = self.preprocess
        x = resize_center_crop(images.to(self.device), p.resize_size, p.crop_size, interpolation=p.interpolation)
        return p(x)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 RGB -> (N, C) float32 class probabilities, on the model's device.

        Parameters
        ----------
        images : torch.Tensor
            (N, 3, H, W) uint8 RGB, any size.

        Returns
        -------
        torch.Tensor
            (N, C) softmax probabilities.

        Raises
        ------
        ModelError
            When the classifier's output is not (N, C).
        """
        out = self.module(self.prepare(images))
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != len(self.classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError(f"{self._spec}: the classifier returned {shape}, expected (N, {len(self.classes)}) logits")
        return out.float().softmax(1)

    def class_indices(self, word: str) -> list[int]:
        """The output indices named ``word`` (exact, else ignoring case, ``_`` and spacing).

        Parameters
        ----------
        word : str
            A class name.

        Returns
        -------
        list of int
            One index, or several when classes share the name.

        Raises
        ------
        ConfigError
            When no class has that name.
        """
        if word in self._exact:
            return self._exact[word]
        loose = _normal(word) if isinstance(word, str) else None
        if loose in self._loose:
            return self._loose[loose]
        hint = close_matches(str(word), self.vocabulary)
        raise ConfigError(
            f"word {word!r} is not a class of the closed-vocabulary image-text model {self._spec!r} "
            f"({len(self.vocabulary)} class names)" + (f"; {hint}" if hint else "")
        )

    def encode_text(self, words: Sequence[str]) -> torch.Tensor:
        """M class names -> (M, C) one-hot rows, on the model's device.

        Parameters
        ----------
        words : sequence of str
            Class names (see :meth:`class_indices`).

        Returns
        -------
        torch.Tensor
            (M, C) float32.

        Raises
        ------
        ConfigError
            Naming the words that are not class names.
        """
        if isinstance(words, str):
            raise ConfigError("encode_text takes a sequence of strings, not one string")
        rows, missing = [], []
        for w in words:
            try:
                rows.append(self.class_indices(w))
            except ConfigError as exc:
                missing.append((w, exc))
        if missing:
            if len(missing) == 1:
                raise missing[0][1]
            shown = ", ".join(repr(w) for w, _ in missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise ConfigError(
                f"{len(missing)} words are not classes of the closed-vocabulary image-text model {self._spec!r}: "
                f"{shown}"
            )
        out = torch.zeros(len(rows), len(self.classes), device=self.device)
        for i, idx in enumerate(rows):
            out[i, idx] = 1.0
        return out

    def to(self, device) -> "ClassifierImageText":
        """Move to ``device``; returns self."""
        self.module.to(device)
        return self

    def spec(self) -> str:
        """The spec it was opened with."""
        return self._spec

    def fingerprint(self) -> str:
        """sha256 over the weights, the class names and the preprocessing."""
        if self._fingerprint is None:
            from ..models.weights import state_hash

            h = hashlib.sha256(b"classifier-image-text-1|")
            h.update(json.dumps({"classes": self.classes, "preprocess": self.preprocess.to_json()}).encode())
            h.update(state_hash(self.module).encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"ClassifierImageText({self._spec!r}, {len(self.classes)} classes)"


def load_classifier_image_text(model_spec: str, *, weights=None, classes=None) -> ClassifierImageText:
    """Open ``classifier:MODEL_SPEC``.

    Parameters
    ----------
    model_spec : str
        A :func:`netdissect.models.load_model` spec.
    weights : str, optional
        A weights file for the classifier.
    classes : str, optional
        A class names file (see :func:`read_class_names`); default: the
        ImageNet-1k names for a model with 1000 outputs.

    Returns
    -------
    ClassifierImageText
        The model, on the CPU.

    Raises
    ------
    ConfigError
        For an empty model spec, a model without a known class list, or a
        class list whose length differs from the model's outputs.
    ModelError
        When the model cannot be loaded.
    """
    from ..models import load_model

    if not model_spec:
        raise ConfigError("classifier image-text spec needs a model: classifier:MODEL_SPEC, "
                          "e.g. classifier:efficientnet_lite2")
    loaded = load_model(model_spec, weights=weights)
    pre = loaded.preprocess
    side = pre.size if pre.size is not None else (pre.crop_size, pre.crop_size)
    with torch.no_grad():
        probe = loaded.module(torch.zeros(1, 3, *side))
    if not isinstance(probe, torch.Tensor) or probe.dim() != 2:
        shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
        raise ConfigError(f"model {model_spec!r} returns {shape}, not (N, C) class logits; "
                          "it cannot serve as a closed-vocabulary image-text model")
    n = probe.shape[1]
    if classes is not None:
        names = read_class_names(classes)
        if len(names) != n:
            raise ConfigError(f"class names file {classes!r} has {len(names)} names; model {model_spec!r} has {n} "
                              "outputs")
    elif n == 1000:
        names = imagenet_classes()
    else:
        raise ConfigError(f"model {model_spec!r} has {n} outputs and no known class names; give them with "
                          f"classifier:{model_spec}?classes=FILE (one name per line)")
    spec = f"classifier:{model_spec}"
    query = []
    if classes is not None:
        query.append(f"classes={Path(classes).expanduser().resolve()}")
    if weights is not None:
        query.append(f"weights={Path(weights).expanduser().resolve()}")
    if query:
        spec += "?" + "&".join(query)
    return ClassifierImageText(loaded.module, names, pre, spec=spec)
