"""The IoU tally: intersections of every unit mask with every concept, at once.

For unit k, concept c (label number), category g, summed over images:

- ``intersect[k, c]``: pixels of the mask ``M_k`` labelled c (an image-level
  label c counts all of ``|M_k|`` in its image);
- ``truth[c]`` (:class:`LabelCounts`): pixels labelled c, an image-level label
  counting every pixel of its image;
- ``activation[k, g]``: ``|M_k|`` summed over the images that qualify for
  category g under the chosen ``denominator`` rule:

  * ``"touch"`` (default, the reference implementation's rule): ``M_k``
    touches a pixel labelled with a concept of category g, or the image carries
    an image-level label of g;
  * ``"image"`` (the original paper's text): the image has any label of g;
  * ``"all"`` (PNAS 2020): every image.

``IoU[k, c] = intersect / (activation[k, g(c)] + truth[c] - intersect)``.

The mask is ``upsample(acts) > T_k``, bilinear with ``align_corners=False``
to the label size.  Since bilinear values are convex combinations of the
input, an (image, unit) map whose maximum is not above ``T_k`` has an empty
mask, and so has every cell of output pixels whose four source values are not
above it; only the rest is computed (:class:`CellUpsampler`).  No loop runs
over units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DENOMINATORS
from .base import Statistic

#: upper bound on upsampled pixels held at once (pairs x sh x sw)
CHUNK_PIXELS = 1 << 23


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """maps: (..., h, w) -> (..., sh, sw), bilinear, align_corners=False."""
    lead = maps.shape[:-2]
    x = maps.reshape(-1, 1, *maps.shape[-2:])
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return x.reshape(*lead, *size)


def _axis_plan(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (i0, i1) and weights (w0, w1) of bilinear resizing along one axis.

    The float32 arithmetic follows PyTorch's CPU kernel (align_corners=False,
    the source index computed with one rounding), so values built from them
    can equal ``F.interpolate`` bit for bit.
    """
    if n_in == n_out:
        i = np.arange(n_out)
        return i, i, np.ones(n_out, np.float32), np.zeros(n_out, np.float32)
    f32 = np.float32
    scale = f32(n_in) / f32(n_out)
    dst = np.arange(n_out).astype(f32) + f32(0.5)
    src = (np.float64(scale) * dst.astype(np.float64) - 0.5).astype(f32)
    src = np.where(src < 0, f32(0), src).astype(f32)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    w1 = np.clip(src - i0.astype(f32), f32(0), f32(1)).astype(f32)
    i1 = i0 + (i0 < n_in - 1)
    return i0, i1, (f32(1) - w1).astype(f32), w1


class CellUpsampler:
    """Thresholded bilinear upsampling that computes only where a mask can be.

    Output pixels fall into cells that share the same four source values; a
    cell whose four corners are all at or below the threshold cannot hold a
    mask pixel (bilinear values are convex combinations), so only the other
    cells are computed.  At construction the cell arithmetic is checked
    against ``F.interpolate`` on random maps; where it is not bit-identical on
    this device (small odd sizes, some GPUs), full maps are upsampled instead.
    """

    def __init__(self, grid: tuple[int, int], size: tuple[int, int], device: torch.device | str = "cpu"):
        self.grid, self.size = tuple(grid), tuple(size)
        self.device = torch.device(device)
        axes = []
        for n_in, n_out in zip(self.grid, self.size):
            i0, i1, w0, w1 = _axis_plan(n_in, n_out)
            keys = list(zip(i0.tolist(), i1.tolist()))
            starts = [0] + [k for k in range(1, n_out) if keys[k] != keys[k - 1]]
            ends = starts[1:] + [n_out]
            width = max(e - b for b, e in zip(starts, ends))
            idx = np.zeros((len(starts), width), dtype=np.int64)
            valid = np.zeros((len(starts), width), dtype=bool)
            for g, (b, e) in enumerate(zip(starts, ends)):
                idx[g, : e - b] = np.arange(b, e)
                valid[g, : e - b] = True
            t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)  # noqa: E731
            axes.append({
                "c0": t(i0[starts]), "c1": t(i1[starts]), "idx": t(idx), "valid": t(valid),
                "w0": t(np.where(valid, w0[idx], 0).astype(np.float32)),
                "w1": t(np.where(valid, w1[idx], 0).astype(np.float32)),
            })
        self.rows, self.cols = axes
        self.cells = self.rows["idx"].numel() * self.cols["idx"].numel()  # padded pixels of all cells
        self.exact = self._matches_interpolate()

    def _cell_values(self, maps: torch.Tensor, p, gy, gx) -> torch.Tensor:
        r, c = self.rows, self.cols
        y0, y1, x0, x1 = r["c0"][gy], r["c1"][gy], c["c0"][gx], c["c1"][gx]
        a00, a01 = maps[p, y0, x0].unsqueeze(1), maps[p, y0, x1].unsqueeze(1)
        a10, a11 = maps[p, y1, x0].unsqueeze(1), maps[p, y1, x1].unsqueeze(1)
        wx0, wx1 = c["w0"][gx], c["w1"][gx]  # (Q, Rx)
        t0 = torch.addcmul(a01 * wx1, a00, wx0)
        t1 = torch.addcmul(a11 * wx1, a10, wx0)
        wy0, wy1 = r["w0"][gy].unsqueeze(2), r["w1"][gy].unsqueeze(2)  # (Q, Ry, 1)
        return torch.addcmul(t1.unsqueeze(1) * wy1, t0.unsqueeze(1), wy0)  # (Q, Ry, Rx)

    def _matches_interpolate(self) -> bool:
        gen = torch.Generator().manual_seed(0)
        maps = torch.randn(16, *self.grid, generator=gen).to(self.device)
        gy, gx = torch.meshgrid(torch.arange(self.rows["idx"].shape[0], device=self.device),
                                torch.arange(self.cols["idx"].shape[0], device=self.device), indexing="ij")
        p = torch.arange(16, device=self.device).repeat_interleave(gy.numel())
        gy, gx = gy.flatten().repeat(16), gx.flatten().repeat(16)
        values = self._cell_values(maps, p, gy, gx)
        full = torch.zeros(16, *self.size, device=self.device)
        rows = self.rows["idx"][gy].unsqueeze(2).expand_as(values)
        cols = self.cols["idx"][gx].unsqueeze(1).expand_as(values)
        keep = self.rows["valid"][gy].unsqueeze(2) & self.cols["valid"][gx].unsqueeze(1)
        full[p.view(-1, 1, 1).expand_as(values)[keep], rows[keep], cols[keep]] = values[keep]
        return torch.equal(full, upsample(maps, self.size))

    def mask_pixels(self, maps: torch.Tensor, thresholds: torch.Tensor, select: torch.Tensor):
        """Coordinates (j, y, x) where ``upsample(maps[j]) > thresholds[j]``.

        maps: (P, h, w); thresholds: (P,) float32; select: (P,) a value at or
        below each threshold, for choosing cells safely.
        """
        if not self.exact:
            return (upsample(maps, self.size) > thresholds.view(-1, 1, 1)).nonzero(as_tuple=True)
        r, c = self.rows, self.cols
        corners = torch.maximum(
            torch.maximum(maps[:, r["c0"]][:, :, c["c0"]], maps[:, r["c0"]][:, :, c["c1"]]),
            torch.maximum(maps[:, r["c1"]][:, :, c["c0"]], maps[:, r["c1"]][:, :, c["c1"]]),
        )  # (P, Gy, Gx)
        p, gy, gx = (corners > select.view(-1, 1, 1)).nonzero(as_tuple=True)
        values = self._cell_values(maps, p, gy, gx)
        mask = (values > thresholds[p].view(-1, 1, 1)) & r["valid"][gy].unsqueeze(2) & c["valid"][gx].unsqueeze(1)
        q, ry, rx = mask.nonzero(as_tuple=True)
        return p[q], r["idx"][gy[q], ry], c["idx"][gx[q], rx]


def image_categories(
    pixel_labels: torch.Tensor, image_labels: torch.Tensor, category_of: torch.Tensor, num_categories: int,
    *, pixels: bool = True,
) -> torch.Tensor:
    """(B, G) bool: image b carries an image-level label of category g (or, with
    ``pixels=True``, any label of g at all)."""
    b = image_labels.shape[0]
    g1 = num_categories + 1
    rows = torch.arange(b, device=image_labels.device).view(-1, 1)
    has = torch.zeros(b * g1, dtype=torch.bool, device=image_labels.device)
    sources = [image_labels, pixel_labels.reshape(b, -1)] if pixels else [image_labels]
    for labels in sources:
        cat = category_of[labels]
        cat = torch.where(cat < 0, num_categories, cat)
        has[(rows * g1 + cat).flatten()] = True
    return has.view(b, g1)[:, :num_categories]


class LabelCounts(Statistic):
    """truth[c]: labelled pixels per label number (image-level labels count every pixel)."""

    def __init__(self, num_labels: int, *, device: torch.device | str = "cpu"):
        self.num_labels = int(num_labels)
        self.truth = torch.zeros(self.num_labels, dtype=torch.int64, device=device)
        self.images = 0

    def update(self, pixel_labels: torch.Tensor, image_labels: torch.Tensor) -> None:
        """pixel_labels: (B, L, sh, sw); image_labels: (B, M); 0 = no label."""
        sh, sw = pixel_labels.shape[-2:]
        counts = torch.bincount(pixel_labels.flatten(), minlength=self.num_labels)
        counts += torch.bincount(image_labels.flatten(), minlength=self.num_labels) * (sh * sw)
        counts[0] = 0
        self.truth += counts.to(self.truth.device)
        self.images += pixel_labels.shape[0]

    def merge(self, other: "LabelCounts") -> None:
        self._check_same(other, "num_labels")
        self.truth += other.truth.to(self.truth.device)
        self.images += other.images

    def state_dict(self) -> dict[str, Any]:
        return {"truth": self.truth.cpu(), "images": self.images, "num_labels": self.num_labels}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_labels"] != self.num_labels:
            raise ValueError(f"saved LabelCounts has {state['num_labels']} labels, this one {self.num_labels}")
        self.truth = state["truth"].to(self.truth.device)
        self.images = int(state["images"])


class IoUTally(Statistic):
    """Intersections and conditioned mask sizes for every unit, concept and category.

    thresholds: (U,) float32, compared strictly (``upsampled > T``); use
    :func:`netdissect.stats.quantile.float32_below` of float64 thresholds.
    category_of: (num_labels,) int64 primary category index per label number,
    -1 for 0 and unused numbers.
    """

    def __init__(
        self,
        thresholds: torch.Tensor,
        category_of: torch.Tensor,
        num_categories: int,
        label_size: tuple[int, int],
        *,
        denominator: str = "touch",
    ):
        if denominator not in DENOMINATORS:
            raise ValueError(f"denominator {denominator!r} is not one of {DENOMINATORS}")
        device = thresholds.device
        self.thresholds = thresholds.to(torch.float32)
        self.category_of = category_of.to(device=device, dtype=torch.int64)
        self.units = int(self.thresholds.numel())
        self.num_labels = int(self.category_of.numel())
        self.num_categories = int(num_categories)
        self.label_size = tuple(int(s) for s in label_size)
        self.denominator = denominator
        self.intersect = torch.zeros(self.units, self.num_labels, dtype=torch.int64, device=device)
        self.activation = torch.zeros(self.units, self.num_categories, dtype=torch.int64, device=device)
        self.mask_pixels = torch.zeros(self.units, dtype=torch.int64, device=device)
        # a superset of the (image, unit) pairs with a non-empty mask, safe against rounding
        self._select = self.thresholds - self.thresholds.abs() * 1e-6 - 1e-30
        self._cells: CellUpsampler | None = None

    def update(self, acts: torch.Tensor, pixel_labels: torch.Tensor, image_labels: torch.Tensor) -> None:
        """acts: (B, U, h, w); pixel_labels: (B, L, sh, sw) int64; image_labels: (B, M) int64."""
        b, u = acts.shape[:2]
        if u != self.units:
            raise ValueError(f"expected {self.units} units, got acts of shape {tuple(acts.shape)}")
        if tuple(pixel_labels.shape[-2:]) != self.label_size:
            raise ValueError(f"labels are {tuple(pixel_labels.shape[-2:])}, expected {self.label_size}")
        device = self.intersect.device
        acts = acts.to(device)
        pixel_labels = pixel_labels.to(device)
        image_labels = image_labels.to(device)
        g, g1, ncol = self.num_categories, self.num_categories + 1, self.num_labels
        if self.denominator == "touch":
            has_img = image_categories(pixel_labels, image_labels, self.category_of, g, pixels=False)
        elif self.denominator == "image":
            has_any = image_categories(pixel_labels, image_labels, self.category_of, g)

        maxes = acts.amax(dim=(2, 3))  # (B, U)
        bi, ki = (maxes > self._select.view(1, -1)).nonzero(as_tuple=True)
        grid = tuple(acts.shape[-2:])
        if self._cells is None or self._cells.grid != grid:
            self._cells = CellUpsampler(grid, self.label_size, device)
        chunk = max(1, CHUNK_PIXELS // self._cells.cells)
        flat_intersect = self.intersect.view(-1)
        for start in range(0, bi.numel(), chunk):
            b_c, k_c = bi[start : start + chunk], ki[start : start + chunk]
            j, y, x = self._cells.mask_pixels(acts[b_c, k_c], self.thresholds[k_c], self._select[k_c])
            m = torch.bincount(j, minlength=k_c.numel())  # (P,) mask pixels per (image, unit)
            self.mask_pixels.index_add_(0, k_c, m)
            lab = pixel_labels[b_c[j], :, y, x]  # (nnz, L)
            flat_intersect += torch.bincount(
                (k_c[j].view(-1, 1) * ncol + lab).flatten(), minlength=self.units * ncol
            )
            # image-level labels: all of |M_k| in the image
            img = image_labels[b_c]  # (P, M)
            flat_intersect.index_add_(0, (k_c.view(-1, 1) * ncol + img).flatten(), m.view(-1, 1).expand_as(img).flatten())
            if self.denominator == "touch":
                cat = self.category_of[lab]
                cat = torch.where(cat < 0, g, cat)
                touch = torch.bincount((j.view(-1, 1) * g1 + cat).flatten(), minlength=k_c.numel() * g1)
                qualifies = (touch.view(-1, g1)[:, :g] > 0) | has_img[b_c]
            elif self.denominator == "image":
                qualifies = has_any[b_c]
            else:
                qualifies = torch.ones(k_c.numel(), g, dtype=torch.bool, device=device)
            self.activation.index_add_(0, k_c, qualifies.to(torch.int64) * m.view(-1, 1))
        self.intersect[:, 0] = 0

    def merge(self, other: "IoUTally") -> None:
        self._check_same(other, "units", "num_labels", "num_categories", "label_size", "denominator")
        if not torch.equal(self.thresholds.cpu(), other.thresholds.cpu()):
            raise ValueError("cannot merge IoU tallies made with different thresholds")
        self.intersect += other.intersect.to(self.intersect.device)
        self.activation += other.activation.to(self.activation.device)
        self.mask_pixels += other.mask_pixels.to(self.mask_pixels.device)

    def state_dict(self) -> dict[str, Any]:
        return {
            "thresholds": self.thresholds.cpu(),
            "intersect": self.intersect.cpu(),
            "activation": self.activation.cpu(),
            "mask_pixels": self.mask_pixels.cpu(),
            "denominator": self.denominator,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not torch.equal(state["thresholds"], self.thresholds.cpu()) or state["denominator"] != self.denominator:
            raise ValueError("saved IoU tally was made with other thresholds or another denominator rule")
        device = self.intersect.device
        self.intersect = state["intersect"].to(device)
        self.activation = state["activation"].to(device)
        self.mask_pixels = state["mask_pixels"].to(device)

    def iou(self, truth: torch.Tensor) -> np.ndarray:
        """(U, num_labels) float64 IoU; 0 where a label has no category or no pixels."""
        inter = self.intersect.cpu().numpy().astype(np.float64)
        act = self.denominator_pixels()
        cat = self.category_of.cpu().numpy()
        t = truth.cpu().numpy().astype(np.float64)
        valid = cat >= 0
        denom = act[:, np.where(valid, cat, 0)] + t[None, :] - inter
        out = np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)
        out[:, ~valid] = 0.0
        return out

    def denominator_pixels(self) -> np.ndarray:
        """(U, G) float64: the mask-size term of each unit's IoU denominator per category."""
        if self.denominator == "all":
            return np.repeat(self.mask_pixels.cpu().numpy().astype(np.float64)[:, None], self.num_categories, 1)
        return self.activation.cpu().numpy().astype(np.float64)
