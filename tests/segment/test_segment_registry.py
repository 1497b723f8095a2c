"""The segmenter registry: spec parsing, accessors and error messages."""

from __future__ import annotations

import pytest
import torch

import netdissect.segment as segment
from netdissect.errors import ConfigError, ModelError
from netdissect.segment import (
    ColorSegmenter,
    Segmentation,
    Segmenter,
    list_segmenters,
    load_segmenter,
    register_segmenter,
)


def test_builtin_names_are_listed():
    assert {"color", "oracle", "torchvision", "module"} <= set(list_segmenters())
    assert list_segmenters() == sorted(list_segmenters())


def test_no_public_mutable_registry():
    public = {k: v for k, v in vars(segment).items() if not k.startswith("_")}
    assert not any(isinstance(v, dict) for v in public.values())


def test_importing_does_not_import_torchvision():
    import subprocess
    import sys

    code = "import sys, netdissect.segment; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_unknown_spec_names_allowed_and_close_matches():
    with pytest.raises(ConfigError) as err:
        load_segmenter("colour")
    msg = str(err.value)
    assert "'colour'" in msg
    for name in ("color", "oracle", "torchvision:NAME[:WEIGHTS]", "module:package.module:factory"):
        assert name in msg
    assert "did you mean 'color'" in msg


@pytest.mark.parametrize(
    "spec, words",
    [
        ("", ["non-empty"]),
        ("color?siz=56", ["'color?siz=56'", "siz", "allowed: size", "did you mean 'size'"]),
        ("color?size", ["KEY=VALUE"]),
        ("color?size=1&size=2", ["given twice"]),
        ("color?size=0", ["size '0'", "positive integer"]),
        ("color?size=ax3", ["size 'ax3'"]),
        ("color:big", ["takes no argument"]),
        ("oracle", ["dataset="]),
        ("oracle?size=3", ["unknown option(s) size", "allowed: none"]),
        ("torchvision:", ["torchvision:NAME[:WEIGHTS]"]),
        ("torchvision:deeplab_resnet50", ["'deeplab_resnet50'", "deeplabv3_resnet50", "did you mean"]),
        ("torchvision:fcn_resnet50:IMAGENET", ["'IMAGENET'", "DEFAULT", "COCO_WITH_VOC_LABELS_V1"]),
        ("torchvision:fcn_resnet50?colour=1", ["unknown option(s) colour", "size, weights"]),
        ("module:nodots", ["module:package.module:factory"]),
    ],
)
def test_bad_specs_raise_config_error(spec, words):
    with pytest.raises(ConfigError) as err:
        load_segmenter(spec)
    for word in words:
        assert word in str(err.value)


def test_weights_for_a_segmenter_without_weights():
    with pytest.raises(ConfigError, match="takes no weights"):
        load_segmenter("color", weights="model.pt")


def test_module_import_errors_are_model_errors():
    with pytest.raises(ModelError, match="cannot import 'no_such_package_xyz.mod'"):
        load_segmenter("module:no_such_package_xyz.mod:make")


def test_segmenter_objects_pass_through():
    seg = ColorSegmenter()
    assert load_segmenter(seg) is seg
    with pytest.raises(ConfigError, match="cannot be applied"):
        load_segmenter(seg, weights="w.pt")
    with pytest.raises(ConfigError, match="got int"):
        load_segmenter(3)


def test_options_and_size_spec_round_trip():
    seg = load_segmenter("color?size=56")
    assert seg.label_size((224, 224)) == (56, 56)
    assert seg.spec() == "color?size=56x56"
    again = load_segmenter(seg.spec())
    assert again.label_size((10, 10)) == (56, 56)
    assert load_segmenter("color?size=20x30").label_size((224, 224)) == (20, 30)
    assert load_segmenter("color").spec() == "color"


class _Constant:
    """A minimal segmenter: every pixel is concept 1."""

    def __init__(self, value: int = 1):
        from netdissect.data.protocol import Concept, ConceptTable

        self.concepts = ConceptTable([Concept(1, "thing", "object")], ["object"])
        self.value = value

    def label_size(self, image_size):
        return tuple(image_size)

    def segment(self, images, indices=None):
        n, _, h, w = images.shape
        return Segmentation(torch.full((n, 1, h, w), self.value), torch.zeros((n, 1), dtype=torch.int64))

    def to(self, device):
        return self

    def spec(self):
        return "test-constant"

    def fingerprint(self):
        return "constant"


def test_register_a_segmenter():
    @register_segmenter("test-constant")
    def _make(arg, options, *, dataset=None, weights=None, spec=""):
        return _Constant(int(options.get("value", 1)))

    assert "test-constant" in list_segmenters()
    seg = load_segmenter("test-constant?value=1")
    assert isinstance(seg, Segmenter)
    out = seg.segment(torch.zeros((2, 3, 4, 5), dtype=torch.uint8))
    assert out.pixel_labels.shape == (2, 1, 4, 5)
    # registering the same function again is harmless; another one under the same name is not
    register_segmenter("test-constant")(_make)
    with pytest.raises(ConfigError, match="already registered"):
        register_segmenter("test-constant")(lambda *a, **k: None)


@pytest.mark.parametrize("name", ["", "a:b", "x?y", "has space"])
def test_register_rejects_bad_names(name):
    with pytest.raises(ConfigError, match="segmenter name"):
        register_segmenter(name)
