"""Evaluation preprocessing of image-text models, on tensors.

Image-text models are fed the way they were evaluated: resize (the shorter
side, or the whole image to a square), centre crop, scale to [0, 1],
normalise.  Libraries do this on PIL images one at a time; here it runs on a
(N, 3, H, W) uint8 batch on any device.  Resizing uses ``torch``'s
antialiased bilinear/bicubic interpolation and rounds back to uint8 levels, as
PIL does, so results stay within about one grey level of the PIL recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError

RESIZE_MODES = ("shortest", "squash", "longest")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConfigError(f"images must be a (N, 3, H, W) uint8 tensor, got {shape}")
    if images.dtype != torch.uint8:
        raise ConfigError(f"images must be uint8 RGB (0..255), got dtype {images.dtype}")


def resize_center_crop(
    images: torch.Tensor,
    resize: int | tuple[int, int],
    crop: int | tuple[int, int] | None = None,
    *,
    interpolation: str = "bicubic",
    mode: str = "shortest",
    fill: int = 0,
) -> torch.Tensor:
    """Resize and centre crop uint8 images, as ``torchvision`` evaluation transforms do.

    Parameters
    ----------
    images : torch.Tensor
        (N, 3, H, W) uint8 RGB.
    resize : int or tuple of int
        ``shortest``: the shorter side becomes ``resize`` (an int), keeping the
        aspect ratio; ``squash``: the image becomes ``resize`` (an int for a
        square, or (H, W)); ``longest``: the longer side becomes ``resize`` and
        the image is padded with ``fill`` to a square.
    crop : int or tuple of int, optional
        Centre crop to this size (square for an int); None keeps the size.
    interpolation : str
        ``bilinear``, ``bicubic`` (both antialiased), ``nearest`` or ``area``.
    mode : str
        ``shortest``, ``squash`` or ``longest``.
    fill : int
        Pad value (0..255) for ``longest``.

    Returns
    -------
    torch.Tensor
        (N, 3, H', W') uint8.

    Raises
    ------
    ConfigError
        For a bad tensor, mode, interpolation or size.
    """
    _check_images(images)
    if mode not in RESIZE_MODES:
        raise ConfigError(f"resize mode {mode!r} is not one of {RESIZE_MODES}")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"interpolation {interpolation!r} is not one of {INTERPOLATIONS}")
    h, w = images.shape[-2:]
    if mode == "squash":
        size = (resize, resize) if isinstance(resize, int) else tuple(resize)
    else:
        if not isinstance(resize, int) or resize < 1:
            raise ConfigError(f"resize for mode {mode!r} must be a positive int, got {resize!r}")
        # the chosen side becomes ``resize``; torchvision rounds the other one down
        size = (resize, int(resize * w / h)) if (h <= w) == (mode == "shortest") else (int(resize * h / w), resize)
    x = images
    if tuple(size) != (h, w):
        kwargs = {"align_corners": False, "antialias": True} if interpolation in ("bilinear", "bicubic") else {}
        x = F.interpolate(images.float(), size=tuple(size), mode=interpolation, **kwargs)
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    if mode == "longest":
        side = max(x.shape[-2:])
        ph, pw = side - x.shape[-2], side - x.shape[-1]
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=fill)
    if crop is not None:
        ch, cw = (crop, crop) if isinstance(crop, int) else tuple(crop)
        H, W = x.shape[-2:]
        if ch > H or cw > W:  # torchvision pads a too-small image with zeros
            ph, pw = max(ch - H, 0), max(cw - W, 0)
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0)
            H, W = x.shape[-2:]
        top, left = int(round((H - ch) / 2.0)), int(round((W - cw) / 2.0))
        x = x[..., top : top + ch, left : left + cw]
    return x


@dataclass(frozen=True)
class ImageTransform:
    """Resize, centre crop, scale to [0, 1] and normalise a uint8 batch.

    Parameters
    ----------
    resize : int or tuple of int
        See :func:`resize_center_crop`.
    crop : int or tuple of int or None
        Centre crop size (None: no crop).
    mean, std : tuple of float
        Per-channel normalisation of values in [0, 1].
    interpolation : str
        ``bicubic`` (default), ``bilinear``, ``nearest`` or ``area``.
    mode : str
        ``shortest`` (default), ``squash`` or ``longest``.
    fill : int
        Pad value for ``longest``.
    """

    resize: int | tuple[int, int]
    crop: int | tuple[int, int] | None
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    mode: str = "shortest"
    fill: int = 0

    def __post_init__(self):
        if self.mode not in RESIZE_MODES:
            raise ConfigError(f"resize mode {self.mode!r} is not one of {RESIZE_MODES}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation {self.interpolation!r} is not one of {INTERPOLATIONS}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 or not math.isfinite(s) for s in self.std):
            raise ConfigError(f"mean {self.mean} and std {self.std} need three values each, std non-zero")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 RGB -> (N, 3, H', W') float32, normalised."""
        x = resize_center_crop(images, self.resize, self.crop, interpolation=self.interpolation, mode=self.mode,
                               fill=self.fill)
        x = x.float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)

    def key(self) -> str:
        """A short string naming every field (part of a model's fingerprint)."""
        return (f"resize={self.resize},crop={self.crop},mean={tuple(self.mean)},std={tuple(self.std)},"
                f"interp={self.interpolation},mode={self.mode},fill={self.fill}")
