"""Per-unit top-activating images, streamed."""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import Statistic


class TopImages(Statistic):
    """The ``n`` images with the highest score for each unit.

    update(scores, image_indices): scores (B, U), e.g. each unit's maximum
    activation per image; image_indices (B,) data set indices.  Ties keep the
    lower image index.

    Parameters
    ----------
    units : int
        Number of units U.
    n : int
        Images kept per unit.
    device : torch.device or str
        Where the (U, n) ``scores`` (float32, -inf: empty) and ``indices``
        (int64, -1: empty) live.
    """

    def __init__(self, units: int, n: int, *, device: torch.device | str = "cpu"):
        self.units, self.n = int(units), int(n)
        self.scores = torch.full((self.units, self.n), -math.inf, device=device)
        self.indices = torch.full((self.units, self.n), -1, dtype=torch.int64, device=device)

    def update(self, scores: torch.Tensor, image_indices: torch.Tensor) -> None:
        """Fold in (B, U) scores of the images ``image_indices`` (B,); raises ValueError on a wrong shape."""
        if scores.dim() != 2 or scores.shape[1] != self.units:
            raise ValueError(f"expected (B, {self.units}) scores, got {tuple(scores.shape)}")
        idx = image_indices.to(self.indices.device).view(1, -1).expand(self.units, -1)
        self._absorb(scores.t().to(self.scores.dtype), idx)

    def _absorb(self, scores: torch.Tensor, indices: torch.Tensor) -> None:
        s = torch.cat([self.scores, scores], dim=1)
        i = torch.cat([self.indices, indices], dim=1)
        # order by score descending, then index ascending (empty slots, index -1, last)
        key_index = torch.where(i < 0, torch.iinfo(torch.int64).max, i)
        order = torch.argsort(key_index, dim=1, stable=True)
        s, i = s.gather(1, order), i.gather(1, order)
        order = torch.argsort(s, dim=1, descending=True, stable=True)[:, : self.n]
        self.scores, self.indices = s.gather(1, order), i.gather(1, order)

    def merge(self, other: "TopImages") -> None:
        """Keep the top ``n`` of both instances' images per unit."""
        self._check_same(other, "units", "n")
        self._absorb(other.scores.to(self.scores.device), other.indices.to(self.indices.device))

    def state_dict(self) -> dict[str, Any]:
        """The (U, n) scores and indices (on the CPU), units and n."""
        return {"scores": self.scores.cpu(), "indices": self.indices.cpu(), "units": self.units, "n": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; raises ValueError when units or n differ."""
        if state["units"] != self.units or state["n"] != self.n:
            raise ValueError(f"saved TopImages is {state['units']}x{state['n']}, this one {self.units}x{self.n}")
        self.scores = state["scores"].to(self.scores.device)
        self.indices = state["indices"].to(self.indices.device)


class TopMaps(Statistic):
    """The activation maps of each unit on its top images, gathered in a later pass.

    update(acts, image_indices): acts (B, U, h, w) for images image_indices (B,).
    ``maps`` is (U, n, h, w) float32; ``filled`` (U, n) bool marks the slots
    gathered so far.

    Parameters
    ----------
    indices : torch.Tensor
        (U, n) int64 image indices from :class:`TopImages` (-1: empty slot);
        the maps live on its device.
    map_size : tuple of int
        (h, w) of the layer's activation maps.
    """

    def __init__(self, indices: torch.Tensor, map_size: tuple[int, int]):
        self.indices = indices.clone()
        self.units, self.n = self.indices.shape
        self.maps = torch.zeros(self.units, self.n, *map_size, device=indices.device)
        self.filled = torch.zeros(self.units, self.n, dtype=torch.bool, device=indices.device)

    def update(self, acts: torch.Tensor, image_indices: torch.Tensor) -> None:
        """Store the (B, U, h, w) maps of the batch's images that are some unit's top images."""
        image_indices = image_indices.to(self.indices.device)
        # (U, n, B) match of each slot's image against the batch
        match = self.indices.unsqueeze(-1) == image_indices.view(1, 1, -1)
        unit, slot, b = match.nonzero(as_tuple=True)
        if unit.numel():
            self.maps[unit, slot] = acts[b.to(acts.device), unit.to(acts.device)].to(self.maps)
            self.filled[unit, slot] = True

    def merge(self, other: "TopMaps") -> None:
        """Take the maps ``other`` filled; raises ValueError when its top images differ."""
        if not torch.equal(self.indices, other.indices.to(self.indices.device)):
            raise ValueError("cannot merge TopMaps gathered for different top images")
        f = other.filled.to(self.filled.device)
        self.maps[f] = other.maps.to(self.maps.device)[f]
        self.filled |= f

    def state_dict(self) -> dict[str, Any]:
        """The top-image indices, the maps gathered so far and which slots are filled (on the CPU)."""
        return {"indices": self.indices.cpu(), "maps": self.maps.cpu(), "filled": self.filled.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; raises ValueError when its top images differ."""
        if not torch.equal(state["indices"], self.indices.cpu()):
            raise ValueError("saved TopMaps were gathered for different top images")
        self.maps = state["maps"].to(self.maps.device)
        self.filled = state["filled"].to(self.filled.device)
