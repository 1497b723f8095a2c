"""Segmentation networks as segmenters: ModuleSegmenter and the module: spec."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

from netdissect.errors import ConfigError, ModelError
from netdissect.models import Preprocess
from netdissect.segment import ColorSegmenter, ModuleSegmenter, Segmenter, load_segmenter

IDENTITY = Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class RedBlue(nn.Module):
    """Logits: background 0.5, 'red' = the red value, 'blue' = the blue value (inputs in [0, 1])."""

    concept_names = ["background", "red", "blue"]
    netdissect_preprocess = IDENTITY

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        background = torch.full_like(x[:, :1], 0.5)
        return torch.cat([background, x[:, :1], x[:, 2:3]], dim=1) * self.scale


def _image() -> torch.Tensor:
    """(1, 3, 16, 16): left half red, right half blue, top 8 rows black."""
    img = torch.zeros((1, 3, 16, 16), dtype=torch.uint8)
    img[0, 0, 8:, :8] = 255
    img[0, 2, 8:, 8:] = 255
    return img


EXPECTED = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 2, 2], [1, 1, 2, 2]])


def test_known_labels_at_a_quarter_of_the_image_size():
    seg = ModuleSegmenter(RedBlue(), RedBlue.concept_names, preprocess=IDENTITY)
    assert isinstance(seg, Segmenter)
    assert seg.concepts.names() == ["", "red", "blue"]
    assert seg.concepts.categories == ("object",)
    assert seg.label_size((16, 16)) == (4, 4) and seg.label_size((224, 224)) == (56, 56)
    out = seg.segment(_image().repeat(2, 1, 1, 1))
    assert out.pixel_labels.shape == (2, 1, 4, 4) and out.pixel_labels.dtype == torch.int64
    assert torch.equal(out.pixel_labels[0, 0], EXPECTED) and torch.equal(out.pixel_labels[1, 0], EXPECTED)
    assert out.image_labels.shape == (2, 1) and not out.image_labels.any()


def test_fixed_size_and_mapping_output():
    class Dict(RedBlue):
        def forward(self, x):
            return {"out": super().forward(x), "aux": None}

    seg = ModuleSegmenter(Dict(), ["background", "red", "blue"], preprocess=IDENTITY, size=16)
    labels = seg.segment(_image()).pixel_labels[0, 0]
    assert labels.shape == (16, 16)
    assert torch.equal(labels[::4, ::4], EXPECTED)


def test_categories_shared_names_and_background_spellings():
    seg = ModuleSegmenter(
        RedBlue(), [None, "warm", "warm"], concept_categories=["x", "color", "color"], preprocess=IDENTITY
    )
    assert seg.concepts.names() == ["", "warm"]
    assert seg.concepts.categories == ("color",)
    assert seg.class_to_label.tolist() == [0, 1, 1]
    for background in ("", "__background__", "Background"):
        assert ModuleSegmenter(RedBlue(), [background, "r", "b"]).class_to_label.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "names, categories, words",
    [
        ("red", None, ["non-empty list"]),
        ([], None, ["non-empty list"]),
        (["background", 3, "b"], None, ["strings or None"]),
        (["background", "r", "b"], ["object"], ["1 entries for 3"]),
        (["background", "r", "r"], ["object", "object", "part"], ["different categories"]),
        (["background", None], None, ["no class other than background"]),
    ],
)
def test_bad_names(names, categories, words):
    with pytest.raises(ModelError) as err:
        ModuleSegmenter(RedBlue(), names, concept_categories=categories)
    for word in words:
        assert word in str(err.value)


def test_wrong_output_shape():
    seg = ModuleSegmenter(RedBlue(), ["background", "red", "blue", "green"])
    with pytest.raises(ModelError, match=r"logits \(N=1, C=4, h, w\), got shape \(1, 3, 16, 16\)"):
        seg.segment(_image())
    with pytest.raises(ConfigError, match="uint8"):
        seg.segment(_image().float())


FACTORIES = textwrap.dedent(
    '''
    import torch
    from torch import nn
    from netdissect.models import Preprocess
    from netdissect.segment import ColorSegmenter


    class RedBlue(nn.Module):
        concept_names = ["background", "red", "blue"]
        concept_categories = ["object", "color", "color"]

        def __init__(self, scale=1.0):
            super().__init__()
            self.scale = nn.Parameter(torch.full((), float(scale)))
            self.netdissect_preprocess = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}

        def forward(self, x):
            background = torch.full_like(x[:, :1], 0.5)
            return torch.cat([background, x[:, :1], x[:, 2:3]], dim=1) * self.scale


    def network(scale="1.0"):
        return RedBlue(float(scale))


    def nameless():
        return nn.Conv2d(3, 2, 1)


    def colours():
        return ColorSegmenter()


    def number():
        return 42
    '''
)


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "seg_factories_for_tests.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "seg_factories_for_tests"
    sys.modules.pop("seg_factories_for_tests", None)


def test_module_spec_with_a_network(factories, tmp_path):
    seg = load_segmenter(f"module:{factories}:network")
    assert isinstance(seg, ModuleSegmenter)
    assert seg.spec() == f"module:{factories}:network"
    assert seg.concepts.categories == ("color",)
    assert torch.equal(seg.segment(_image()).pixel_labels[0, 0], EXPECTED)
    assert seg.preprocess == IDENTITY
    # options: the label size, and keyword arguments of the factory
    assert load_segmenter(f"module:{factories}:network?size=8").label_size((16, 16)) == (8, 8)
    negative = load_segmenter(f"module:{factories}:network?scale=-1")
    flipped = negative.segment(_image()).pixel_labels[0, 0]
    # logits negated: background (-0.5) never wins, red pixels go to 'blue' (0 > -1) and blue ones to 'red'
    assert not (flipped == 0).any()
    assert flipped[3].tolist() == [2, 2, 1, 1]
    assert negative.fingerprint() != seg.fingerprint()
    # weights from a file
    path = tmp_path / "w.pt"
    torch.save({"scale": torch.tensor(-1.0)}, path)
    loaded = load_segmenter(f"module:{factories}:network", weights=path)
    assert loaded.module.scale.item() == -1.0
    assert "weights=" in loaded.spec()
    assert load_segmenter(loaded.spec()).fingerprint() == loaded.fingerprint()


def test_module_spec_returning_a_segmenter(factories):
    seg = load_segmenter(f"module:{factories}:colours")
    assert isinstance(seg, ColorSegmenter)
    with pytest.raises(ConfigError, match="apply only to an nn.Module"):
        load_segmenter(f"module:{factories}:colours?size=4")


@pytest.mark.parametrize(
    "factory, error, words",
    [
        ("nameless", ModelError, ["returned a Conv2d without the attribute concept_names"]),
        ("number", ModelError, ["returned int", "concept_names"]),
        ("netwrk", ModelError, ["no callable 'netwrk'", "did you mean 'network'"]),
        ("network?colour=1", ModelError, ["network(**{'colour': '1'}) failed"]),
    ],
)
def test_module_spec_errors(factories, factory, error, words):
    spec = f"module:{factories}:{factory}"
    with pytest.raises(error) as err:
        load_segmenter(spec)
    assert f"segmenter spec {spec!r}" in str(err.value)
    for word in words:
        assert word in str(err.value)
