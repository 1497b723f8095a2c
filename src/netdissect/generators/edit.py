"""Editing a real image through a generator's units (Bau et al. 2020, PNAS, "semantic editing"; METHODS B5).

1. :func:`invert`: find a latent z whose image matches the photo (Adam on
   the pixel MSE), then refine the layer's features themselves from
   ``front(z)`` (the generator rarely reproduces a real photo exactly from
   z; the layer's features have far more freedom), as GAN-paint's layer
   inversion does.
2. :func:`edit_features`: switch units off (0) or on (a high value, e.g. the
   99.5th percentile) inside a mask of the layer's grid.
3. :meth:`LayerSplit.render` regenerates the image from the edited features.

Masks come from a PNG (painted, any non-black pixel is inside) or a box
``x0,y0,x1,y1`` in image pixels (:func:`load_mask`), and are averaged down
to the layer's grid (a cell's weight is the share of it inside the mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ConfigError
from ..hooks import SetValue, Zero
from .split import LayerSplit


@dataclass
class Inversion:
    """A photo inverted into a generator at one layer.

    Attributes
    ----------
    z : torch.Tensor
        (1, *latent_shape) the latent found.
    features : torch.Tensor
        (1, C, h, w) the refined features of the layer.
    target : torch.Tensor
        (1, C_out, H, W) the photo in the generator's output range.
    z_error : float
        Mean squared error of ``G(z)`` against the photo, in [0, 1] pixel units.
    error : float
        The same for the image rendered from ``features``.
    """

    z: torch.Tensor
    features: torch.Tensor
    target: torch.Tensor
    z_error: float
    error: float


def image_to_output(split: LayerSplit, image: "np.ndarray | str | Path") -> torch.Tensor:
    """A photo as the generator would output it: (1, C_out, H, W) in its output range.

    Parameters
    ----------
    split : LayerSplit
        The generator (its image size, channels and output range).
    image : np.ndarray or path
        (H, W, 3) or (H, W) uint8, or an image file; resized to the
        generator's size (bicubic), made grey for a one-channel generator.

    Raises
    ------
    ConfigError
        For a file that cannot be read or an array of another shape.
    """
    if isinstance(image, (str, Path)):
        try:
            pil = Image.open(image)
            pil.load()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"image {str(image)!r} cannot be read as an image ({exc})") from None
    else:
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
            raise ConfigError(f"image must be an (H, W, 3) or (H, W) uint8 array, got {arr.shape} {arr.dtype}")
        pil = Image.fromarray(arr)
    channels = int(split.render(split.features(split.latents(0, [0])), split.latents(0, [0])).shape[1])
    pil = pil.convert("L" if channels == 1 else "RGB")
    h, w = split.image_size
    if pil.size != (w, h):
        pil = pil.resize((w, h), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255)
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
    lo, hi = split.generator.output_range
    return (x * (hi - lo) + lo).unsqueeze(0).to(split.device)


def invert(split: LayerSplit, image: "np.ndarray | str | Path | torch.Tensor", *, z_steps: int = 300,
           feature_steps: int = 300, z_lr: float = 0.05, feature_lr: float = 0.01, seed: int = 0,
           starts: int = 4) -> Inversion:
    """Invert a photo into the generator: optimise z, then the layer's features.

    Parameters
    ----------
    split : LayerSplit
        The generator cut at the edited layer.
    image : np.ndarray, path or torch.Tensor
        The photo (see :func:`image_to_output`), or a (1, C_out, H, W)
        tensor already in the output range.
    z_steps, feature_steps : int
        Adam steps on z and then on the features (0 skips a stage; the z
        stage is skipped too when the front passes no gradient to z).
    z_lr, feature_lr : float
        Their learning rates.
    seed : int
        Seed of the starting latents (``latent(seed, 0..starts-1)``).
    starts : int
        Starting latents tried; the best after ``z_steps // 4`` steps goes on.

    Returns
    -------
    Inversion

    Raises
    ------
    ConfigError
        For negative step counts or ``starts`` < 1.
    """
    if min(int(z_steps), int(feature_steps)) < 0 or int(starts) < 1:
        raise ConfigError(f"z_steps and feature_steps must be >= 0 and starts >= 1, got {z_steps}, "
                          f"{feature_steps}, {starts}")
    target = image.to(split.device) if isinstance(image, torch.Tensor) else image_to_output(split, image)
    scale = (split.generator.output_range[1] - split.generator.output_range[0]) ** 2

    def loss_of(out):
        return ((out - target) ** 2).flatten(1).mean(dim=1) / scale

    z = split.latents(seed, range(int(starts))).clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=z_lr)
    for step in range(int(z_steps)):
        opt.zero_grad()
        out = split.render(split.features(z, grad=True), z, grad=True)
        if not out.requires_grad:  # a front with no gradient to z (e.g. an argmax): features only
            break
        losses = loss_of(out)
        losses.sum().backward()
        opt.step()
        if step == int(z_steps) // 4 and z.shape[0] > 1:  # keep the best start
            best = int(losses.argmin())
            z = z.detach()[best:best + 1].clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=z_lr)
    with torch.no_grad():
        errs = loss_of(split.render(split.features(z), z))
        best = int(errs.argmin())
        z = z.detach()[best:best + 1]
        z_error = float(errs[best])
        feats = split.features(z).clone()
    feats.requires_grad_(True)
    opt = torch.optim.Adam([feats], lr=feature_lr)
    for _ in range(int(feature_steps)):
        opt.zero_grad()
        loss_of(split.render(feats, z, grad=True)).sum().backward()
        opt.step()
    with torch.no_grad():
        error = float(loss_of(split.render(feats, z))[0])
    return Inversion(z, feats.detach(), target, z_error, error)


def load_mask(split: LayerSplit, *, png: "str | Path | None" = None, box: "str | Sequence[float] | None" = None
              ) -> torch.Tensor:
    """A painted region as weights over the layer's grid: (h, w) float in [0, 1].

    Parameters
    ----------
    split : LayerSplit
        The generator (image size and layer grid).
    png : str or Path, optional
        A mask image: pixels brighter than 127 (any channel) are inside; it is
        resized to the generator's image size.
    box : str or sequence of 4 numbers, optional
        ``x0,y0,x1,y1`` in image pixels (x1, y1 exclusive).

    Returns
    -------
    torch.Tensor
        (h, w) the share of each cell inside the region.

    Raises
    ------
    ConfigError
        Unless exactly one of ``png`` and ``box`` is given, for an unreadable
        file, a malformed or empty box, or an empty mask.
    """
    if (png is None) == (box is None):
        raise ConfigError("give exactly one of a mask PNG (png=) and a box (box='x0,y0,x1,y1')")
    H, W = split.image_size
    if png is not None:
        try:
            pil = Image.open(png).convert("L")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"mask {str(png)!r} cannot be read as an image ({exc})") from None
        inside = np.asarray(pil.resize((W, H), Image.Resampling.NEAREST)) > 127
    else:
        try:
            parts = [float(v) for v in (box.split(",") if isinstance(box, str) else box)]
            if len(parts) != 4:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"box {box!r} must be four numbers x0,y0,x1,y1 (image pixels)") from None
        x0, y0, x1, y1 = (int(round(v)) for v in parts)
        inside = np.zeros((H, W), bool)
        inside[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
    if not inside.any():
        raise ConfigError(f"the mask ({png if png is not None else box}) selects no pixel of the "
                          f"{H}x{W} image")
    grid = split.feature_shape[1:]
    return F.adaptive_avg_pool2d(torch.from_numpy(inside).float()[None, None], grid)[0, 0]


def edit_features(features: torch.Tensor, units: Sequence[int], mask: torch.Tensor, mode: str,
                  values: "torch.Tensor | float | None" = None) -> torch.Tensor:
    """Switch ``units`` off (0) or on (``values``) inside ``mask``.

    Parameters
    ----------
    features : torch.Tensor
        (N, C, h, w).
    units : sequence of int
        0-based units.
    mask : torch.Tensor
        (h, w) weights in [0, 1] (a soft edit where fractional).
    mode : str
        ``"off"`` or ``"on"``.
    values : float or torch.Tensor, optional
        For ``"on"``: one value or (C,) per unit.

    Returns
    -------
    torch.Tensor
        The edited features (a new tensor).

    Raises
    ------
    ConfigError
        For another mode, or ``"on"`` without values.
    """
    if mode == "off":
        return Zero(list(units), mask.to(features.device))(features)
    if mode == "on":
        if values is None:
            raise ConfigError("mode 'on' needs values (e.g. each unit's 99.5th percentile)")
        return SetValue(list(units), values, mask.to(features.device))(features)
    raise ConfigError(f"mode must be 'off' or 'on', got {mode!r}")


__all__ = ["Inversion", "edit_features", "image_to_output", "invert", "load_mask"]
