"""The colour namer as a segmenter: :class:`ColorSegmenter` (spec ``color``).

Every label pixel gets one of the 11 basic colour terms (``black-c`` ...
``yellow-c``, label numbers 1..11 in :data:`~netdissect.data.colornames.COLOR_NAMES`
order, category ``color``), exactly as the project's converters label the
colour category of a data set: ``color_map(image, label_size) + 1``
(:func:`netdissect.data.colornames.color_map`), i.e. the image is reduced to
the label grid by area averaging (Pillow's ``BOX`` filter) and each averaged
pixel is named with :func:`~netdissect.data.colornames.name_colors`.

Two implementations give the same labels, bit for bit:

- the fast one (default) runs in torch on the images' device: Pillow's
  ``BOX`` resampling is reproduced exactly in integer arithmetic (the same
  22-bit fixed-point coefficients, horizontal pass then vertical pass, each
  rounded to uint8), and names come from a table of the name of every one of
  the 2**24 sRGB colours, made once per process by calling ``name_colors``
  itself (about 1-2 s on one CPU core; 16 MiB);
- the reference one (``lut=False``) calls ``color_map`` on each image on the
  CPU.

The tests compare both with ``color_map`` on random and real images and
check the table against ``name_colors`` for every colour.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math

import numpy as np
import torch
from PIL import Image

from ..data.colornames import COLOR_CONCEPTS, color_map, name_colors
from ..data.protocol import Concept, ConceptTable
from ..errors import ConfigError
from .base import Segmentation
from .registry import check_options, parse_size, register_segmenter

#: version of the label rule; bump when the labels for the same images change
_VERSION = "netdissect-color-segmenter-1"
# Pillow's fixed-point precision for 8-bit resampling (libImaging/Resample.c)
_PRECISION_BITS = 32 - 8 - 2


def color_concepts() -> ConceptTable:
    """The colour concept table: ``black-c`` ... ``yellow-c`` as numbers 1..11, category ``color``.

    Returns
    -------
    ConceptTable
    """
    return ConceptTable([Concept(i + 1, name, "color") for i, name in enumerate(COLOR_CONCEPTS)], ["color"])


@functools.lru_cache(maxsize=None)
def _box_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``BOX`` resampling coefficients for one axis, in its fixed point.

    Follows ``precompute_coeffs`` and ``normalize_coeffs_8bpc`` of Pillow's
    ``libImaging/Resample.c`` operation for operation (double precision,
    C truncation), with ``box = (0, in_size)``.

    Returns
    -------
    index : np.ndarray
        (out_size, ksize) int64 input positions (clamped into range where the
        weight is 0).
    weight : np.ndarray
        (out_size, ksize) int64 weights; each row sums to about ``2**22``.
    """
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    ss = 1.0 / filterscale
    index = np.zeros((out_size, ksize), dtype=np.int64)
    weight = np.zeros((out_size, ksize), dtype=np.int64)
    for xx in range(out_size):
        center = 0.0 + (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [1.0 if -0.5 < (x + xmin - center + 0.5) * ss <= 0.5 else 0.0 for x in range(xmax)]
        ww = 0.0
        for w in k:
            ww += w
        if ww != 0.0:
            k = [w / ww for w in k]
        for x, w in enumerate(k):
            index[xx, x] = xmin + x
            weight[xx, x] = int(-0.5 + w * (1 << _PRECISION_BITS)) if w < 0 else int(0.5 + w * (1 << _PRECISION_BITS))
        index[xx, xmax:] = min(xmin, in_size - 1)
    index.setflags(write=False)
    weight.setflags(write=False)
    return index, weight


def _resample_last(x: torch.Tensor, out_size: int) -> torch.Tensor:
    """One Pillow ``BOX`` pass along the last dimension of an int32 tensor of 0..255 values."""
    index, weight = _box_coefficients(x.shape[-1], out_size)
    acc = torch.full((*x.shape[:-1], out_size), 1 << (_PRECISION_BITS - 1), dtype=torch.int32, device=x.device)
    for t in range(index.shape[1]):
        if not weight[:, t].any():
            continue
        idx = torch.tensor(index[:, t], dtype=torch.int64, device=x.device)
        acc += x.index_select(-1, idx) * torch.tensor(weight[:, t], dtype=torch.int32, device=x.device)
    return (acc >> _PRECISION_BITS).clamp_(0, 255)


def box_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-average images to ``size`` exactly as Pillow's ``Image.resize(..., BOX)`` does.

    Parameters
    ----------
    images : torch.Tensor
        (N, 3, H, W) uint8 (any device).
    size : (int, int)
        (h, w) of the result.

    Returns
    -------
    torch.Tensor
        (N, 3, h, w) int32 values 0..255 on the images' device, equal to
        ``np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BOX))``
        for each image (the same fixed-point arithmetic and rounding).
    """
    h, w = size
    x = images.to(torch.int32)
    if x.shape[-1] != w:  # horizontal pass first, as Pillow does
        x = _resample_last(x, w)
    if x.shape[-2] != h:
        x = _resample_last(x.transpose(-1, -2), h).transpose(-1, -2)
    return x


@functools.lru_cache(maxsize=1)
def _color_lut() -> tuple[np.ndarray, str]:
    """The colour code of every sRGB colour, indexed by ``R << 16 | G << 8 | B``, and its sha256.

    Made by calling :func:`~netdissect.data.colornames.name_colors` on all
    2**24 colours in chunks of 2**14 (a chunk size that keeps the arrays in
    cache: about 1.3 s on one core, where 2**20 takes 10x longer).
    """
    step = 1 << 14
    lut = np.empty(1 << 24, dtype=np.uint8)
    low = np.arange(step, dtype=np.int64)
    for start in range(0, 1 << 24, step):
        i = low + start
        rgb = np.stack([(i >> 16) & 255, (i >> 8) & 255, i & 255], axis=-1).astype(np.uint8)
        lut[start : start + step] = name_colors(rgb)
    lut.setflags(write=False)
    return lut, hashlib.sha256(lut.tobytes()).hexdigest()


def _check_images(images: object, who: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise ConfigError(f"{who}: images must be a torch.Tensor (N, 3, H, W) uint8, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ConfigError(
            f"{who}: images must be (N, 3, H, W) uint8 RGB, got shape {tuple(images.shape)} {images.dtype}"
        )
    return images


class ColorSegmenter:
    """Names the colour of every label pixel with the 11 basic colour terms.

    Labels equal ``color_map(image, label_size) + 1`` exactly
    (:func:`netdissect.data.colornames.color_map`), the colour layer the
    project's converters write.

    Parameters
    ----------
    size : int, str or (int, int), optional
        A fixed label size (h, w) (one number: a square; ``"56x64"``).  By
        default half the image size, ``(H // 2, W // 2)``: Broden's
        convention (224 -> 112, 227 -> 113).
    lut : bool, optional
        True (default): the fast torch path on the images' device (exact
        ``BOX`` resampling, then a table of every colour's name, built once
        per process).  False: call ``color_map`` on each image on the CPU
        (the reference; same labels).

    Attributes
    ----------
    concepts : ConceptTable
        ``black-c`` ... ``yellow-c``, numbers 1..11, category ``color``.

    Raises
    ------
    ConfigError
        If ``size`` is not one or two positive integers.
    """

    def __init__(self, size: "int | str | tuple[int, int] | None" = None, *, lut: bool = True):
        self.size = None if size is None else parse_size(size, "ColorSegmenter")
        self.lut = bool(lut)
        self.concepts = color_concepts()
        self.device = torch.device("cpu")
        self._luts: dict[torch.device, torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"ColorSegmenter(size={self.size}, lut={self.lut})"

    def label_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the labels for images of ``image_size`` (H, W).

        Parameters
        ----------
        image_size : (int, int)
            (H, W).

        Returns
        -------
        (int, int)
            The fixed ``size`` if one was given, else ``(H // 2, W // 2)``
            (at least 1).
        """
        if self.size is not None:
            return self.size
        H, W = (int(v) for v in image_size)
        return max(1, H // 2), max(1, W // 2)

    def segment(self, images: torch.Tensor, indices: "torch.Tensor | None" = None) -> Segmentation:
        """Name the colours of a batch.

        Parameters
        ----------
        images : torch.Tensor
            (N, 3, H, W) uint8 RGB, on any device.
        indices : torch.Tensor, optional
            Ignored.

        Returns
        -------
        Segmentation
            ``pixel_labels`` (N, 1, h, w) int64 in 1..11 (every pixel has a
            colour), ``image_labels`` (N, 1) int64 zeros; on the images'
            device.

        Raises
        ------
        ConfigError
            If ``images`` is not an (N, 3, H, W) uint8 tensor.
        """
        images = _check_images(images, "ColorSegmenter.segment")
        n = images.shape[0]
        h, w = self.label_size(tuple(images.shape[-2:]))
        if self.lut:
            codes = self._codes(images, (h, w))
        else:
            arrays = images.permute(0, 2, 3, 1).cpu().numpy()
            codes = torch.from_numpy(
                np.stack([color_map(a, (h, w)) for a in arrays]) if n else np.zeros((0, h, w), np.uint8)
            ).to(images.device)
        pixel = codes.to(torch.int64).add_(1).unsqueeze(1)
        return Segmentation(pixel, torch.zeros((n, 1), dtype=torch.int64, device=images.device))

    def _codes(self, images: torch.Tensor, size: tuple[int, int], on_device: bool | None = None) -> torch.Tensor:
        """(N, 3, H, W) uint8 -> (N, h, w) uint8 colour codes, by area averaging and table lookup.

        On the CPU, Pillow itself resizes each image and numpy looks up the
        names (the fastest exact way there); on other devices (or with
        ``on_device=True``) :func:`box_resize` reproduces Pillow's arithmetic
        and the table lives on the device.
        """
        h, w = size
        table = _color_lut()[0]
        if on_device is None:
            on_device = images.device.type != "cpu"
        if not on_device:
            arrays = images.permute(0, 2, 3, 1).contiguous().numpy()
            if tuple(arrays.shape[1:3]) != (h, w):
                arrays = np.stack(
                    [np.asarray(Image.fromarray(a, "RGB").resize((w, h), Image.Resampling.BOX)) for a in arrays]
                ) if len(arrays) else np.zeros((0, h, w, 3), np.uint8)
            key = (arrays[..., 0].astype(np.int32) << 16) | (arrays[..., 1].astype(np.int32) << 8) | arrays[..., 2]
            return torch.from_numpy(table[key])
        device_table = self._luts.get(images.device)
        if device_table is None:
            device_table = torch.from_numpy(table.copy()).to(images.device)
            self._luts[images.device] = device_table
        rgb = box_resize(images, size)
        key = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
        return device_table[key.long()]

    def to(self, device: "torch.device | str") -> "ColorSegmenter":
        """Prefer ``device`` (labels are always made on the images' device).

        Parameters
        ----------
        device : torch.device or str

        Returns
        -------
        ColorSegmenter
            self.
        """
        self.device = torch.device(device)
        return self

    def spec(self) -> str:
        """``color``, or ``color?size=HxW`` with a fixed size.

        Returns
        -------
        str
        """
        return "color" if self.size is None else f"color?size={self.size[0]}x{self.size[1]}"

    def fingerprint(self) -> str:
        """A content key over the label rule and the name of every colour.

        Changes when the colour namer's thresholds change (it hashes the
        table of all 2**24 colour names) or the label size rule does.

        Returns
        -------
        str
            A sha256 hex digest.
        """
        key = {"segmenter": _VERSION, "size": list(self.size) if self.size else "half", "names": _color_lut()[1]}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


@register_segmenter("color")
def _color(arg: str, options: dict[str, str], *, dataset=None, weights=None, spec: str = "color") -> ColorSegmenter:
    if arg:
        raise ConfigError(
            f"segmenter spec {spec!r}: 'color' takes no argument after ':' (options go after '?', e.g. color?size=56)"
        )
    if weights is not None:
        raise ConfigError(
            f"segmenter spec {spec!r}: the colour segmenter takes no weights (got weights={str(weights)!r})"
        )
    check_options(spec, options, ["size"])
    size = parse_size(options["size"], f"segmenter spec {spec!r}") if "size" in options else None
    return ColorSegmenter(size)


__all__ = ["ColorSegmenter", "box_resize", "color_concepts"]
