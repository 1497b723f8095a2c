"""Average causal effect of a unit set on a concept, and its optimisation (Bau et al. 2020, PNAS; gandissect).

The ACE of units U on concept c (METHODS B3) is

    delta_{U->c} = E_z[ s_c(G(z; U <- k)) ] - E_z[ s_c(G(z; U <- 0)) ],

the concept's share of the image with the units forced to a high value k,
minus its share with them zeroed, over the same latents.  Here ``s_c`` is
the segmenter's hard pixel fraction (:func:`average_causal_effect`); the
edit covers every position, or a region.

:func:`optimize_units` finds a soft unit set alpha in [0, 1]^d, as
gandissect's ``aceoptimize``: the edited features are
``h' = (1 - alpha * m) * h + alpha * m * k`` with ``m`` a region of the
layer's grid; the loss is the concept score left after ablating (k = 0) at
the cells where the concept is present, minus the score after inserting at
one random cell where it is absent, plus ``lam * |alpha|^2``.  The score is
a differentiable stand-in for the segmenter
(:mod:`netdissect.generators.soft`).  Defaults are the paper's: lam 0.005,
Adam lr 0.01, 10 epochs, batches of 2 with an update every 10 batches,
1000 training samples found among 10,000 latents of seed 10, alpha
initialised from the IoU ranking (max-normalised) and clamped to [0, 1],
k = the layer's features averaged with weights = the concept's presence in
each cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..hooks import SetValue, Zero
from .intervene import Z99, _bar, _seg_device
from .split import LayerSplit, concept_masks, concept_number


@dataclass
class ACEResult:
    """The ACE of one unit set on one concept.

    Attributes
    ----------
    units : list of int
        The 0-based units.
    inserted, ablated : np.ndarray
        (N,) the concept fraction of each sample with the units set to k / to 0.
    """

    units: list[int]
    inserted: np.ndarray
    ablated: np.ndarray

    @property
    def ace(self) -> float:
        """The average causal effect: mean(inserted - ablated)."""
        return float((self.inserted - self.ablated).mean())

    @property
    def interval(self) -> tuple[float, float]:
        """The 99% interval of the ACE (paired over samples)."""
        d = self.inserted - self.ablated
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
        return self.ace - Z99 * se, self.ace + Z99 * se


def average_causal_effect(split: LayerSplit, segmenter, concept: "str | int", units: Sequence[int],
                          values: "torch.Tensor | float", *, samples: int = 200, seed: int = 0,
                          mask: torch.Tensor | None = None, batch_size: int = 32,
                          indices: Sequence[int] | None = None) -> ACEResult:
    """The ACE of ``units`` on ``concept``: fraction with the units at ``values`` minus with them at 0.

    Parameters
    ----------
    split : LayerSplit
        The generator cut at the layer.
    segmenter : Segmenter
        Measures the concept's fraction of each image.
    concept : str or int
        The concept.
    units : sequence of int
        0-based units.
    values : float or torch.Tensor
        The inserted value k: one number or (C,) per unit.
    samples : int
        Latents ``(seed, 0..samples-1)`` (ignored when ``indices`` is given).
    seed : int
        Latent seed.
    mask : torch.Tensor, optional
        (h, w) region of the layer's grid to edit (bool or float); default everywhere.
    batch_size : int
        Latents per batch.
    indices : sequence of int, optional
        Sample indices to use instead of ``range(samples)``.

    Returns
    -------
    ACEResult

    Raises
    ------
    ConfigError
        For units out of range or an unknown concept.
    """
    number = concept_number(segmenter, concept)
    c = split.feature_shape[0]
    units = [int(u) for u in units]
    if any(not 0 <= u < c for u in units):
        raise ConfigError(f"units {units} out of range for layer {split.layer!r} with {c} units (0-based)")
    idx_all = list(range(int(samples))) if indices is None else [int(i) for i in indices]
    ins, abl = [], []
    for start in range(0, len(idx_all), int(batch_size)):
        idx = idx_all[start:start + int(batch_size)]
        z = split.latents(seed, idx)
        feats = split.features(z)
        for edit, out in ((SetValue(units, values, mask), ins), (Zero(units, mask), abl)):
            images = split.to_images(split.render(edit(feats), z))
            pixels, image = concept_masks(segmenter, images.to(_seg_device(segmenter, images)), number)
            frac = pixels.double().mean(dim=(1, 2))
            out.append(torch.where(image, torch.ones_like(frac), frac).cpu().numpy())
    return ACEResult(units, np.concatenate(ins), np.concatenate(abl))


@dataclass
class ACEOptimization:
    """A soft unit set optimised for its causal effect on a concept.

    Attributes
    ----------
    alpha : np.ndarray
        (C,) the optimised weights in [0, 1].
    init : np.ndarray
        (C,) the starting weights.
    values : np.ndarray
        (C,) the insertion value k of each unit.
    losses : list of float
        The mean loss of each epoch.
    train_indices : list of int
        The training samples (latent seed ``train_seed``).
    """

    alpha: np.ndarray
    init: np.ndarray
    values: np.ndarray
    losses: list = field(default_factory=list)
    train_indices: list = field(default_factory=list)

    def top(self, n: int) -> list[int]:
        """The ``n`` units of highest alpha (0-based), highest first."""
        return [int(u) for u in np.argsort(-self.alpha, kind="stable")[:n]]


def _cell_presence(pixels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) bool concept pixels -> (N, gh, gw) share of each layer cell holding the concept."""
    return F.adaptive_avg_pool2d(pixels.float().unsqueeze(1), grid).squeeze(1)


def find_samples(split: LayerSplit, segmenter, number: int, *, count: int, search: int, seed: int,
                 batch_size: int = 32) -> list[int]:
    """The first ``count`` sample indices (of ``search``) whose image holds the concept.

    Raises
    ------
    ConfigError
        When none of the ``search`` samples holds it.
    """
    found: list[int] = []
    for start in range(0, int(search), int(batch_size)):
        idx = list(range(start, min(int(search), start + int(batch_size))))
        z = split.latents(seed, idx)
        images = split.to_images(split.render(split.features(z), z))
        pixels, image = concept_masks(segmenter, images.to(_seg_device(segmenter, images)), number)
        present = (pixels.flatten(1).any(dim=1) | image).cpu().tolist()
        found += [i for i, p in zip(idx, present) if p]
        if len(found) >= count:
            break
    if not found:
        raise ConfigError(f"none of {search} samples (seed {seed}) holds concept {number}; "
                          "nothing to optimise on")
    return found[:count]


def insertion_values(split: LayerSplit, segmenter, number: int, indices: Sequence[int], *, seed: int,
                     batch_size: int = 32) -> tuple[dict, torch.Tensor]:
    """Per unit, the layer's features averaged with weights = the concept's presence in each cell.

    Parameters
    ----------
    split : LayerSplit
        The generator cut at the layer.
    segmenter : Segmenter
        Finds the concept.
    number : int
        The concept's label number.
    indices : sequence of int
        Sample indices (latent ``seed``).
    seed : int
        Latent seed.
    batch_size : int
        Latents per batch.

    Returns
    -------
    presence : dict
        Sample index -> (gh, gw) share of each cell holding the concept.
    values : torch.Tensor
        (C,) float32 the insertion value k of each unit.
    """
    c, gh, gw = split.feature_shape
    presence, k_num, k_den = {}, torch.zeros(c, dtype=torch.float64), 0.0
    for start in range(0, len(indices), int(batch_size)):
        idx = list(indices[start:start + int(batch_size)])
        z = split.latents(seed, idx)
        feats = split.features(z)
        images = split.to_images(split.render(feats, z))
        pixels, _ = concept_masks(segmenter, images.to(_seg_device(segmenter, images)), number)
        p = _cell_presence(pixels.to(feats.device), (gh, gw))
        for i, row in zip(idx, p.cpu()):
            presence[i] = row
        k_num += (feats * p.unsqueeze(1)).sum(dim=(0, 2, 3)).double().cpu()
        k_den += float(p.sum())
    return presence, (k_num / max(k_den, 1e-12)).float()


def optimize_units(split: LayerSplit, segmenter, concept: "str | int", score: Callable[[torch.Tensor], torch.Tensor],
                   *, init: "np.ndarray | Sequence[float] | None" = None, lam: float = 0.005, lr: float = 0.01,
                   epochs: int = 10, batch_size: int = 2, accumulate: int = 10, train: int = 1000,
                   search: int = 10000, train_seed: int = 10, rng_seed: int = 0,
                   progress: bool = False) -> ACEOptimization:
    """Optimise a soft unit set alpha in [0, 1]^C for its causal effect on ``concept``.

    Parameters
    ----------
    split : LayerSplit
        The generator cut at the layer.
    segmenter : Segmenter
        Finds the samples and cells that hold the concept (hard labels).
    concept : str or int
        The concept.
    score : callable
        Differentiable concept score: generator output mapped to [0, 1]
        (N, C, H, W) -> (N, h, w) in [0, 1] (:class:`~netdissect.generators.soft.SoftColorScore`).
    init : array of float, optional
        (C,) starting alpha (e.g. the IoU ranking, max-normalised); default all 0.5.
    lam : float
        L2 penalty on alpha.
    lr : float
        Adam learning rate.
    epochs : int
        Passes over the training samples.
    batch_size : int
        Samples per batch.
    accumulate : int
        Batches per Adam update (gradients summed).
    train : int
        Training samples (holding the concept).
    search : int
        Latents searched for them.
    train_seed : int
        Their latent seed.
    rng_seed : int
        Seed of the batch order and the insertion cells.
    progress : bool
        Show a progress bar.

    Returns
    -------
    ACEOptimization

    Raises
    ------
    ConfigError
        For a bad option, an ``init`` of the wrong length or a concept no
        searched sample holds.
    """
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("accumulate", accumulate), ("train", train),
                    ("search", search)):
        if int(v) < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v}")
    if lam < 0 or lr <= 0:
        raise ConfigError(f"lam must be >= 0 and lr > 0, got lam={lam}, lr={lr}")
    number = concept_number(segmenter, concept)
    c, gh, gw = split.feature_shape
    init = np.full(c, 0.5, np.float32) if init is None else np.asarray(init, np.float32)
    if init.shape != (c,):
        raise ConfigError(f"init must hold one weight per unit of layer {split.layer!r} ({c}), got {init.shape}")
    indices = find_samples(split, segmenter, number, count=train, search=search, seed=train_seed)
    presence, values = insertion_values(split, segmenter, number, indices, seed=train_seed)
    alpha = torch.tensor(np.clip(init, 0, 1), device=split.device, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=lr)
    gen = torch.Generator().manual_seed(int(rng_seed))
    kv = values.to(split.device).view(1, c, 1, 1)
    losses = []
    for _ in _bar(range(int(epochs)), progress, "ace"):
        order = [indices[i] for i in torch.randperm(len(indices), generator=gen).tolist()]
        total, count = 0.0, 0
        opt.zero_grad()
        for b, start in enumerate(range(0, len(order), int(batch_size))):
            idx = order[start:start + int(batch_size)]
            z = split.latents(train_seed, idx)
            feats = split.features(z)
            p = torch.stack([presence[i] for i in idx]).to(split.device)
            m_abl = (p > 0).float().unsqueeze(1)
            m_ins = torch.zeros_like(m_abl)
            for j in range(len(idx)):
                free = (p[j] == 0).flatten().nonzero().flatten()
                if len(free):
                    cell = int(free[torch.randint(len(free), (1,), generator=gen)])
                    m_ins[j, 0].view(-1)[cell] = 1.0
            a = alpha.view(1, c, 1, 1)
            h_abl = feats * (1 - a * m_abl)
            h_ins = feats + a * m_ins * (kv - feats)
            out = split.render(torch.cat([h_abl, h_ins]), torch.cat([z, z]), grad=True)
            s = score(split.to_unit(out)).flatten(1).mean(dim=1)
            n = len(idx)
            loss = s[:n].mean() - s[n:].mean() + lam * (alpha ** 2).sum()
            (loss / int(accumulate)).backward()
            total, count = total + float(loss.detach()), count + 1
            if (b + 1) % int(accumulate) == 0:
                opt.step()
                opt.zero_grad()
                with torch.no_grad():
                    alpha.clamp_(0, 1)
        if count % int(accumulate):
            opt.step()
            with torch.no_grad():
                alpha.clamp_(0, 1)
        losses.append(total / max(count, 1))
    return ACEOptimization(alpha.detach().cpu().numpy(), init, values.numpy(), losses, indices)


__all__ = ["ACEOptimization", "ACEResult", "average_causal_effect", "find_samples", "insertion_values",
           "optimize_units"]
