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
mask; only the others are upsampled.  No loop runs over units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base import Statistic

DENOMINATORS = ("touch", "image", "all")
#: upper bound on upsampled pixels held at once (pairs x sh x sw)
CHUNK_PIXELS = 1 << 23


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """maps: (..., h, w) -> (..., sh, sw), bilinear, align_corners=False."""
    lead = maps.shape[:-2]
    x = maps.reshape(-1, 1, *maps.shape[-2:])
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return x.reshape(*lead, *size)


def image_categories(
    pixel_labels: torch.Tensor, image_labels: torch.Tensor, category_of: torch.Tensor, num_categories: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: (B, G) has an image-level label of g; (B, G) has any label of g."""
    b = image_labels.shape[0]
    g1 = num_categories + 1
    img_cat = category_of[image_labels]  # (B, M), -1 for no label
    img_cat = torch.where(img_cat < 0, num_categories, img_cat)
    rows = torch.arange(b, device=img_cat.device).view(-1, 1)
    has_img = torch.zeros(b * g1, dtype=torch.bool, device=img_cat.device)
    has_img[(rows * g1 + img_cat).flatten()] = True
    has_img = has_img.view(b, g1)[:, :num_categories]
    pix_cat = category_of[pixel_labels.reshape(b, -1)]
    pix_cat = torch.where(pix_cat < 0, num_categories, pix_cat)
    has_pix = torch.zeros(b * g1, dtype=torch.bool, device=img_cat.device)
    has_pix[(rows * g1 + pix_cat).flatten()] = True
    has_any = has_pix.view(b, g1)[:, :num_categories] | has_img
    return has_img, has_any


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
        has_img, has_any = image_categories(pixel_labels, image_labels, self.category_of, g)

        maxes = acts.amax(dim=(2, 3))  # (B, U)
        bi, ki = (maxes > self._select.view(1, -1)).nonzero(as_tuple=True)
        sh, sw = self.label_size
        chunk = max(1, CHUNK_PIXELS // (sh * sw))
        flat_intersect = self.intersect.view(-1)
        for start in range(0, bi.numel(), chunk):
            b_c, k_c = bi[start : start + chunk], ki[start : start + chunk]
            mask = upsample(acts[b_c, k_c], self.label_size) > self.thresholds[k_c].view(-1, 1, 1)
            m = mask.sum(dim=(1, 2))  # (P,)
            self.mask_pixels.index_add_(0, k_c, m)
            j, y, x = mask.nonzero(as_tuple=True)
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
