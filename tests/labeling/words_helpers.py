"""A planted image-text model, planted units and a probe of one-colour images with known concepts."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from netdissect.data.memory import ArrayConcepts
from netdissect.data.protocol import Concept, ConceptTable
from netdissect.errors import ConfigError
from netdissect.models import LoadedModel, Preprocess

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0)}
WORDS = list(COLOURS)
IDENTITY = Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def colour_probe(per_concept: int = 60, size: int = 8, seed: int = 0) -> tuple[ArrayConcepts, np.ndarray]:
    """Images filled with one colour at a random brightness, interleaved; returns the data and each image's concept.

    Concept names carry Broden's colour suffix (``red-c``), as a Broden
    colour concept would.
    """
    rng = np.random.default_rng(seed)
    n = per_concept * len(WORDS)
    concept = np.arange(n) % len(WORDS)
    rng.shuffle(concept)
    bright = rng.uniform(0.6, 1.0, size=n)
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        rgb = np.array(COLOURS[WORDS[concept[i]]]) * bright[i]
        images[i] = np.round(255 * rgb).astype(np.uint8)
    table = ConceptTable([Concept(k + 1, f"{w}-c", "color") for k, w in enumerate(WORDS)], ["color"])
    labels = np.zeros((n, 1, size, size), dtype=np.int32)
    labels[:, 0] = (concept + 1)[:, None, None]
    return ArrayConcepts(images, labels, table, name="colours"), concept


class PlantedImageText:
    """Embeds an image as how strongly it shows each of the four colours; a word as its colour's axis.

    Image embedding (D=4): red = R - G, green = G - R, blue = B, yellow =
    min(R, G), each clipped at 0, plus 0.01 (so no embedding is zero).
    """

    def __init__(self):
        self.vocabulary = list(WORDS)
        self.calls = 0

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        x = images.float().mean(dim=(2, 3)) / 255
        r, g, b = x[:, 0], x[:, 1], x[:, 2]
        e = torch.stack([r - g, g - r, b, torch.minimum(r, g)], 1).clamp_min(0)
        return e + 0.01

    def encode_text(self, words):
        rows = []
        for w in words:
            if w not in WORDS:
                raise ConfigError(f"word {w!r} is not in the planted vocabulary")
            rows.append(torch.nn.functional.one_hot(torch.tensor(WORDS.index(w)), len(WORDS)).float())
        return torch.stack(rows)

    def to(self, device):
        return self

    def spec(self):
        return "tests:planted-image-text"

    def fingerprint(self):
        return hashlib.sha256(b"planted-image-text").hexdigest()


class ColourUnits(nn.Module):
    """``features``: four conv units, unit k fires (its image's brightness) exactly on the images of colour k.

    ``pool``: their spatial mean; ``fc``: a linear layer copying them (a
    final layer with one unit per colour).
    """

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 4, 1)
        w = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.5]])
        with torch.no_grad():
            self.features.weight.copy_(w.view(4, 3, 1, 1))
            self.features.bias.copy_(torch.tensor([0.0, 0.0, 0.0, -1.0]))  # yellow: R + G - 1 > 0 only on yellow
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 4)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(4))
            self.fc.bias.zero_()

    def forward(self, x):
        f = self.relu(self.features(x))
        return self.fc(f.mean(dim=(2, 3)))


def colour_model() -> LoadedModel:
    return LoadedModel(ColourUnits().eval(), IDENTITY, "tests:ColourUnits")


def colour_units() -> nn.Module:
    """ColourUnits for ``--model module:words_helpers:colour_units`` (identity preprocessing)."""
    m = ColourUnits().eval()
    m.netdissect_preprocess = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    return m
