"""The project's own image-text model: shipped weights, vocabulary rules, and real answers on synthetic scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netdissect.data.synthetic import NUMBER, SyntheticConcepts
from netdissect.errors import ConfigError, ModelError
from netdissect.imagetext import ImageTextModel, load_image_text
from netdissect.imagetext.small import (
    SyntheticClip,
    SyntheticClipImageText,
    WordTokenizer,
    clip_loss,
    label_words,
    save_synthetic_clip,
    shipped_weights,
    synthetic_caption,
    vocabulary_words,
)


@pytest.fixture(scope="module")
def model():
    return load_image_text("synthetic_clip")


@pytest.fixture(scope="module")
def scenes():
    """Held-out scenes (seed 7: training used seeds 101-103) at 112 pixels, with their labels."""
    data = SyntheticConcepts(n=160, seed=7, size=112)
    samples = [data[i] for i in range(len(data))]
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2)
    return images, samples


def auc(scores, positive):
    pos, neg = scores[positive], scores[~positive]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def test_loads_from_the_package(model):
    assert isinstance(model, ImageTextModel) and isinstance(model, SyntheticClipImageText)
    assert model.spec() == "synthetic_clip"
    assert model.vocabulary == vocabulary_words() and len(model.vocabulary) == 52
    path = shipped_weights()
    assert path.is_file() and path.stat().st_size < 3_000_000
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}
        assert "training" in f.metadata()
    assert model.fingerprint() == load_image_text("synthetic_clip").fingerprint()


def test_separates_red_from_blue_scenes(model, scenes):
    images, samples = scenes
    colour = np.stack([s.pixel_labels[0] for s in samples])  # the colour layer
    red = (colour == NUMBER["red-c"]).mean((1, 2))
    blue = (colour == NUMBER["blue-c"]).mean((1, 2))
    emb = F.normalize(model.encode_images(images), dim=1)
    words = F.normalize(model.encode_text(["red", "blue"]), dim=1)
    sim = (emb @ words.T).numpy()
    redder = sim[:, 0] - sim[:, 1]
    # scenes with some red and less blue against scenes with much blue and no red
    red_scenes, blue_scenes = (red > 0.02) & (blue < red), (blue > 0.2) & (red == 0)
    assert red_scenes.sum() >= 10 and blue_scenes.sum() >= 30
    both = red_scenes | blue_scenes
    assert auc(redder[both], red_scenes[both]) > 0.95
    assert redder[red_scenes].min() > np.median(redder[blue_scenes])
    # and each word ranks the scenes that carry it above those that do not
    assert auc(sim[:, 0], red > 0) > 0.85 and auc(sim[:, 1], blue > 0) > 0.85


def test_ranks_scenes_and_objects(model, scenes):
    images, samples = scenes
    emb = F.normalize(model.encode_images(images), dim=1)
    words = ["night", "beach", "room", "house", "car", "window", "wheel"]
    sim = (emb @ F.normalize(model.encode_text(words), dim=1).T).numpy()
    for j, w in enumerate(words):
        present = np.array([NUMBER.get(w, NUMBER.get(w + "-s")) in set(np.unique(s.pixel_labels)) | set(
            s.image_labels.tolist()) for s in samples])
        assert auc(sim[:, j], present) > 0.85, w


def test_any_image_size_and_device(model, scenes):
    images, _ = scenes
    big = F.interpolate(images[:4].float(), size=(224, 224), mode="bilinear").round().byte()
    a, b = model.encode_images(images[:4]), model.encode_images(big)
    assert a.shape == b.shape == (4, 128) and a.dtype == torch.float32
    assert F.cosine_similarity(a, b).min() > 0.8  # the same scenes at another size
    assert model.to("cpu") is model and model.encode_text(["red"]).device.type == "cpu"


def test_vocabulary_rules(model):
    t = model.tokenizer
    red = model.encode_text(["red"])
    assert torch.equal(model.encode_text(["red-c"]), red)  # the synthetic data set's concept names
    assert torch.equal(model.encode_text(["beach-s"]), model.encode_text(["beach"]))
    assert t("Windows") == t("window") and t("gray") == t("grey") and t("checkered") == t("chequered")
    assert t("a red house with a door") == [t.index["red"], t.index["house"], t.index["door"]]
    assert not torch.equal(model.encode_text(["red house"]), red)
    assert torch.equal(model.encode_text(["red", "red"])[0], model.encode_text(["red", "red"])[1])
    with pytest.raises(ConfigError, match=r"word 'dog' .*outside the vocabulary"):
        model.encode_text(["red", "dog"])
    with pytest.raises(ConfigError, match="did you mean 'house'"):
        model.encode_text(["hose"])
    with pytest.raises(ConfigError, match="no concept word"):
        model.encode_text(["the"])
    with pytest.raises(ConfigError, match="sequence of strings"):
        model.encode_text("red")
    assert model.encode_text([]).shape == (0, 128)
    with pytest.raises(ConfigError, match="repeated"):
        WordTokenizer(["a", "a"])


def test_other_weights_by_spec(tmp_path):
    torch.manual_seed(0)
    net = SyntheticClip(len(vocabulary_words()), dim=8, width=4, text_width=8)
    path = tmp_path / "w.safetensors"
    save_synthetic_clip(net, vocabulary_words(), path, note="test")
    m = load_image_text(f"synthetic_clip?weights={path}")
    assert m.spec() == f"synthetic_clip?weights={path.resolve()}"
    assert m.encode_text(["red", "sky"]).shape == (2, 8)
    assert m.fingerprint() != load_image_text("synthetic_clip").fingerprint()
    assert load_image_text(m.spec()).fingerprint() == m.fingerprint()
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(ModelError, match="cannot be read"):
        load_image_text("synthetic_clip", weights=tmp_path / "bad.safetensors")
    with pytest.raises(ModelError, match="not found"):
        load_image_text("synthetic_clip", weights=tmp_path / "missing.safetensors")


def test_captions_name_what_the_labels_hold():
    s = SyntheticConcepts(n=3, seed=0, size=96)[2]
    caption, words = synthetic_caption(s.pixel_labels, s.image_labels)
    scene = label_words(s.image_labels)[0]
    assert caption.startswith(f"a {scene}: ") and scene in words
    assert words <= set(vocabulary_words())
    tok = WordTokenizer(vocabulary_words())
    assert {tok.words[i] for i in tok(caption)} == words  # the caption's words are its concept words
    every = set(label_words(np.unique(s.pixel_labels))) | {scene}
    assert words <= every and synthetic_caption(s.pixel_labels, s.image_labels, 0.0)[1] == every


def test_clip_loss_prefers_aligned_pairs():
    torch.manual_seed(0)
    x = torch.randn(8, 16)
    match = torch.eye(8, dtype=torch.bool)
    aligned = clip_loss(x, x, match, torch.tensor(np.log(10.0)))
    shuffled = clip_loss(x, x.roll(1, 0), match, torch.tensor(np.log(10.0)))
    assert aligned < shuffled
    match[0, 1] = True  # a second positive halves the target of row 0
    assert clip_loss(x, x, match, torch.tensor(np.log(10.0))) > aligned
