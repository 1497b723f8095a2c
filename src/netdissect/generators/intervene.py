"""Ablation and insertion sweeps on a generator's units (Bau et al. 2020, PNAS, "Dissecting a GAN").

- :func:`ablation_sweep`: zero a concept's top-k units (ranked by IoU in a
  dissection of the generator) at every position, for k = 0..30, and measure
  the concept's pixel fraction over N samples; the mean with a 99% interval
  (+-2.576 standard errors) and the drop relative to the unedited images.
- :func:`insertion_sweep`: set the top-k units to a high value (each unit's
  99.5th percentile, :func:`unit_quantiles`) inside one cell of the layer's
  grid, for every cell and sample; tally the concept pixels added, per cell
  and conditioned on what the segmenter saw at the cell's centre before
  (does the concept appear on some contexts and not on others?).

Both run the generator's front once per batch of latents (the layer's
features are kept) and rerun only the back for each edit
(:class:`~netdissect.generators.split.LayerSplit`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import ConfigError, close_matches
from ..hooks import SetValue, Zero
from .split import LayerSplit, concept_masks, concept_number

#: two-sided 99% normal quantile
Z99 = 2.5758293035489004


def rank_units(run: "str | Path | object", layer: str, concept: str) -> tuple[np.ndarray, np.ndarray]:
    """A concept's units ranked by IoU in a dissection run of the generator.

    Parameters
    ----------
    run : str, Path or Dissection
        The run directory of ``netdissect dissect --generator ...`` (or the loaded result).
    layer : str
        A dissected layer.
    concept : str
        A concept name of the run (e.g. ``"red-c"``).

    Returns
    -------
    units : np.ndarray
        (U,) int64 0-based unit indices, highest IoU first.
    iou : np.ndarray
        (U,) float64 their IoU with ``concept``.

    Raises
    ------
    ConfigError
        For a layer or concept the run does not have.
    DatasetError
        When ``run`` is not a complete run directory.
    """
    from ..results import DissectionData

    result = run if hasattr(run, "iou") else DissectionData(run)
    table = result.iou(layer)
    if concept not in table.columns:
        hint = close_matches(concept, list(table.columns))
        raise ConfigError(f"concept {concept!r} is not in the dissection run {str(result.run_dir)!r}"
                          + (f"; {hint}" if hint else ""))
    iou = table[concept].to_numpy(dtype=np.float64)
    order = np.argsort(-iou, kind="stable")
    return order.astype(np.int64), iou[order]


def unit_quantiles(split: LayerSplit, *, q: float = 0.995, samples: int = 200, seed: int = 0,
                   batch_size: int = 32) -> torch.Tensor:
    """Each unit's ``q`` quantile over samples and positions of the layer (the insertion value).

    Parameters
    ----------
    split : LayerSplit
        The generator cut at the layer.
    q : float
        The quantile, in (0, 1); 0.995 in the paper.
    samples : int
        Latents ``(seed, 0..samples-1)``.
    seed : int
        Latent seed.
    batch_size : int
        Latents per forward.

    Returns
    -------
    torch.Tensor
        (C,) float32 on the CPU.

    Raises
    ------
    ConfigError
        For ``q`` outside (0, 1) or ``samples`` < 1.
    """
    if not 0.0 < float(q) < 1.0:
        raise ConfigError(f"q must be in (0, 1), got {q}")
    if int(samples) < 1:
        raise ConfigError(f"samples must be a positive integer, got {samples}")
    parts = []
    for start in range(0, int(samples), batch_size):
        z = split.latents(seed, range(start, min(int(samples), start + batch_size)))
        f = split.features(z)
        parts.append(f.transpose(0, 1).reshape(f.shape[1], -1).float().cpu())
    values = torch.cat(parts, dim=1)
    return torch.quantile(values, float(q), dim=1) if values.shape[1] <= 16_000_000 else \
        torch.from_numpy(np.quantile(values.numpy(), float(q), axis=1)).float()


def _check(split: LayerSplit, units: Sequence[int], samples: int, batch_size: int) -> list[int]:
    c = split.feature_shape[0]
    units = [int(u) for u in units]
    bad = [u for u in units if not 0 <= u < c]
    if bad:
        raise ConfigError(f"units {bad} out of range for layer {split.layer!r} with {c} units (0-based)")
    if int(samples) < 1:
        raise ConfigError(f"samples must be a positive integer, got {samples}")
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")
    return units


# -- ablation --------------------------------------------------------------------


@dataclass
class AblationResult:
    """The concept's fraction with the top-k units zeroed, per k and sample.

    Attributes
    ----------
    layer, concept : str
        What was ablated, and the concept measured.
    units : list of int
        The ranked units (0-based); ``units[:k]`` are zeroed at step k.
    ks : list of int
        The k values.
    fractions : np.ndarray
        (K, N) the concept's pixel fraction of each sample at each k.
    strip : np.ndarray or None
        (S, K_strip, H, W, 3) uint8 images of the first samples at ``strip_ks``.
    strip_ks : list of int
        The k of each strip column.
    """

    layer: str
    concept: str
    units: list[int]
    ks: list[int]
    fractions: np.ndarray
    strip: np.ndarray | None = None
    strip_ks: list[int] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        """One row per k: k, mean, se, low99, high99, drop (= -delta/baseline), drop_low99, drop_high99.

        The drop's interval comes from the paired differences f(0) - f(k)
        over samples, divided by the baseline mean (its own error ignored).
        """
        f = self.fractions
        n = f.shape[1]
        mean = f.mean(axis=1)
        se = f.std(axis=1, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(len(mean))
        base = f[0].mean() if 0 in self.ks else np.nan
        d = f[self.ks.index(0)][None, :] - f if 0 in self.ks else np.full_like(f, np.nan)
        d_se = d.std(axis=1, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(len(mean))
        with np.errstate(invalid="ignore", divide="ignore"):
            drop = d.mean(axis=1) / base
            band = Z99 * d_se / base
        return pd.DataFrame({"k": self.ks, "mean": mean, "se": se, "low99": mean - Z99 * se,
                             "high99": mean + Z99 * se, "drop": drop, "drop_low99": drop - band,
                             "drop_high99": drop + band})


def ablation_sweep(split: LayerSplit, segmenter, concept: "str | int", units: Sequence[int], *,
                   ks: Sequence[int] = tuple(range(31)), samples: int = 200, seed: int = 0, batch_size: int = 32,
                   strip_samples: int = 4, strip_ks: Sequence[int] = (0, 2, 4, 8, 20, 30),
                   progress: bool = False) -> AblationResult:
    """Zero the first k of ``units`` everywhere, for each k, and measure the concept's fraction.

    Bau et al. 2020 (PNAS), "Dissecting a GAN", Fig. 3: tree units of a
    church generator, k = 0..30, 10,000 samples.

    Parameters
    ----------
    split : LayerSplit
        The generator cut at the edited layer.
    segmenter : Segmenter
        Labels the generated images (on the split's device or the CPU).
    concept : str or int
        The measured concept (a name or number of the segmenter's table).
    units : sequence of int
        Ranked 0-based units (:func:`rank_units`).
    ks : sequence of int
        How many of them to zero at each step (each <= len(units)).
    samples : int
        Latents ``(seed, 0..samples-1)``.
    seed : int
        Latent seed.
    batch_size : int
        Latents per batch (the front runs once per batch; every k reuses its features).
    strip_samples : int
        How many of the first samples to keep images of (at most one batch).
    strip_ks : sequence of int
        Which k to keep images at (those in ``ks``).
    progress : bool
        Show a progress bar.

    Returns
    -------
    AblationResult

    Raises
    ------
    ConfigError
        For units out of range, a k larger than ``len(units)`` or negative,
        or a concept the segmenter does not label.
    """
    units = _check(split, units, samples, batch_size)
    number = concept_number(segmenter, concept)
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 0 or max(ks) > len(units):
        raise ConfigError(f"ks must be between 0 and the number of ranked units ({len(units)}), got {ks}")
    keep_ks = [k for k in strip_ks if k in ks]
    fractions = np.zeros((len(ks), int(samples)))
    strip = []
    batches = range(0, int(samples), int(batch_size))
    for start in _bar(batches, progress, "ablation"):
        idx = list(range(start, min(int(samples), start + int(batch_size))))
        z = split.latents(seed, idx)
        feats = split.features(z)
        cols = {}
        for j, k in enumerate(ks):
            edited = Zero(units[:k])(feats) if k else feats
            images = split.to_images(split.render(edited, z))
            pixels, image = concept_masks(segmenter, images.to(_seg_device(segmenter, images)), number)
            frac = pixels.double().mean(dim=(1, 2))
            fractions[j, idx] = torch.where(image, torch.ones_like(frac), frac).cpu().numpy()
            if start == 0 and k in keep_ks:
                cols[k] = images[:strip_samples].permute(0, 2, 3, 1).cpu().numpy()
        if cols:
            strip = np.stack([cols[k] for k in keep_ks], axis=1)
    name = segmenter.concepts[number].name
    return AblationResult(split.layer, name, units, ks, fractions, strip if len(strip) else None, keep_ks)


# -- insertion -------------------------------------------------------------------


@dataclass
class InsertionResult:
    """Concept pixels added by inserting units at each cell, per cell and per context.

    Attributes
    ----------
    layer, concept : str
        The edited layer and the concept counted.
    units : list of int
        The inserted units (0-based).
    values : np.ndarray
        (len(units),) the values they were set to.
    added : np.ndarray
        (N, gh, gw) concept label pixels added (after minus before; negative
        when the edit removed some) for each sample and cell.
    context : np.ndarray
        (N, gh, gw) int64: the label number the segmenter saw at the cell's
        centre before the edit (first label layer; 0 = none).
    cell_pixels : float
        Label pixels per cell (the area a cell covers in the label map).
    concept_names : dict
        Label number -> name for the contexts.
    strip : np.ndarray or None
        (S, 1 + len(strip_cells), H, W, 3) uint8: each of the first samples
        before, then with the insertion at each of ``strip_cells``.
    strip_cells : list of (int, int)
        The cells of the strip.
    """

    layer: str
    concept: str
    units: list[int]
    values: np.ndarray
    added: np.ndarray
    context: np.ndarray
    cell_pixels: float
    concept_names: dict
    strip: np.ndarray | None = None
    strip_cells: list = field(default_factory=list)

    def cell_map(self) -> np.ndarray:
        """(gh, gw) mean concept pixels added per insertion at each cell."""
        return self.added.mean(axis=0)

    def by_context(self) -> pd.DataFrame:
        """One row per context label: context, insertions, mean_added, se, low99, high99, appeared.

        ``appeared`` is the fraction of insertions that added at least a
        quarter of a cell's area of the concept.  Sorted by ``mean_added``.
        """
        rows = []
        for number in np.unique(self.context):
            a = self.added[self.context == number].astype(np.float64)
            n = a.size
            se = a.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0
            rows.append({"context": self.concept_names.get(int(number), "-" if number == 0 else str(number)),
                         "insertions": n, "mean_added": a.mean(), "se": se, "low99": a.mean() - Z99 * se,
                         "high99": a.mean() + Z99 * se, "appeared": float((a >= 0.25 * self.cell_pixels).mean())})
        return pd.DataFrame(rows).sort_values("mean_added", ascending=False, ignore_index=True)


def _seg_device(segmenter, images: torch.Tensor) -> torch.device:
    """Where the segmenter wants its images (its ``device`` attribute, else where they are)."""
    dev = getattr(segmenter, "device", None)
    return images.device if dev is None else torch.device(dev)


def _bar(it, progress: bool, what: str):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=what)


def insertion_sweep(split: LayerSplit, segmenter, concept: "str | int", units: Sequence[int],
                    values: "torch.Tensor | float", *, samples: int = 100, seed: int = 0, batch_size: int = 32,
                    strip_samples: int = 4, strip_cells: Sequence[tuple[int, int]] | None = None,
                    progress: bool = False) -> InsertionResult:
    """Set ``units`` to ``values`` inside one cell of the layer's grid, for every cell and sample.

    Bau et al. 2020 (PNAS), "Dissecting a GAN", Fig. 4: the top 20 door units
    set to their 99.5th percentile in one 8x8-grid cell; doors appear on
    buildings, not in the sky or on trees.

    Parameters
    ----------
    split : LayerSplit
        The generator cut at the edited layer.
    segmenter : Segmenter
        Labels the images before and after.
    concept : str or int
        The concept whose added pixels are counted.
    units : sequence of int
        0-based units to insert.
    values : float or torch.Tensor
        One value, or (C,) per-unit values over all units of the layer
        (:func:`unit_quantiles`).
    samples, seed, batch_size
        As :func:`ablation_sweep`.
    strip_samples : int
        How many of the first samples to keep images of (at most one batch).
    strip_cells : sequence of (int, int), optional
        Cells (row, column) shown in the strip; default: up to four cells on
        the diagonal.
    progress : bool
        Show a progress bar.

    Returns
    -------
    InsertionResult

    Raises
    ------
    ConfigError
        For units out of range, values of the wrong length, a cell outside
        the grid or a concept the segmenter does not label.
    """
    units = _check(split, units, samples, batch_size)
    number = concept_number(segmenter, concept)
    c, gh, gw = split.feature_shape
    values = torch.as_tensor(values, dtype=torch.float32)
    if values.dim() == 1 and values.numel() != c:
        raise ConfigError(f"values must be one number or one per unit of layer {split.layer!r} ({c}), "
                          f"got {values.numel()}")
    if strip_cells is None:
        steps = min(4, gh, gw)
        strip_cells = [(int(round(i * (gh - 1) / max(1, steps - 1))), int(round(i * (gw - 1) / max(1, steps - 1))))
                       for i in range(steps)]
    strip_cells = [(int(r), int(q)) for r, q in strip_cells]
    for r, q in strip_cells:
        if not (0 <= r < gh and 0 <= q < gw):
            raise ConfigError(f"strip cell {(r, q)} is outside the layer's {gh}x{gw} grid")
    added = np.zeros((int(samples), gh, gw), dtype=np.float64)
    context = np.zeros((int(samples), gh, gw), dtype=np.int64)
    strip = None
    cell_pixels = 0.0
    for start in _bar(range(0, int(samples), int(batch_size)), progress, "insertion"):
        idx = list(range(start, min(int(samples), start + int(batch_size))))
        z = split.latents(seed, idx)
        feats = split.features(z)
        before = split.to_images(split.render(feats, z))
        seg = segmenter.segment(before.to(_seg_device(segmenter, before)))
        lh, lw = seg.pixel_labels.shape[-2:]
        cell_pixels = lh * lw / (gh * gw)
        ys = ((torch.arange(gh) + 0.5) * lh / gh).long().clamp(max=lh - 1)
        xs = ((torch.arange(gw) + 0.5) * lw / gw).long().clamp(max=lw - 1)
        context[idx] = seg.pixel_labels[:, 0][:, ys][:, :, xs].cpu().numpy()
        had = (seg.pixel_labels == number).any(dim=1).sum(dim=(1, 2))
        shots = {}
        for r in range(gh):
            for q in range(gw):
                mask = torch.zeros(gh, gw, dtype=torch.bool)
                mask[r, q] = True
                edited = SetValue(units, values, mask)(feats)
                after = split.to_images(split.render(edited, z))
                pixels, _ = concept_masks(segmenter, after.to(_seg_device(segmenter, after)), number)
                added[idx, r, q] = (pixels.sum(dim=(1, 2)) - had).cpu().numpy()
                if start == 0 and (r, q) in strip_cells:
                    shots[(r, q)] = after[:strip_samples].permute(0, 2, 3, 1).cpu().numpy()
        if start == 0:
            first = before[:strip_samples].permute(0, 2, 3, 1).cpu().numpy()
            strip = np.stack([first] + [shots[cell] for cell in strip_cells], axis=1)
    names = {n: segmenter.concepts[n].name for n in segmenter.concepts.numbers()}
    vals = values.numpy()[units] if values.dim() == 1 else np.full(len(units), float(values))
    return InsertionResult(split.layer, names[number], units, vals, added, context, cell_pixels, names, strip,
                           strip_cells)


__all__ = ["AblationResult", "InsertionResult", "Z99", "ablation_sweep", "insertion_sweep", "rank_units",
           "unit_quantiles"]
