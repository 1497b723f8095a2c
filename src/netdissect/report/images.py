"""Image strips for the unit gallery: each unit's top images with its region drawn on them.

For every unit one JPEG mosaic is written (``columns`` thumbnails per row),
with the overlays baked in:

- the unit's region, exactly as the IoU saw it: the raw activation map
  upsampled bilinearly (``align_corners=False``) to the label size and
  compared with the unit's threshold (``>``); inside the region the image is
  shown as is, outside it is dimmed, and the region's edge is outlined
  (:data:`REGION_RGB`);
- where the data set labels pixels, the outline of the pixels labelled with
  the unit's own concept (:data:`LABEL_RGB`); for an image-level concept
  (a scene) that the image carries, a frame around the whole thumbnail.

One pre-rendered file per unit keeps the page light: one request and one
JPEG header per unit instead of ten, no canvas work in the browser, and
``loading="lazy"`` defers what is off screen (see ``benchmarks/bench_report.py``).

Images come from the data set the run names in ``config.json`` (or one passed
in); each top image is matched by its image id (``images.csv``), so a data set
that was re-indexed (e.g. a Broden split) still finds its images.  When the
data set cannot be opened, :class:`ImageSource` says why (``reason``, also
logged as a warning, which the command line prints on stderr) and the report
is built without images; ``netdissect report RUN --data DIR`` takes the
images from a data set that has moved.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data import open_dataset
from ..data.protocol import ConceptDataset
from ..stats import float32_below, upsample

log = logging.getLogger(__name__)

#: outline of the unit's thresholded activation region (warm yellow)
REGION_RGB = (255, 208, 0)
#: outline of the pixels labelled with the unit's concept (cyan)
LABEL_RGB = (0, 214, 255)
#: brightness kept outside the unit's region
DIM = 0.28
#: background of the gaps between thumbnails and of empty slots
GAP_RGB = (255, 255, 255)
EMPTY_RGB = (226, 228, 233)
GAP = 2


@dataclass
class StripSpec:
    """How unit strips are drawn: thumbnail height in pixels, thumbnails per row, JPEG quality."""

    thumb: int = 96
    columns: int = 5
    quality: int = 75

    def thumb_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(th, tw) for an image of ``image_size`` (H, W): height ``thumb``, aspect kept."""
        h, w = image_size
        return self.thumb, max(1, round(self.thumb * w / h))

    def mosaic_size(self, n: int, image_size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) in pixels of the mosaic of ``n`` thumbnails."""
        th, tw = self.thumb_size(image_size)
        cols = max(1, min(self.columns, n))
        rows = -(-n // cols)
        return cols * tw + (cols - 1) * GAP, rows * th + (rows - 1) * GAP


@dataclass
class _Cached:
    thumb: np.ndarray  # (th, tw, 3) uint8
    image_labels: frozenset[int]
    outlines: dict[int, np.ndarray] = field(default_factory=dict)  # concept -> (th, tw) bool
    has_pixel_labels: bool = False


class ImageSource:
    """The run's images, reopened from its data set; ``available`` says whether they could be.

    ``reason`` explains what went wrong when they could not.  ``index_of``
    maps a run index (as in ``top_images.npz``) to the data set index that
    holds the same image id.
    """

    def __init__(self, spec: str | None, image_ids: dict[int, str], dataset: ConceptDataset | None = None,
                 source_info: dict | None = None):
        self.dataset: ConceptDataset | None = None
        self.reason = ""
        self.index_of: dict[int, int] = {}
        where = "the data set given" if dataset is not None else f"the data set {spec!r}"
        try:
            if dataset is None and source_info and source_info.get("kind", "concepts") != "concepts":
                from ..engine.sources import open_source

                dataset = open_source(source_info)
            ds = dataset if dataset is not None else open_dataset(spec) if spec else None
            if ds is None:
                raise ValueError("the run names no data set")
        except Exception as exc:  # any failure means: no images, and say why
            self.reason = (f"the data set {spec!r} could not be opened ({exc}); take the images from where the "
                           "data is now with `netdissect report RUN --data DIR`, or from Python "
                           "write_report(run_dir, dataset=...), which takes the data set object itself")
            log.warning("report without images: %s", self.reason)
            return
        n = len(ds)
        lookup: dict[str, int] | None = None
        missing = 0
        for i, image_id in image_ids.items():
            j = None
            try:
                if 0 <= i < n and ds.image_id(i) == image_id:
                    j = i
            except Exception:
                j = None
            if j is None:
                if lookup is None:
                    lookup = {}
                    for k in range(n):
                        try:
                            lookup.setdefault(ds.image_id(k), k)
                        except Exception:
                            continue
                j = lookup.get(image_id)
            if j is None:
                missing += 1
            else:
                self.index_of[i] = j
        if image_ids and not self.index_of:
            self.reason = (f"none of the run's {len(image_ids)} top images is in {where} "
                           "(its image ids do not match images.csv)")
            log.warning("report without images: %s", self.reason)
            return
        if missing:
            self.reason = f"{missing} of the run's {len(image_ids)} top images are not in {where}"
            log.warning("report: %s", self.reason)
        self.dataset = ds

    @classmethod
    def unavailable(cls, reason: str) -> "ImageSource":
        """A source without images, for the reason given."""
        source = cls.__new__(cls)
        source.dataset, source.index_of, source.reason = None, {}, reason
        return source

    @property
    def available(self) -> bool:
        """Whether the run's images can be read (else ``reason`` says why not)."""
        return self.dataset is not None


def region_masks(maps: np.ndarray, thresholds: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """The units' regions on their top images, as the IoU tally computed them.

    maps: (U, n, h, w) raw activations; thresholds: (U,); size: the label size
    (sh, sw).  Returns (U, n, sh, sw) bool: ``upsample(map) > threshold``.
    """
    t32 = torch.from_numpy(float32_below(np.asarray(thresholds, dtype=np.float64)))
    up = upsample(torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)), tuple(size))
    return up > t32.view(-1, *([1] * (up.dim() - 1)))


def _to_thumb(masks: torch.Tensor, thumb: tuple[int, int]) -> np.ndarray:
    """(..., sh, sw) bool -> (..., th, tw) float32 coverage in [0, 1] (bilinear)."""
    lead = masks.shape[:-2]
    x = masks.reshape(-1, 1, *masks.shape[-2:]).float()
    if tuple(x.shape[-2:]) != tuple(thumb):
        x = F.interpolate(x, size=tuple(thumb), mode="bilinear", align_corners=False)
    return x.reshape(*lead, *thumb).clamp_(0, 1).numpy()


def _edges(inside: np.ndarray) -> np.ndarray:
    """(..., h, w) bool -> the inner 1-pixel boundary of each mask (4-neighbourhood).

    Outside the image counts as inside, so a region that reaches the border
    is not outlined along it.
    """
    pad = np.pad(inside, [(0, 0)] * (inside.ndim - 2) + [(1, 1), (1, 1)], constant_values=True)
    eroded = inside & pad[..., :-2, 1:-1] & pad[..., 2:, 1:-1] & pad[..., 1:-1, :-2] & pad[..., 1:-1, 2:]
    return inside & ~eroded


def _load_one(ds: ConceptDataset, index: int, concepts: set[int], label_size: tuple[int, int],
              thumb: tuple[int, int]) -> _Cached:
    sample = ds[index]
    image = np.asarray(sample.image)
    th, tw = thumb
    pil = Image.fromarray(image.astype(np.uint8, copy=False))
    small = np.asarray(pil.resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=3.0), dtype=np.uint8)
    cached = _Cached(small, frozenset(int(x) for x in np.asarray(sample.image_labels).ravel()))
    labels = np.asarray(sample.pixel_labels)
    if labels.ndim == 3 and labels.shape[0] > 0:
        cached.has_pixel_labels = True
        if tuple(labels.shape[1:]) != tuple(label_size):
            t = torch.from_numpy(labels.astype(np.float32))[None]
            labels = F.interpolate(t, size=tuple(label_size), mode="nearest")[0].numpy().astype(np.int64)
        for c in concepts:
            if c in cached.image_labels:
                continue
            mask = (labels == c).any(axis=0)
            if mask.any():
                cached.outlines[c] = _edges(_to_thumb(torch.from_numpy(mask), thumb) >= 0.5)
    return cached


class StripRenderer:
    """Renders unit strips for one report; images are loaded once and shared between layers."""

    def __init__(self, source: ImageSource, label_size: tuple[int, int], image_size: tuple[int, int],
                 spec: StripSpec | None = None, workers: int | None = None):
        self.source = source
        self.label_size = tuple(int(x) for x in label_size)
        self.image_size = tuple(int(x) for x in image_size)
        self.spec = spec or StripSpec()
        self.thumb = self.spec.thumb_size(self.image_size)
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.failed: dict[int, str] = {}
        th, tw = self.thumb
        # Banks: row 0 of each is the "nothing" entry (an empty slot, no outline).
        self._thumbs = [np.empty((th, tw, 3), dtype=np.uint8)]
        self._thumbs[0][:] = EMPTY_RGB
        self._row: dict[int, int] = {}  # run index -> row in the thumbnail bank
        self._outlines = [np.zeros((th, tw), dtype=bool)]
        self._outline_row: dict[tuple[int, int], int] = {}  # (run index, concept) -> row in the outline bank
        self._framed: set[tuple[int, int]] = set()  # (run index, concept) carried as an image-level label

    @property
    def loaded(self) -> int:
        """How many run images have been loaded into the thumbnail bank."""
        return len(self._row)

    def load(self, needs: dict[int, set[int]], progress: Callable[[int], None] | None = None) -> None:
        """Load the run indices in ``needs`` (run index -> concept numbers whose outlines it needs)."""
        ds = self.source.dataset
        if ds is None:
            return
        todo = [i for i in sorted(needs) if i not in self._row and i in self.source.index_of]

        def job(i: int):
            try:
                return i, _load_one(ds, self.source.index_of[i], needs[i], self.label_size, self.thumb), None
            except Exception as exc:
                return i, None, exc

        with ThreadPoolExecutor(self.workers) as pool:
            for i, cached, exc in pool.map(job, todo):
                if cached is None:
                    self.failed[i] = str(exc)
                    log.warning("report: image %d could not be loaded: %s", i, exc)
                else:
                    self._row[i] = len(self._thumbs)
                    self._thumbs.append(cached.thumb)
                    for c, edge in cached.outlines.items():
                        self._outline_row[(i, c)] = len(self._outlines)
                        self._outlines.append(edge)
                    for c in needs[i]:
                        if c in cached.image_labels:
                            self._framed.add((i, c))
                if progress:
                    progress(1)

    def render(self, maps: np.ndarray, thresholds: np.ndarray, indices: np.ndarray, concepts: np.ndarray,
               paths: list[Path | None], chunk: int = 64) -> None:
        """Write one JPEG mosaic per unit to ``paths[u]`` (skipped where None).

        maps (U, n, h, w), thresholds (U,), indices (U, n) run indices (-1 =
        none), concepts (U,) the label number of each unit's concept (0 = none).
        """
        units, n = indices.shape
        if n == 0:
            return
        th, tw = self.thumb
        spec = self.spec
        cols = max(1, min(spec.columns, n))
        rows = -(-n // cols)
        thumbs = np.stack(self._thumbs)
        outlines = np.stack(self._outlines)
        border = np.zeros((th, tw), dtype=bool)
        border[:2], border[-2:], border[:, :2], border[:, -2:] = True, True, True, True
        for start in range(0, units, chunk):
            stop = min(units, start + chunk)
            if all(p is None for p in paths[start:stop]):
                continue
            idx = indices[start:stop]
            con = concepts[start:stop]
            pos = np.array([[self._row.get(int(i), 0) for i in r] for r in idx], dtype=np.intp)
            opos = np.array([[self._outline_row.get((int(i), int(c)), 0) for i in r] for r, c in zip(idx, con)],
                            dtype=np.intp)
            framed = np.array([[(int(i), int(c)) in self._framed for i in r] for r, c in zip(idx, con)], dtype=bool)
            present = pos > 0
            regions = region_masks(maps[start:stop], thresholds[start:stop], self.label_size)
            alpha = _to_thumb(regions, (th, tw))  # (c, n, th, tw)
            region_edge = _edges(alpha >= 0.5) & present[..., None, None]
            keep = torch.from_numpy(alpha).mul_(1.0 - DIM).add_(DIM)
            keep[torch.from_numpy(~present)] = 1.0
            out = torch.from_numpy(thumbs)[torch.from_numpy(pos)].float().mul_(keep.unsqueeze(-1))
            out = out.round_().to(torch.uint8).numpy()
            out[outlines[opos] | (framed[..., None, None] & border)] = LABEL_RGB
            out[region_edge] = REGION_RGB
            for a, canvas in enumerate(_mosaics(out, rows, cols)):
                path = paths[start + a]
                if path is None:
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(canvas).save(path, "JPEG", quality=spec.quality, optimize=True, subsampling="4:4:4")


def _mosaics(thumbs: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(U, n, th, tw, 3) -> (U, rows * (th + GAP) - GAP, cols * (tw + GAP) - GAP, 3), row-major, GAP-wide gaps."""
    units, n, th, tw, _ = thumbs.shape
    grid = np.empty((units, rows * cols, th + GAP, tw + GAP, 3), dtype=np.uint8)
    grid[:] = GAP_RGB
    grid[:, :n, :th, :tw] = thumbs
    grid = grid.reshape(units, rows, cols, th + GAP, tw + GAP, 3).transpose(0, 1, 3, 2, 4, 5)
    grid = grid.reshape(units, rows * (th + GAP), cols * (tw + GAP), 3)
    return grid[:, :-GAP, :-GAP]


def needed_images(layers: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[int, set[int]]:
    """Per run index, the concepts whose outlines are needed on it, over (indices (U, n), concepts (U,)) pairs."""
    needs: dict[int, set[int]] = {}
    for indices, concepts in layers:
        for u in range(indices.shape[0]):
            c = int(concepts[u])
            for i in indices[u]:
                i = int(i)
                if i >= 0:
                    needs.setdefault(i, set()).add(c)
    return needs


__all__ = ["ImageSource", "StripRenderer", "StripSpec", "region_masks", "needed_images",
           "REGION_RGB", "LABEL_RGB", "DIM"]
