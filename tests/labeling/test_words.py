"""Vocabularies, label tables, evaluation and agreement with IoU labels."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from netdissect.errors import ConfigError
from netdissect.labeling.words import (
    STOP_WORDS,
    Vocabulary,
    agreement,
    concept_activations,
    english_words,
    evaluate,
    load_vocabulary,
    matches,
    normal,
    strip_suffix,
    word_table,
)


def test_english_words_are_common_alphabetic_and_not_stop_words():
    words = english_words(2000)
    assert len(words) == 2000 == len(set(words))
    assert all(re.fullmatch("[a-z]{3,}", w) for w in words)
    assert not set(words) & STOP_WORDS
    assert {"time", "people", "water", "house"} <= set(words)
    assert "the" not in words and "and" not in words
    vocab = load_vocabulary("wordfreq:300")
    assert vocab.spec == "wordfreq:300" and vocab.words == words[:300]
    assert load_vocabulary("20k").spec == "wordfreq:20000" and len(load_vocabulary("20k")) == 20000


def test_vocabulary_kinds(tmp_path):
    synthetic = load_vocabulary("synthetic")
    assert len(synthetic) == 52 and synthetic.words[0] == "black" and "red" in synthetic.words
    assert synthetic.concepts[synthetic.words.index("beach")] == "beach-s"
    imagenet = load_vocabulary("imagenet")
    assert imagenet.words[:2] == ["tench", "goldfish"] and len(imagenet) == 1000  # torchvision's names are distinct
    places = tmp_path / "categories.txt"
    places.write_text("/a/airfield 0\n/a/apartment_building/outdoor 1\n\n")
    assert load_vocabulary(f"classes:{places}").words == ["airfield", "apartment building/outdoor"]
    own = tmp_path / "mine.txt"
    own.write_text("# my words\nred car\n striped \nred car\n")
    for spec in (str(own), f"words:{own}"):
        assert load_vocabulary(spec).words == ["red car", "striped"]
    assert load_vocabulary(["a", "b", "a"]).words == ["a", "b"]
    with pytest.raises(ConfigError, match="not a vocabulary.*wordfreq"):
        load_vocabulary("no-such-thing")
    with pytest.raises(ConfigError, match="wordfreq:N"):
        load_vocabulary("wordfreq:many")
    with pytest.raises(ConfigError, match="closed-vocabulary"):
        load_vocabulary("model", object())
    assert Vocabulary("x", ["a"]).fingerprint() != Vocabulary("x", ["b"]).fingerprint()


def test_suffixes_and_normal_forms():
    assert strip_suffix("red-c") == "red" and strip_suffix("beach-s") == "beach"
    assert strip_suffix("t-shirt") == "t-shirt"
    assert normal("Street-S") == "street" and normal("traffic_light") == "traffic light"
    assert matches("red", "red-c") == (True, True)
    assert matches("buildings", "building") == (False, True)
    assert matches("red car", "car") == (False, True)
    assert matches("carpet", "car") == (False, False)


def test_concept_activations_are_cosines():
    e = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    p = concept_activations(e, t)
    torch.testing.assert_close(p, torch.tensor([[1.0, 0.0], [2**-0.5, 2**-0.5]]))


def test_word_table_evaluate_and_agreement():
    vocab = Vocabulary.from_names("test", ["red-c", "sky", "grass", "car"], strip=True)
    idx = np.array([[0, 1, 2], [2, 0, 1], [3, 1, 0]])
    scores = np.array([[3.0, 2.0, 1.0], [5.0, 4.0, 0.0], [1.0, 0.5, 0.2]])
    table = word_table("layer4", scores, idx, vocab)
    assert list(table.columns) == ["layer", "unit", "label", "score", "concept", "label_2", "score_2", "label_3",
                                   "score_3"]
    assert list(table["unit"]) == [1, 2, 3] and list(table["label"]) == ["red", "grass", "car"]
    assert list(table["concept"]) == ["red-c", "grass", "car"]
    m = evaluate(table, ["red", "sky", "Car"])
    assert m == {"units": 3, "top1": pytest.approx(2 / 3), "top5": 1.0}
    with pytest.raises(ConfigError, match="2 true names for 3 units"):
        evaluate(table, ["red", "sky"])
    iou = pd.DataFrame({"layer": "layer4", "unit": [1, 2, 3], "label": ["red-c", "sky", "cars"],
                        "detector": [True, True, False]})
    a = agreement(iou, table).iloc[0]
    assert a["units"] == 3 and a["detectors"] == 2 and a["others"] == 1
    assert a["detectors_equal"] == 0.5 and a["detectors_contains"] == 0.5
    assert a["others_equal"] == 0.0 and a["others_contains"] == 0.0  # "car" does not contain "cars"
