"""Differentiable concept scores for optimising unit sets (ACE, Bau et al. 2020).

The segmenters name pixels with hard labels, which have no gradient.  The
ACE optimisation (:func:`~netdissect.generators.ace.optimize_units`) needs a
soft score ``s_c(x)`` in [0, 1] per pixel that follows the segmenter:

- :class:`SoftColorScore` for the colour segmenter: a kernel-smoothed
  colour namer.  The namer names a 12x12x12 grid of sRGB colours once; a
  pixel's score for name c is the softmax-weighted share of grid colours
  named c, with weights ``softmax_g(-|Lab(x) - Lab(g)|^2 / T^2)`` (T = 8
  CIELAB units).  Like the segmenter it first averages the image down to
  the label size (half the image, 2x2 areas).  Its argmax agrees with the
  hard namer on 94% of random sRGB colours (the rest lie near name
  boundaries); it is a smooth stand-in, not the namer itself;
- :class:`SoftInkScore` for the ink segmenter: ``sigmoid((grey - threshold) / width)``.

A score is a callable: images (N, C, H, W) in [0, 1] -> (N, H, W) scores,
differentiable in the images.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..data.colornames import COLOR_CONCEPTS, name_colors
from ..errors import ConfigError, close_matches

_M = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                   [0.2126729, 0.7151522, 0.0721750],
                   [0.0193339, 0.1191920, 0.9503041]])
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """Colours in sRGB [0, 1] -> CIELAB (D65), differentiable.

    Parameters
    ----------
    rgb : torch.Tensor
        Images (N, 3, H, W) (colour axis 1) or a list of colours (M, 3).

    Returns
    -------
    torch.Tensor
        The same shape, L* a* b* along the colour axis.
    """
    images = rgb.dim() == 4
    x = rgb.movedim(-3, -1) if images else rgb
    x = x.clamp(0, 1)
    lin = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055).clamp_min(1e-6) ** 2.4)
    xyz = lin @ _M.to(lin).T / _WHITE.to(lin)
    d = 6 / 29
    f = torch.where(xyz > d ** 3, xyz.clamp_min(1e-9) ** (1 / 3), xyz / (3 * d * d) + 4 / 29)
    lab = torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], dim=-1)
    return lab.movedim(-1, -3) if images else lab


@functools.lru_cache(maxsize=1)
def color_grid(steps: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A grid of sRGB colours named by the colour namer.

    Parameters
    ----------
    steps : int
        Colours per channel (cell centres of ``steps`` equal bins).

    Returns
    -------
    lab : np.ndarray
        (steps**3, 3) float32 CIELAB of the grid colours.
    names : np.ndarray
        (steps**3,) int64 colour code (index into ``COLOR_CONCEPTS``) of each.
    """
    v = ((np.arange(steps) + 0.5) * 256 / steps).astype(np.uint8)
    grid = np.stack(np.meshgrid(v, v, v, indexing="ij"), axis=-1).reshape(1, -1, 3)
    names = name_colors(grid)[0].astype(np.int64)
    lab = rgb_to_lab(torch.from_numpy(grid[0].astype(np.float32) / 255)).numpy()
    return lab, names


class SoftColorScore:
    """A differentiable score of one colour name per pixel.

    Parameters
    ----------
    concept : str
        A colour concept, ``"red-c"`` (or ``"red"``).
    temperature : float
        T in CIELAB units; smaller follows the namer's boundaries more sharply.
    size : (int, int), optional
        Average the images down to this (h, w) first; default half the
        image size, as :class:`~netdissect.segment.color.ColorSegmenter`.

    Raises
    ------
    ConfigError
        For an unknown colour or a non-positive temperature.
    """

    def __init__(self, concept: str, temperature: float = 8.0, size: "tuple[int, int] | None" = None):
        name = concept if concept.endswith("-c") else f"{concept}-c"
        if name not in COLOR_CONCEPTS:
            hint = close_matches(concept, COLOR_CONCEPTS)
            raise ConfigError(f"concept {concept!r} is not a colour ({', '.join(COLOR_CONCEPTS)})"
                              + (f"; {hint}" if hint else ""))
        if not float(temperature) > 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        self.concept = name
        self.index = COLOR_CONCEPTS.index(name)
        self.temperature = float(temperature)
        self.size = size

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] (one channel is repeated) -> (N, h, w) scores in [0, 1] at the label size."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        h, w = self.size or (max(1, images.shape[-2] // 2), max(1, images.shape[-1] // 2))
        small = torch.nn.functional.adaptive_avg_pool2d(images, (h, w))
        lab = rgb_to_lab(small).movedim(1, -1).reshape(-1, 3)  # (N*h*w, 3)
        glab, names = color_grid()
        glab = torch.from_numpy(glab).to(lab)
        share = torch.nn.functional.one_hot(torch.from_numpy(names), len(COLOR_CONCEPTS))[:, self.index].to(lab)
        d2 = (lab * lab).sum(dim=1, keepdim=True) - 2 * lab @ glab.T + (glab * glab).sum(dim=1)
        weights = torch.softmax(-d2 / self.temperature ** 2, dim=1)
        return (weights @ share).reshape(images.shape[0], h, w)


class SoftInkScore:
    """A differentiable ink score: ``sigmoid((grey - threshold) / width)`` per pixel.

    Parameters
    ----------
    threshold : float
        Grey level in [0, 1] where the score is 0.5 (the ink segmenter's threshold / 255).
    width : float
        Softness, in grey levels of [0, 1].

    Raises
    ------
    ConfigError
        For a threshold outside [0, 1] or a non-positive width.
    """

    def __init__(self, threshold: float = 0.5, width: float = 0.05):
        if not 0.0 <= float(threshold) <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
        if not float(width) > 0:
            raise ConfigError(f"width must be positive, got {width}")
        self.threshold, self.width = float(threshold), float(width)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] -> (N, H, W) ink scores."""
        return torch.sigmoid((images.mean(dim=1) - self.threshold) / self.width)


__all__ = ["SoftColorScore", "SoftInkScore", "color_grid", "rgb_to_lab"]
