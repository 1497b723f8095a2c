"""The ink segmenter (spec ``ink``): pixels brighter than a threshold are "ink".

For generators of pen strokes on a dark ground (MNIST digits: white ink on
black), the one pixel concept is ``ink``.  With a digit classifier (Python
API only: ``InkSegmenter(classifier=...)``) every image also gets an
image-level label, the class the classifier gives it (``digit-0`` ...), so a
dissection scores units against whole-image classes too (Bau et al. 2020,
PNAS: scene classes are image-level labels in the same way).
"""

from __future__ import annotations

import hashlib
import json
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.protocol import Concept, ConceptTable
from ..errors import ConfigError
from .base import Segmentation
from .registry import check_options, parse_size, register_segmenter

_VERSION = "netdissect-ink-segmenter-1"


class InkSegmenter:
    """Labels the pixels whose grey level (mean of R, G, B) exceeds ``threshold`` as ``ink`` (number 1).

    Parameters
    ----------
    threshold : int
        Grey level 0..254; ``grey > threshold`` is ink.
    size : int, str or (int, int), optional
        Label size (h, w); default the image size.  Smaller sizes average the
        ink mask over areas and keep cells at least half inked.
    classifier : torch.nn.Module, optional
        Maps (N, 1, h, w) grey images in [0, 1] to (N, K) class scores; its
        argmax becomes an image-level label.
    class_names : sequence of str, optional
        K names of the classes (default ``digit-0`` ... ``digit-{K-1}``).
    classifier_size : (int, int)
        The classifier's input size (images are resized bilinearly); LeNet-5 takes 32x32.

    Attributes
    ----------
    concepts : ConceptTable
        ``ink`` (1, category ``ink``), then the classes (2..K+1, category ``class``).

    Raises
    ------
    ConfigError
        For a threshold outside 0..254 or a bad size.
    """

    def __init__(self, threshold: int = 127, size=None, *, classifier: nn.Module | None = None,
                 class_names: Sequence[str] | None = None, classifier_size: tuple[int, int] = (32, 32)):
        if not 0 <= int(threshold) <= 254:
            raise ConfigError(f"ink threshold must be a grey level 0..254, got {threshold}")
        self.threshold = int(threshold)
        self.size = None if size is None else parse_size(size, "InkSegmenter")
        self.classifier = classifier.eval() if classifier is not None else None
        self.classifier_size = tuple(classifier_size)
        concepts = [Concept(1, "ink", "ink")]
        categories = ["ink"]
        if classifier is not None:
            if class_names is None:
                with torch.no_grad():
                    k = classifier(torch.zeros(1, 1, *self.classifier_size)).shape[-1]
                class_names = [f"digit-{i}" for i in range(k)]
            concepts += [Concept(i + 2, str(name), "class") for i, name in enumerate(class_names)]
            categories.append("class")
        self.class_names = list(class_names or [])
        self.concepts = ConceptTable(concepts, categories)
        self.device = torch.device("cpu")

    def label_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The fixed ``size``, else the image size (H, W).

        Parameters
        ----------
        image_size : (int, int)

        Returns
        -------
        (int, int)
        """
        return self.size if self.size is not None else (int(image_size[0]), int(image_size[1]))

    def segment(self, images: torch.Tensor, indices: torch.Tensor | None = None) -> Segmentation:
        """Label a batch.

        Parameters
        ----------
        images : torch.Tensor
            (N, 3, H, W) uint8.
        indices : torch.Tensor, optional
            Ignored.

        Returns
        -------
        Segmentation
            ``pixel_labels`` (N, 1, h, w): 1 = ink, 0 = none; ``image_labels``
            (N, 1): the class label number (0 without a classifier).

        Raises
        ------
        ConfigError
            For anything but (N, 3, H, W) uint8 images.
        """
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3 \
                or images.dtype != torch.uint8:
            raise ConfigError("InkSegmenter.segment: images must be an (N, 3, H, W) uint8 tensor, got "
                              f"{getattr(images, 'shape', type(images).__name__)}")
        grey = images.float().mean(dim=1, keepdim=True)
        ink = grey > self.threshold
        h, w = self.label_size(tuple(images.shape[-2:]))
        if (h, w) != tuple(images.shape[-2:]):
            ink = F.adaptive_avg_pool2d(ink.float(), (h, w)) >= 0.5
        image_labels = torch.zeros((images.shape[0], 1), dtype=torch.int64, device=images.device)
        if self.classifier is not None:
            x = F.interpolate(grey / 255, size=self.classifier_size, mode="bilinear", align_corners=False)
            dev = next((p.device for p in self.classifier.parameters()), x.device)
            with torch.no_grad():
                image_labels[:, 0] = self.classifier(x.to(dev)).argmax(dim=-1).to(images.device) + 2
        return Segmentation(ink.to(torch.int64), image_labels)

    def to(self, device: "torch.device | str") -> "InkSegmenter":
        """Move the classifier to ``device`` (labels are made on the images' device); returns self.

        Parameters
        ----------
        device : torch.device or str

        Returns
        -------
        InkSegmenter
        """
        self.device = torch.device(device)
        if self.classifier is not None:
            self.classifier.to(self.device)
        return self

    def spec(self) -> str:
        """``ink?threshold=T`` (and ``&size=HxW``); a classifier is not part of the spec.

        Returns
        -------
        str
        """
        return f"ink?threshold={self.threshold}" + (f"&size={self.size[0]}x{self.size[1]}" if self.size else "")

    def fingerprint(self) -> str:
        """A content key over the rule, threshold, size and the classifier's weights.

        Returns
        -------
        str
        """
        key = {"segmenter": _VERSION, "threshold": self.threshold, "size": list(self.size or []),
               "classes": self.class_names}
        if self.classifier is not None:
            from ..models import state_hash

            key["classifier"] = state_hash(self.classifier)
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


@register_segmenter("ink")
def _ink(arg: str, options: dict[str, str], *, dataset=None, weights=None, spec: str = "ink") -> InkSegmenter:
    if arg or weights is not None:
        raise ConfigError(f"segmenter spec {spec!r}: 'ink' takes no argument or weights "
                          "(options go after '?', e.g. ink?threshold=127)")
    check_options(spec, options, ["threshold", "size"])
    try:
        threshold = int(options.get("threshold", 127))
    except ValueError:
        raise ConfigError(f"segmenter spec {spec!r}: threshold must be an integer grey level 0..254") from None
    size = parse_size(options["size"], f"segmenter spec {spec!r}") if "size" in options else None
    return InkSegmenter(threshold, size)


__all__ = ["InkSegmenter"]
