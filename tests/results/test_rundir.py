"""The run directory: names that stay inside it, label tables of several methods."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import IDENTITY, square_concepts
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import netdissect
from netdissect.errors import ConfigError
from netdissect.paths import decode_name, encode_name
from netdissect.results import write_labels


@given(st.text(max_size=40))
def test_encoded_names_are_one_safe_component_and_decode_back(name):
    enc = encode_name(name)
    assert decode_name(enc) == name
    assert "/" not in enc and "\\" not in enc and "\x00" not in enc
    assert enc not in ("", ".", "..") and not enc.startswith(".")
    base = Path("/run/layers")
    assert (base / enc).resolve().parent == base


def test_plain_layer_names_are_kept():
    for name in ("layer4", "blocks.5", "features.10", "conv_head", "a-b"):
        assert encode_name(name) == name


class PathNamed(nn.Module):
    """A model whose layer's name looks like an absolute path."""

    def __init__(self):
        super().__init__()
        conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[0, 0] = 1.0
        self.add_module("/tmp/escape", conv)

    def forward(self, x):
        return getattr(self, "/tmp/escape")(x)


def test_a_layer_named_like_a_path_stays_inside_the_run(tmp_path):
    run = tmp_path / "run"
    result = netdissect.dissect(PathNamed(), square_concepts(), layers=["/tmp/escape"], out=run, preprocess=IDENTITY,
                                num_workers=0, progress=False, batch_size=4)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(run in p.parents for p in files)
    assert result.layer_dir("/tmp/escape") == run / "layers" / "%2Ftmp%2Fescape"
    assert (result.layer_dir("/tmp/escape") / "tally.csv").is_file()
    assert not Path("/tmp/escape").exists()
    assert result.labels["layer"].tolist()[0] == "/tmp/escape"
    index = result.report(progress=False)
    html = index.read_text()
    pages = [p for p in (run / "report").glob("layer-*.html")]
    assert len(pages) == 1 and pages[0].name in html  # the report links to its layer page
    assert all(run in p.parents for p in tmp_path.rglob("*") if p.is_file())


def test_label_tables_of_several_methods(tmp_path):
    run = tmp_path / "run"
    result = netdissect.dissect(PathNamed(), square_concepts(), layers=["/tmp/escape"], out=run, preprocess=IDENTITY,
                                num_workers=0, progress=False, batch_size=4)
    assert result.label_methods() == ["iou"]
    words = pd.DataFrame({"layer": ["/tmp/escape"] * 2, "unit": [1, 2], "label": ["red", "007"], "score": [0.9, 0.1]})
    path = write_labels(run, "clip/soft_wpmi", words)
    assert path.parent == run / "labels"
    again = netdissect.Dissection.load(run)
    assert again.label_methods() == ["iou", "clip/soft_wpmi"]
    table = again.label_table("clip/soft_wpmi")
    assert table["label"].tolist() == ["red", "007"] and table["unit"].tolist() == [1, 2]
    assert again.label_table("iou").equals(again.labels)
    with pytest.raises(ConfigError, match="no labels from method 'words'"):
        again.label_table("words")
    with pytest.raises(ValueError, match="lacks columns"):
        write_labels(run, "bad", words.drop(columns=["score"]))
