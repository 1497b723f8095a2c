"""Small hand-made models and data sets with known answers."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from netdissect.data.memory import ArrayConcepts
from netdissect.data.protocol import Concept, ConceptTable
from netdissect.models import LoadedModel, Preprocess

IDENTITY = Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def square_concepts(n: int = 12, size: int = 16, seed: int = 0) -> ArrayConcepts:
    """Images with a red square (concept 'square', object) and a blue disc-free background.

    Layer 0 of the labels marks the square (1); layer 1 marks 'sky' (2) on the
    top half of the background.  Images with an even index carry the scene
    label 'even-s' (3).  Label size equals image size.
    """
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    labels = np.zeros((n, 2, size, size), dtype=np.int32)
    for i in range(n):
        s = int(rng.integers(3, size // 2))
        y, x = rng.integers(0, size - s, size=2)
        images[i, y : y + s, x : x + s, 0] = 255
        labels[i, 0, y : y + s, x : x + s] = 1
        sky = np.zeros((size, size), dtype=bool)
        sky[: size // 2] = True
        sky[y : y + s, x : x + s] = False
        labels[i, 1][sky] = 2
        images[i, ..., 2][sky] = 128
    table = ConceptTable(
        [Concept(1, "square", "object"), Concept(2, "sky", "object"), Concept(3, "even-s", "scene")],
        ["object", "scene"],
    )
    image_labels = [[3] if i % 2 == 0 else [] for i in range(n)]
    return ArrayConcepts(images, labels, table, image_labels, name="squares")


class RedDetector(nn.Module):
    """unit 0 = red channel (fires exactly on the square); unit 1 = constant plus a ramp (fires everywhere)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.bias.zero_()
            self.features.weight[0, 0] = 1.0
            self.features.bias[1] = 1.0

    def forward(self, x):
        f = self.features(x)
        ramp = torch.linspace(0, 1e-3, f.shape[-1] * f.shape[-2], device=x.device).view(1, f.shape[-2], f.shape[-1])
        f = torch.cat([f[:, :1], f[:, 1:] + ramp], 1)
        return f.mean((2, 3))


def red_model() -> LoadedModel:
    return LoadedModel(RedDetector().eval(), IDENTITY, "tests:RedDetector")
