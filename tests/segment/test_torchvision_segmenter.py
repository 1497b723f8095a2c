"""torchvision segmentation models as segmenters, with random weights (nothing is downloaded)."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from netdissect.errors import ConfigError, ModelError
from netdissect.segment import ModuleSegmenter, load_segmenter
from netdissect.segment.torchvision import VOC_CLASSES, segmentation_models, torchvision_segmenter

MODELS = [
    "lraspp_mobilenet_v3_large",
    "deeplabv3_mobilenet_v3_large",
    "fcn_resnet50",
    "deeplabv3_resnet50",
    "fcn_resnet101",
    "deeplabv3_resnet101",
]


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch, tmp_path):
    """Fail any attempt to fetch weights, and keep torch's cache out of the user's home."""
    import torchvision.models._api

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError(f"test: no network ({url})")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def _images(n=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_the_six_models_are_known():
    assert set(MODELS) <= set(segmentation_models())


@pytest.mark.parametrize(
    "name", [pytest.param(m, marks=pytest.mark.slow) if "101" in m else m for m in MODELS]
)
def test_random_weights_give_voc_labels(name):
    state = torch.random.get_rng_state()
    seg = load_segmenter(f"torchvision:{name}")
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone
    assert isinstance(seg, ModuleSegmenter)
    assert not seg.module.training
    assert seg.spec() == f"torchvision:{name}"
    assert seg.concepts.names()[1:] == list(VOC_CLASSES[1:])
    assert seg.concepts.categories == ("object",)
    assert seg.label_size((64, 64)) == (16, 16) and seg.label_size((224, 224)) == (56, 56)
    out = seg.segment(_images())
    assert out.pixel_labels.shape == (2, 1, 16, 16)
    assert out.pixel_labels.dtype == torch.int64
    assert 0 <= out.pixel_labels.min() and out.pixel_labels.max() <= 20
    assert out.image_labels.shape == (2, 1) and not out.image_labels.any()


def test_random_weights_are_reproducible():
    a = load_segmenter("torchvision:lraspp_mobilenet_v3_large?size=8")
    b = torchvision_segmenter("lraspp_mobilenet_v3_large", size=8)
    assert a.fingerprint() == b.fingerprint()
    images = _images(seed=3)
    assert torch.equal(a.segment(images).pixel_labels, b.segment(images).pixel_labels)
    assert a.segment(images).pixel_labels.shape == (2, 1, 8, 8)
    assert a.spec() == "torchvision:lraspp_mobilenet_v3_large?size=8x8"


def test_labels_follow_the_largest_logit():
    seg = load_segmenter("torchvision:lraspp_mobilenet_v3_large")
    images = _images(seed=1)
    logits = seg.logits(images)
    assert logits.shape == (2, 21, 16, 16)
    assert torch.equal(seg.segment(images).pixel_labels[:, 0], logits.argmax(1))  # class i -> label i


def test_download_failure_suggests_a_weights_file():
    with pytest.raises(ModelError) as err:
        load_segmenter("torchvision:lraspp_mobilenet_v3_large:DEFAULT")
    msg = str(err.value)
    assert "could not download" in msg and "--weights FILE" in msg and "COCO_WITH_VOC_LABELS_V1" in msg


def test_weights_file(tmp_path):
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = torchvision.models.get_model(
            "lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=21
        )
    path = tmp_path / "lraspp.pt"
    torch.save(model.state_dict(), path)
    seg = load_segmenter("torchvision:lraspp_mobilenet_v3_large", weights=path)
    for key, value in model.state_dict().items():
        assert torch.equal(seg.module.state_dict()[key], value), key
    assert seg.spec() == f"torchvision:lraspp_mobilenet_v3_large?weights={path.resolve()}"
    assert load_segmenter(seg.spec()).fingerprint() == seg.fingerprint()
    assert seg.fingerprint() != load_segmenter("torchvision:lraspp_mobilenet_v3_large").fingerprint()
    # with a weights enum name as well: the enum names the classes and nothing is downloaded
    named = load_segmenter("torchvision:lraspp_mobilenet_v3_large:DEFAULT", weights=path)
    assert named.concepts.names()[1:] == list(VOC_CLASSES[1:])
    assert named.spec().startswith("torchvision:lraspp_mobilenet_v3_large:DEFAULT?weights=")
    with pytest.raises(ConfigError, match="weights given twice"):
        load_segmenter(f"torchvision:lraspp_mobilenet_v3_large?weights={path}", weights=path)


def test_weights_file_with_an_auxiliary_classifier(tmp_path):
    import torchvision

    # torchvision's own checkpoints carry aux_classifier.* tensors
    model = torchvision.models.get_model(
        "deeplabv3_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=21, aux_loss=True
    )
    path = tmp_path / "deeplab.pt"
    torch.save(model.state_dict(), path)
    seg = load_segmenter("torchvision:deeplabv3_mobilenet_v3_large", weights=path)
    assert seg.segment(_images(1)).pixel_labels.shape == (1, 1, 16, 16)


def test_weights_file_with_other_classes(tmp_path):
    import torchvision

    model = torchvision.models.get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None,
                                         num_classes=5)
    path = tmp_path / "five.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ModelError, match="has 5 classes.*module:package.module:factory"):
        load_segmenter("torchvision:lraspp_mobilenet_v3_large", weights=path)


def test_weights_file_that_does_not_fit(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"classifier.high_classifier.weight": torch.zeros(21, 128, 1, 1)}, path)
    with pytest.raises(ModelError, match="does not fit"):
        load_segmenter("torchvision:lraspp_mobilenet_v3_large", weights=path)
