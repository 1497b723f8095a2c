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
above it, and every piece of a cell whose corner pixels are clearly below it;
only the rest is computed (:class:`CellUpsampler`).  The labels under each
(image, unit) mask are counted with one ``bincount`` per chunk of pairs, from
a copy of the label maps laid out piece by piece; the categories a mask
touches follow from those counts.  No loop runs over units or images, and
every count is an exact integer: results do not depend on chunking.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DENOMINATORS
from .base import Statistic

#: upper bound on upsampled pixels held at once (16 MB of float32 values)
CHUNK_PIXELS = 1 << 22
#: bound on source-map values of (image, unit) pairs and on per-pair label counts held at once
PAIR_VALUES = 1 << 21
#: target width and height of the pieces cells are cut into (see CellUpsampler)
PIECE = 8


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


def _take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` along the first dimension (index_select: faster than advanced indexing)."""
    return values.index_select(0, index)


def _piece_width(sizes: list[int]) -> int:
    """Width of the pieces that cells of these sizes are cut into (see :class:`CellUpsampler`).

    Pieces of about ``PIECE`` pixels keep the second pruning step fine-grained;
    among the widths from there to the widest cell, the one with the fewest
    padded pixels (then the fewest pieces) wins.
    """
    widest = max(sizes)
    best = None
    for width in range(min(PIECE, widest), widest + 1):
        count = sum(-(-s // width) for s in sizes)
        key = (count * width, count)
        if best is None or key < best[0]:
            best = (key, width)
    return best[1]


class CellUpsampler:
    """Thresholded bilinear upsampling that computes only where a mask can be.

    Output pixels fall into cells that share the same four source values;
    cells are cut into pieces of about ``PIECE`` x ``PIECE`` pixels.  Bilinear
    values are convex combinations, so a piece whose four source values are
    all at or below the threshold cannot hold a mask pixel (step 1).  Within a
    cell the interpolant is bilinear in the output coordinates, so its maximum
    over a piece is at one of the piece's four corner pixels: a piece whose
    corner values are below the threshold by more than a rounding margin is
    skipped too (step 2).  Only the remaining pieces are computed pixel by
    pixel.  At construction the piece arithmetic is checked against
    ``F.interpolate`` on random maps; where it is not bit-identical on this
    device (small odd sizes, some GPUs), full maps are upsampled instead.
    """

    def __init__(self, grid: tuple[int, int], size: tuple[int, int], device: torch.device | str = "cpu"):
        self.grid, self.size = tuple(grid), tuple(size)
        self.device = torch.device(device)
        self.rows, self.cols = (self._axis(n_in, n_out) for n_in, n_out in zip(self.grid, self.size))
        self.cells = self.rows["idx"].numel() * self.cols["idx"].numel()  # padded pixels of all pieces
        self.piece_pixels = self.rows["idx"].shape[1] * self.cols["idx"].shape[1]
        self.padded = not (bool(self.rows["valid"].all()) and bool(self.cols["valid"].all()))
        # step 2 pays off only when pieces hold enough pixels to skip
        self.refine = self.piece_pixels >= 16
        self.exact = self._matches_interpolate()

    def _axis(self, n_in: int, n_out: int) -> dict[str, torch.Tensor]:
        i0, i1, w0, w1 = _axis_plan(n_in, n_out)
        keys = list(zip(i0.tolist(), i1.tolist()))
        starts = [0] + [k for k in range(1, n_out) if keys[k] != keys[k - 1]]
        ends = starts[1:] + [n_out]
        width = _piece_width([e - b for b, e in zip(starts, ends)])
        pieces = [(p, min(p + width, e)) for b, e in zip(starts, ends) for p in range(b, e, width)]
        idx = np.zeros((len(pieces), width), dtype=np.int64)
        valid = np.zeros((len(pieces), width), dtype=bool)
        for g, (b, e) in enumerate(pieces):
            idx[g, : e - b] = np.arange(b, e)
            valid[g, : e - b] = True
        first = np.array([b for b, _ in pieces])
        edge = np.stack([first, np.array([e - 1 for _, e in pieces])], 1)  # first and last pixel of each piece
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)  # noqa: E731
        return {
            "c0": t(i0[first]), "c1": t(i1[first]), "idx": t(idx), "valid": t(valid),
            "w0": t(np.where(valid, w0[idx], 0).astype(np.float32)),
            "w1": t(np.where(valid, w1[idx], 0).astype(np.float32)),
            "e0": t(w0[edge].astype(np.float32)), "e1": t(w1[edge].astype(np.float32)),
        }

    def _corners(self, maps: torch.Tensor, p, gy, gx):
        r, c = self.rows, self.cols
        h, w = maps.shape[1:]
        flat = maps.reshape(-1)
        row0, row1 = (p * h + _take(r["c0"], gy)) * w, (p * h + _take(r["c1"], gy)) * w
        x0, x1 = _take(c["c0"], gx), _take(c["c1"], gx)
        return _take(flat, row0 + x0), _take(flat, row0 + x1), _take(flat, row1 + x0), _take(flat, row1 + x1)

    def _cell_values(self, maps: torch.Tensor, p, gy, gx, edges: bool = False, corners=None) -> torch.Tensor:
        """Upsampled values of pieces (p, gy, gx): (Q, Ry, Rx); with ``edges`` only their corner pixels (Q, 2, 2)."""
        r, c = self.rows, self.cols
        k0, k1 = ("e0", "e1") if edges else ("w0", "w1")
        a00, a01, a10, a11 = (a.unsqueeze(1) for a in (corners or self._corners(maps, p, gy, gx)))
        wx0, wx1 = _take(c[k0], gx), _take(c[k1], gx)  # (Q, Rx)
        t0 = torch.addcmul(a01 * wx1, a00, wx0)
        t1 = torch.addcmul(a11 * wx1, a10, wx0)
        wy0, wy1 = _take(r[k0], gy).unsqueeze(2), _take(r[k1], gy).unsqueeze(2)  # (Q, Ry, 1)
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

    def candidates(self, maps: torch.Tensor, select: torch.Tensor):
        """Pieces (p, gy, gx) that may hold a pixel of ``upsample(maps[p]) > select[p]`` (steps 1 and 2)."""
        r, c = self.rows, self.cols
        y0, y1 = maps.index_select(1, r["c0"]), maps.index_select(1, r["c1"])
        bound = torch.maximum(  # (P, Gy, Gx): the largest of each piece's four source values
            torch.maximum(y0.index_select(2, c["c0"]), y0.index_select(2, c["c1"])),
            torch.maximum(y1.index_select(2, c["c0"]), y1.index_select(2, c["c1"])),
        )
        p, gy, gx = (bound > select.view(-1, 1, 1)).nonzero(as_tuple=True)
        if self.refine and p.numel():
            corners = self._corners(maps, p, gy, gx)
            edge = self._cell_values(maps, p, gy, gx, edges=True, corners=corners).flatten(1).amax(1)
            # computed values stray from the exact bilinear ones by a few float32 roundings of |corners|
            margin = (corners[0].abs() + corners[1].abs() + corners[2].abs() + corners[3].abs()) * 1e-5
            keep = (edge > _take(select, p) - margin).nonzero().flatten()
            p, gy, gx = _take(p, keep), _take(gy, keep), _take(gx, keep)
        return p, gy, gx

    def piece_masks(self, maps: torch.Tensor, thresholds: torch.Tensor, select: torch.Tensor,
                    chunk_pixels: int = 1 << 22):
        """Yield (p, gy, gx, mask) in chunks of pieces, in order of p.

        ``mask`` (Q, Ry * Rx) is ``upsample(maps[p]) > thresholds[p]`` on
        piece (gy, gx), False on padding.  Only where ``exact``.
        """
        p, gy, gx = self.candidates(maps, select)
        step = max(1, chunk_pixels // self.piece_pixels)
        r, c = self.rows, self.cols
        for s in range(0, p.numel(), step):
            pc, yc, xc = p[s : s + step], gy[s : s + step], gx[s : s + step]
            mask = self._cell_values(maps, pc, yc, xc) > _take(thresholds, pc).view(-1, 1, 1)
            if self.padded:
                mask &= _take(r["valid"], yc).unsqueeze(2) & _take(c["valid"], xc).unsqueeze(1)
            yield pc, yc, xc, mask.view(mask.shape[0], -1)

    def mask_pixels(self, maps: torch.Tensor, thresholds: torch.Tensor, select: torch.Tensor):
        """Coordinates (j, y, x) where ``upsample(maps[j]) > thresholds[j]``.

        maps: (P, h, w); thresholds: (P,) float32; select: (P,) a value at or
        below each threshold, for choosing cells safely.
        """
        if not self.exact:
            return (upsample(maps, self.size) > thresholds.view(-1, 1, 1)).nonzero(as_tuple=True)
        r, c = self.rows, self.cols
        rx = c["idx"].shape[1]
        out = []
        for p, gy, gx, mask in self.piece_masks(maps, thresholds, select):
            q, off = mask.nonzero(as_tuple=True)
            out.append((p[q], r["idx"][gy[q], off // rx], c["idx"][gx[q], off % rx]))
        if not out:
            empty = torch.zeros(0, dtype=torch.int64, device=maps.device)
            return empty, empty, empty
        return tuple(torch.cat(parts) for parts in zip(*out))


def image_categories(
    pixel_labels: torch.Tensor, image_labels: torch.Tensor, category_of: torch.Tensor, num_categories: int,
    *, pixels: bool = True,
) -> torch.Tensor:
    """(B, G) bool: whether image b carries a label of category g.

    With ``pixels=False`` only image-level labels count; with ``pixels=True``
    any label of g at all (pixel-level or image-level).
    """
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
        """Add another shard's counts (same ``num_labels``)."""
        self._check_same(other, "num_labels")
        self.truth += other.truth.to(self.truth.device)
        self.images += other.images

    def state_dict(self) -> dict[str, Any]:
        """The counts on the CPU."""
        return {"truth": self.truth.cpu(), "images": self.images, "num_labels": self.num_labels}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (raises ValueError for another number of labels)."""
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
        # each label number's category column, the "no category" column (g) for -1
        self._category_column = torch.where(self.category_of < 0, self.num_categories, self.category_of)

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
        if self._cells is None or self._cells.grid != grid or self._cells.device != torch.device(device):
            self._cells = CellUpsampler(grid, self.label_size, device)
        cells = self._cells
        layers = pixel_labels.shape[1]
        # the labels laid out piece by piece, (B, Gy, Gx, L, Ry * Rx), so a piece's labels are one run of memory
        if cells.exact:
            r, c = cells.rows, cells.cols
            (gy_n, ry), (gx_n, rx) = r["idx"].shape, c["idx"].shape
            table = pixel_labels.index_select(2, r["idx"].flatten()).index_select(3, c["idx"].flatten())
            table = table.view(b, layers, gy_n, ry, gx_n, rx).permute(0, 2, 4, 1, 3, 5).reshape(-1)
            run = ry * rx
        else:
            gy_n = gx_n = 1
            table, run = pixel_labels.reshape(-1), self.label_size[0] * self.label_size[1]
        layer_offset = (torch.arange(layers, device=device) * run).view(1, -1)
        pieces_per_map = cells.rows["idx"].shape[0] * cells.cols["idx"].shape[0]
        step = max(1, PAIR_VALUES // max(grid[0] * grid[1], pieces_per_map, ncol))
        flat_intersect = self.intersect.view(-1)
        for start in range(0, bi.numel(), step):
            b_c, k_c = bi[start : start + step], ki[start : start + step]
            n = k_c.numel()
            maps = _take(acts.reshape(b * u, *grid), b_c * u + k_c)
            thresholds = _take(self.thresholds, k_c)
            if cells.exact:
                pieces = cells.piece_masks(maps, thresholds, _take(self._select, k_c), CHUNK_PIXELS)
            else:
                pieces = self._full_masks(maps, thresholds)
            # counts[p, c]: (pixel, label layer) entries of pair p's mask labelled c
            counts = torch.zeros(n * ncol, dtype=torch.int64, device=device)
            m = torch.zeros(n, dtype=torch.int64, device=device)  # mask pixels per pair
            for p, gy, gx, mask in pieces:
                q, off = mask.nonzero(as_tuple=True)
                if not layers:
                    m += torch.bincount(_take(p, q), minlength=n)
                    continue
                base = ((_take(b_c, p) * gy_n + gy) * gx_n + gx) * (layers * run)
                lab = _take(table, ((_take(base, q) + off).view(-1, 1) + layer_offset).view(-1))  # (nnz * L)
                key = (_take(p, q) * ncol).view(-1, 1) + lab.view(-1, layers)
                counts += torch.bincount(key.view(-1), minlength=n * ncol)
            counts = counts.view(n, ncol)
            if layers:
                m = counts.sum(1) // layers  # every (pixel, layer) has one label (0 included)
            self.intersect.index_add_(0, k_c, counts)
            self.mask_pixels.index_add_(0, k_c, m)
            # image-level labels: all of |M_k| in the image
            img = _take(image_labels, b_c)  # (P, M)
            flat_intersect.index_add_(0, (k_c.view(-1, 1) * ncol + img).flatten(),
                                      m.view(-1, 1).expand_as(img).flatten())
            if self.denominator == "touch":
                touch = torch.zeros(n, g1, dtype=torch.int64, device=device)
                touch.index_add_(1, self._category_column, counts)
                qualifies = (touch[:, :g] > 0) | _take(has_img, b_c)
            elif self.denominator == "image":
                qualifies = _take(has_any, b_c)
            else:
                qualifies = torch.ones(n, g, dtype=torch.bool, device=device)
            self.activation.index_add_(0, k_c, qualifies.to(torch.int64) * m.view(-1, 1))
        self.intersect[:, 0] = 0

    def _full_masks(self, maps: torch.Tensor, thresholds: torch.Tensor):
        """Like :meth:`CellUpsampler.piece_masks` with one piece per map: whole upsampled maps."""
        step = max(1, CHUNK_PIXELS // (self.label_size[0] * self.label_size[1]))
        zero = torch.zeros(1, dtype=torch.int64, device=maps.device)
        for s in range(0, maps.shape[0], step):
            mask = upsample(maps[s : s + step], self.label_size) > thresholds[s : s + step].view(-1, 1, 1)
            p = torch.arange(s, s + mask.shape[0], device=maps.device)
            yield p, zero.expand_as(p), zero.expand_as(p), mask.view(mask.shape[0], -1)

    def merge(self, other: "IoUTally") -> None:
        """Add another shard's tallies (same thresholds, labels, categories and denominator rule)."""
        self._check_same(other, "units", "num_labels", "num_categories", "label_size", "denominator")
        if not torch.equal(self.thresholds.cpu(), other.thresholds.cpu()):
            raise ValueError("cannot merge IoU tallies made with different thresholds")
        self.intersect += other.intersect.to(self.intersect.device)
        self.activation += other.activation.to(self.activation.device)
        self.mask_pixels += other.mask_pixels.to(self.mask_pixels.device)

    def state_dict(self) -> dict[str, Any]:
        """The tallies and thresholds on the CPU."""
        return {
            "thresholds": self.thresholds.cpu(),
            "intersect": self.intersect.cpu(),
            "activation": self.activation.cpu(),
            "mask_pixels": self.mask_pixels.cpu(),
            "denominator": self.denominator,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (raises ValueError for other thresholds or denominator rule)."""
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
