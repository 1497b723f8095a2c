"""A generator cut at one layer: z -> features (the front) and features -> image (the back).

Every intervention of Bau et al. 2020 (PNAS, "Understanding the role of
individual units", section "Dissecting a GAN") edits one layer's features
and regenerates from there.  :class:`LayerSplit` runs the front once per
batch of latents, so that a sweep of many edits of the same features only
reruns the back:

- when the layer sits in a chain of ``nn.Sequential`` containers (the
  built-in DCGANs: ``main.5``, ``layer_stack.6``), the back is the modules
  after it, run directly;
- otherwise (or when a probe shows the chain is not what ``forward`` does,
  e.g. a wrapper that adds a skip connection), the whole generator runs with
  the layer's output replaced by the edited features (``replay``; correct for
  any generator, but the front runs again).

The split is checked on probe latents: ``back(front(z))`` must equal ``G(z)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..engine.sources import latent, to_uint8_images
from ..errors import ConfigError
from ..hooks import Apply, Trace, resolve_layers
from ..models import LoadedGenerator


def latents(seed: int, indices: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """The latents of samples ``indices`` (as :class:`~netdissect.engine.sources.GeneratorSource` draws them).

    Parameters
    ----------
    seed : int
        Latent seed.
    indices : sequence of int
        Sample indices.
    shape : sequence of int
        Shape of one latent.

    Returns
    -------
    torch.Tensor
        (N, *shape) float32.
    """
    return torch.stack([latent(int(seed), int(i), tuple(shape)) for i in indices]) if len(indices) else \
        torch.zeros((0, *shape))


def _sequential_back(module: nn.Module, layer: str) -> nn.Module | None:
    """The modules after ``layer`` in its chain of Sequential containers, or None when it is not in one."""
    parts = layer.split(".")
    chain: list[tuple[nn.Sequential, int]] = []
    current = module
    for depth, part in enumerate(parts):
        if isinstance(current, nn.Sequential):
            names = [n for n, _ in current.named_children()]
            chain.append((current, names.index(part)))
        elif depth > 0 or len(list(current.children())) != 1:
            return None  # a non-Sequential container below the root, or a root with several children
        current = getattr(current, part)
    if not chain:
        return None
    tail: list[nn.Module] = []
    for seq, index in reversed(chain):  # innermost first
        tail += list(seq.children())[index + 1:]
    return nn.Sequential(*tail)


class LayerSplit:
    """A generator cut after ``layer``.

    Parameters
    ----------
    generator : LoadedGenerator
        The generator (its module is used in its current mode; load it in
        eval mode).
    layer : str
        A module name of the generator whose output is the edited features.
    device : str or torch.device, optional
        Where to run (the module is moved there); default: where it is.

    Attributes
    ----------
    mode : str
        ``"sequential"`` (the back runs alone) or ``"replay"`` (the whole
        generator runs with the layer's output replaced).
    feature_shape : tuple of int
        (C, h, w) of the layer's output.
    image_size : tuple of int
        (H, W) of the generated images.

    Raises
    ------
    LayerError
        For a layer the generator does not have.
    ConfigError
        When the layer's output is not an (N, C, h, w) map.
    """

    def __init__(self, generator: LoadedGenerator, layer: str, *, device: "str | torch.device | None" = None):
        self.generator = generator
        self.module = generator.module
        if device is not None:
            self.module.to(device)
        self.device = next((p.device for p in self.module.parameters()), torch.device("cpu")) \
            if device is None else torch.device(device)
        self.layer = layer
        resolve_layers(self.module, [layer])
        probe = latents(12345, [0, 1], generator.latent_shape).to(self.device)
        with torch.no_grad():
            full = self.module(probe)
            feats = self.features(probe)
        if feats.dim() != 4:
            raise ConfigError(f"layer {layer!r} outputs shape {tuple(feats.shape)}; generator interventions need "
                              "an (N, C, h, w) feature map")
        self.feature_shape = tuple(int(s) for s in feats.shape[1:])
        self.image_size = tuple(int(s) for s in full.shape[-2:])
        self._back = _sequential_back(self.module, layer)
        self.mode = "replay"
        if self._back is not None:
            with torch.no_grad():
                again = self._back(feats)
            if again.shape == full.shape and torch.allclose(again, full, atol=1e-5, rtol=1e-4):
                self.mode = "sequential"
            else:
                self._back = None

    def latents(self, seed: int, indices: Sequence[int]) -> torch.Tensor:
        """The latents of samples ``indices`` on this split's device: (N, *latent_shape)."""
        return latents(seed, indices, self.generator.latent_shape).to(self.device)

    def features(self, z: torch.Tensor, *, grad: bool = False) -> torch.Tensor:
        """The layer's output for latents ``z``: (N, *latent_shape) -> (N, C, h, w).

        With ``grad`` the autograd graph to ``z`` is kept (inversion).
        """
        with Trace(self.module, [self.layer], clone=not grad) as trace:
            acts = trace.run(z.to(self.device), grad=grad)
        return acts[self.layer]

    def render(self, features: torch.Tensor, z: torch.Tensor | None = None, *, grad: bool = False) -> torch.Tensor:
        """The generator's output from (edited) features.

        Parameters
        ----------
        features : torch.Tensor
            (N, C, h, w) features of the layer.
        z : torch.Tensor, optional
            (N, *latent_shape) the latents they came from; needed only in
            ``replay`` mode (the front runs again and its result is replaced).
        grad : bool
            Keep the autograd graph (to ``features``).

        Returns
        -------
        torch.Tensor
            (N, C_out, H, W) in the generator's output range.

        Raises
        ------
        ConfigError
            In replay mode without ``z``.
        """
        features = features.to(self.device)
        with torch.enable_grad() if grad else torch.no_grad():
            if self.mode == "sequential":
                return self._back(features)
            if z is None:
                raise ConfigError(f"layer {self.layer!r} is not in a chain of nn.Sequential modules, so the "
                                  "generator replays from z: pass z to render()")
            with Trace(self.module, [self.layer], edit={self.layer: Apply(lambda x: features)}, clone=False) as t:
                return t.forward(z.to(self.device), grad=grad)

    def to_images(self, output: torch.Tensor) -> torch.Tensor:
        """Generator output -> (N, 3, H, W) uint8 RGB (grey repeated), as segmenters take them."""
        return to_uint8_images(output, self.generator.output_range)

    def to_unit(self, output: torch.Tensor) -> torch.Tensor:
        """Generator output -> the same shape in [0, 1] (differentiable; not clamped)."""
        lo, hi = self.generator.output_range
        return (output - lo) / (hi - lo)


def concept_masks(segmenter, images: torch.Tensor, number: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a segmenter sees concept ``number``.

    Parameters
    ----------
    segmenter : Segmenter
        Labels the images.
    images : torch.Tensor
        (N, 3, H, W) uint8.
    number : int
        The concept's label number in ``segmenter.concepts``.

    Returns
    -------
    pixels : torch.Tensor
        (N, h, w) bool: a pixel holds the concept in any label layer.
    image : torch.Tensor
        (N,) bool: the concept is an image-level label of the image.
    """
    seg = segmenter.segment(images)
    pixels = (seg.pixel_labels == number).any(dim=1)
    image = (seg.image_labels == number).any(dim=1)
    return pixels, image


def concept_fraction(segmenter, images: torch.Tensor, number: int) -> torch.Tensor:
    """The fraction of each image that holds concept ``number``: (N,) float64.

    The pixel fraction for a pixel concept; 1.0 or 0.0 for an image-level
    concept (a class a classifier gives the whole image).
    """
    pixels, image = concept_masks(segmenter, images, number)
    frac = pixels.double().mean(dim=(1, 2))
    return torch.where(image, torch.ones_like(frac), frac)


def concept_number(segmenter, concept: "str | int") -> int:
    """A concept's label number in the segmenter's table, by name or number.

    Raises
    ------
    ConfigError
        For a concept the segmenter does not label (the message lists close names).
    """
    table = segmenter.concepts
    if isinstance(concept, (int, np.integer)) or (isinstance(concept, str) and concept.isdigit()):
        n = int(concept)
        if n in table.numbers():
            return n
        raise ConfigError(f"concept number {n} is not labelled by segmenter {segmenter.spec()!r}")
    names = {table[n].name: n for n in table.numbers()}
    if concept in names:
        return names[concept]
    from ..errors import close_matches

    hint = close_matches(str(concept), list(names))
    raise ConfigError(f"concept {concept!r} is not labelled by segmenter {segmenter.spec()!r} "
                      f"(it labels {', '.join(sorted(names)[:20])}{'...' if len(names) > 20 else ''})"
                      + (f"; {hint}" if hint else ""))


__all__ = ["LayerSplit", "concept_fraction", "concept_masks", "concept_number", "latents"]
