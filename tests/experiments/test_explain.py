"""Explaining one prediction by unit contributions (TPAMI 2018, METHODS A2)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from netdissect.errors import ConfigError
from netdissect.experiments.explain import EXACT, GRADIENT, explain


class GapNet(nn.Module):
    def __init__(self, units=6, classes=5):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, units, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(units, classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class MaxNet(GapNet):
    def forward(self, x):  # a max pool head: not GAP + linear
        return self.fc(self.features(x).amax((2, 3)))


def _inputs(seed=0):
    torch.manual_seed(seed)
    image = (np.random.default_rng(seed).random((12, 12, 3)) * 255).astype(np.uint8)
    x = torch.from_numpy(image.transpose(2, 0, 1)).float()[None] / 255
    return image, x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_contributions_sum_to_logit_minus_bias(seed):
    image, x = _inputs(seed)
    model = GapNet().eval()
    labels = pd.DataFrame({"unit": range(1, 7), "label": list("abcdef"), "category": "texture",
                           "iou": np.linspace(0.1, 0.6, 6)})
    for c in range(5):
        e = explain(model, "features", x, image, class_index=c, labels=labels, top=3)
        assert e.method == EXACT
        logit = float(model(x)[0, c])
        assert e.logit == pytest.approx(logit, abs=1e-6)
        assert e.contributions.sum() == pytest.approx(logit - float(model.fc.bias[c]), abs=1e-5)
        assert e.cam.mean() == pytest.approx(logit - float(model.fc.bias[c]), abs=1e-5)
        top = e.units.iloc[0]
        assert top["unit"] == int(np.argmax(e.contributions)) + 1
        assert top["label"] == "abcdef"[top["unit"] - 1]
    assert explain(model, "features", x, image).class_index == int(model(x).argmax())


def test_other_heads_use_gradient_x_activation():
    image, x = _inputs()
    model = MaxNet().eval()
    e = explain(model, "features", x, image, class_index=1)
    assert e.method == GRADIENT
    # for a max pool head, gradient x activation is exact too (linear in the selected maxima, ReLU'd)
    assert e.contributions.sum() == pytest.approx(float(model(x)[0, 1] - model.fc.bias[1]), abs=1e-5)
    with pytest.raises(ConfigError, match="global average pool"):
        explain(model, "features", x, image, method=EXACT)


def test_bad_arguments_are_named(tmp_path):
    image, x = _inputs()
    model = GapNet().eval()
    with pytest.raises(ConfigError, match="class 9"):
        explain(model, "features", x, image, class_index=9)
    with pytest.raises(ConfigError, match="one image"):
        explain(model, "features", x.repeat(2, 1, 1, 1), image)
    with pytest.raises(ConfigError, match="6 units"):
        explain(model, "features", x, image, thresholds=np.zeros(3))
    e = explain(model, "features", x, image, thresholds=np.zeros(6))
    assert e.region(1).shape == (12, 12)
    page = e.save(tmp_path / "out")
    assert page.is_file() and (tmp_path / "out/explanation.png").is_file()
    data = json.loads((tmp_path / "out/explanation.json").read_text())
    assert data["method"] == EXACT and len(data["units"]) == 4
