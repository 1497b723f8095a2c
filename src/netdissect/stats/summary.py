"""Each image's per-unit summary activation, kept for every image (CLIP-Dissect's neuron vectors q_k).

CLIP-Dissect (Oikarinen & Weng, ICLR 2023) describes unit k by its vector
q_k of one number per probe image: the spatial mean of a convolutional map
(or its maximum), the class token of a transformer block, a linear layer's
output as it is.  :class:`UnitSummary` keeps those numbers for every image as
an (N, U) float32 matrix, filled row by row as batches arrive, and merges
across shards by taking the rows each shard filled.  The same statistic keeps
any other per-image vectors, such as an image-text model's image embeddings
(a 2-D input is stored as it is).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError, LayerError
from ..hooks import token_grid_side
from .base import Statistic

#: how a feature map (B, U, H, W) becomes one number per unit
POOLS = ("mean", "max")
#: how token outputs (B, T, D) become one number per feature
TOKENS = ("cls", "mean")


def summarize(acts: torch.Tensor, pool: str = "mean", tokens: str = "cls") -> torch.Tensor:
    """One number per image and unit.

    Parameters
    ----------
    acts : torch.Tensor
        A layer's raw output: (B, U, H, W) feature maps, (B, T, D) tokens
        (a transformer block; the units are the D features), or (B, U).
    pool : str
        For feature maps: "mean" (spatial mean, CLIP-Dissect's default) or
        "max".
    tokens : str
        For tokens: "cls" (the first token, CLIP-Dissect's choice for ViTs)
        or "mean" (the mean of the patch tokens: the class token is left out
        when T = 1 + side^2, as timm's average pooling does).

    Returns
    -------
    torch.Tensor
        (B, U) float32.

    Raises
    ------
    ConfigError
        For an unknown ``pool`` or ``tokens``.
    LayerError
        For outputs of another rank.
    """
    if pool not in POOLS:
        raise ConfigError(f"pool {pool!r} is not one of {POOLS}")
    if tokens not in TOKENS:
        raise ConfigError(f"tokens {tokens!r} is not one of {TOKENS}")
    if acts.dim() == 4:
        return (acts.mean(dim=(2, 3)) if pool == "mean" else acts.amax(dim=(2, 3))).float()
    if acts.dim() == 3:
        if tokens == "cls":
            return acts[:, 0].float()
        found = token_grid_side(acts.shape[1])
        prefix = found[0] if found is not None else 0
        return acts[:, prefix:].mean(dim=1).float()
    if acts.dim() == 2:
        return acts.float()
    raise LayerError(f"cannot summarise an output of shape {tuple(acts.shape)}: expected (B, U, H, W) feature "
                     "maps, (B, T, D) tokens or (B, U)")


class UnitSummary(Statistic):
    """The (N, U) per-image summaries of one layer (or any per-image vectors), filled as batches arrive.

    update(acts, image_indices): acts as :func:`summarize` takes them, for
    the images ``image_indices`` (B,).  ``values`` is (N, U) float32 (0
    where not yet filled) and ``filled`` (N,) bool.

    Parameters
    ----------
    images : int
        N, the images of the data set (rows are data set indices).
    units : int
        U.
    pool, tokens : str
        See :func:`summarize`.
    device : torch.device or str
        Where the matrix lives.
    """

    def __init__(self, images: int, units: int, *, pool: str = "mean", tokens: str = "cls",
                 device: torch.device | str = "cpu"):
        if pool not in POOLS or tokens not in TOKENS:
            summarize(torch.zeros(1, 1), pool, tokens)  # raises the error naming the bad option
        self.images, self.units, self.pool, self.tokens = int(images), int(units), pool, tokens
        self.values = torch.zeros(self.images, self.units, device=device)
        self.filled = torch.zeros(self.images, dtype=torch.bool, device=device)

    def update(self, acts: torch.Tensor, image_indices: torch.Tensor) -> None:
        """Store the batch's summaries in the rows ``image_indices``.

        Raises
        ------
        ValueError
            When the summary does not have this statistic's number of units.
        """
        s = summarize(acts, self.pool, self.tokens)
        if s.shape[1] != self.units:
            raise ValueError(f"expected {self.units} units, got a summary of shape {tuple(s.shape)}")
        rows = image_indices.to(self.values.device)
        self.values[rows] = s.to(self.values)
        self.filled[rows] = True

    def merge(self, other: "UnitSummary") -> None:
        """Take the rows ``other`` filled.

        Raises
        ------
        ValueError
            When the two differ in images, units, pool or tokens.
        """
        self._check_same(other, "images", "units", "pool", "tokens")
        f = other.filled.to(self.filled.device)
        self.values[f] = other.values.to(self.values.device)[f]
        self.filled |= f

    def result(self) -> torch.Tensor:
        """The (N, U) matrix.

        Raises
        ------
        ValueError
            When some rows were never filled.
        """
        missing = int((~self.filled).sum())
        if missing:
            raise ValueError(f"{missing} of {self.images} images have no summary yet")
        return self.values

    def state_dict(self) -> dict[str, Any]:
        """The matrix and filled rows (on the CPU) and the shape and options."""
        return {"values": self.values.cpu(), "filled": self.filled.cpu(), "images": self.images,
                "units": self.units, "pool": self.pool, "tokens": self.tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`.

        Raises
        ------
        ValueError
            When the saved shape or options differ.
        """
        mine = (self.images, self.units, self.pool, self.tokens)
        saved = (state["images"], state["units"], state["pool"], state["tokens"])
        if saved != mine:
            raise ValueError(f"saved UnitSummary is {saved}, this one {mine}")
        self.values = state["values"].to(self.values.device)
        self.filled = state["filled"].to(self.filled.device)
