"""A hand-weighted generator whose unit k paints colour k where it is active."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from netdissect.models import LoadedGenerator

#: unit k paints COLORS[k]: red, green, blue (later units paint over earlier ones); background black
COLORS = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=torch.float32) / 255
NAMES = ["red-c", "green-c", "blue-c"]


class RowFront(nn.Module):
    """z (N, 4) -> (N, 3, 4, 4): row r belongs to slot z.argsort()[r]; slots 0..2 are units, slot 3 is empty.

    A unit is 2.0 on its row and 0 elsewhere, so each unit is on exactly one row of four.
    """

    def forward(self, z):
        n = z.shape[0]
        perm = z.argsort(dim=1)
        maps = torch.zeros(n, 4, 4, 4)
        for r in range(4):
            maps[torch.arange(n), perm[:, r], r, :] = 2.0
        return maps[:, :3]


class PaintHead(nn.Module):
    """(N, 3, 4, 4) -> (N, 3, 64, 64) in [-1, 1]: unit k covers its cells with colour k, weight clamp(h/2, 0, 1).

    Units paint in order, each over the ones before (blue over green over red over black), so inserting
    red shows only on black, inserting blue shows everywhere but on blue.  Linear in h between 0 and 2,
    so soft edits have gradients.
    """

    def forward(self, h):
        on = (h / 2).clamp(0, 1).repeat_interleave(16, 2).repeat_interleave(16, 3)
        image = torch.zeros(h.shape[0], 3, 64, 64)
        for k in range(3):
            image = image + on[:, k:k + 1] * (COLORS[k].view(1, 3, 1, 1) - image)
        return image * 2 - 1


def painter() -> LoadedGenerator:
    """The painter as a chain of Sequential modules (layer ``units``; the fast split)."""
    module = nn.Sequential(OrderedDict(front=RowFront(), units=nn.Identity(), head=PaintHead()))
    return LoadedGenerator(module.eval(), (4,), (-1.0, 1.0), "tests:painter")


class _Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.front, self.units, self.head = RowFront(), nn.Identity(), PaintHead()

    def forward(self, z):
        return self.head(self.units(self.front(z)))


def wrapped_painter() -> LoadedGenerator:
    """The same painter with its own forward (no Sequential chain: the split replays from z)."""
    return LoadedGenerator(_Wrapped().eval(), (4,), (-1.0, 1.0), "tests:wrapped_painter")


def small_dcgan(seed: int = 0) -> LoadedGenerator:
    """A tiny random DCGAN-like generator: z (8,) -> (3, 16, 16), layer ``net.3`` (16x8x8)."""
    g = torch.Generator().manual_seed(seed)
    module = nn.Sequential(OrderedDict(net=nn.Sequential(
        nn.Unflatten(1, (8, 1, 1)),
        nn.ConvTranspose2d(8, 32, 4, 1, 0), nn.ReLU(),
        nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(16, 3, 4, 2, 1), nn.Tanh(),
    )))
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return LoadedGenerator(module.eval(), (8,), (-1.0, 1.0), "tests:small_dcgan")
