"""open_clip plumbing with random weights (no download): preprocessing, embeddings, tokenizer, devices."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from netdissect.errors import ConfigError
from netdissect.imagetext import ImageTextModel, load_image_text
from netdissect.imagetext.openclip import OpenClipImageText, open_clip_transform
from netdissect.imagetext.transforms import ImageTransform

open_clip = pytest.importorskip("open_clip")

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TINY = "netdissect-tiny-test"


@pytest.fixture(scope="module")
def vit_b16():
    torch.manual_seed(0)
    return load_image_text("open_clip:ViT-B-16")  # the real architecture, random weights: no download


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory):
    """A registered tiny open_clip architecture (OpenAI tokenizer, 32-pixel images)."""
    d = tmp_path_factory.mktemp("open_clip_cfg")
    (d / f"{TINY}.json").write_text(json.dumps({
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }))
    open_clip.add_model_config(d)
    return TINY


def random_images(n=2, h=300, w=260, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g)


def test_vit_b16_spec_transform_and_shapes(vit_b16):
    m = vit_b16
    assert isinstance(m, ImageTextModel) and isinstance(m, OpenClipImageText)
    assert m.spec() == "open_clip:ViT-B-16" and m.vocabulary is None
    assert m.transform == ImageTransform(224, (224, 224), OPENAI_MEAN, OPENAI_STD, "bicubic", "shortest")
    img = m.encode_images(random_images(1))
    txt = m.encode_text(["red", "great white shark"])
    assert img.shape == (1, 512) and txt.shape == (2, 512)
    assert img.dtype == txt.dtype == torch.float32 and torch.isfinite(img).all() and torch.isfinite(txt).all()
    assert m.encode_text([]).shape == (0, 512)


def test_vit_b16_images_match_open_clips_own_pil_preprocessing(vit_b16):
    cfg = vit_b16.model.visual.preprocess_cfg
    preprocess = open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                           resize_mode=cfg["resize_mode"], interpolation=cfg["interpolation"])
    x = random_images(1, 180, 240, seed=1)
    x = F.interpolate(x.float(), scale_factor=0.25).round().byte()  # smooth, photo-like
    x = F.interpolate(x.float(), size=(180, 240), mode="bilinear").round().byte()
    pil = Image.fromarray(x[0].permute(1, 2, 0).numpy())
    ref_input = preprocess(pil)[None]
    ours_input = vit_b16.transform(x)
    assert ours_input.shape == ref_input.shape == (1, 3, 224, 224)
    assert (ours_input - ref_input).abs().mean() < 0.02  # about one grey level in normalised units
    with torch.no_grad():
        ref = vit_b16.model.encode_image(ref_input)
    assert F.cosine_similarity(vit_b16.encode_images(x), ref).item() > 0.999


def test_vit_b16_text_is_deterministic_and_batch_independent(vit_b16):
    tokens = vit_b16.tokenizer(["red"])
    assert tokens[0, :3].tolist() == [49406, 736, 49407]  # the bundled BPE vocabulary, offline
    a = vit_b16.encode_text(["red", "red"])
    assert torch.equal(vit_b16.encode_text(["red", "red"]), a)  # the same on every call
    assert torch.allclose(a[0], a[1], atol=1e-6)  # rows of one batch: equal up to float rounding
    b = vit_b16.encode_text(["a long phrase about a red house by the sea", "red"])
    assert torch.allclose(a[0], b[1], atol=1e-5)
    with pytest.raises(ConfigError, match="sequence of strings"):
        vit_b16.encode_text("red")


def test_tiny_arch_device_moves_text_batches_and_local_weights(tiny_arch, tmp_path):
    torch.manual_seed(1)
    m = load_image_text(f"open_clip:{tiny_arch}")
    assert m.to("cpu") is m and m.device.type == "cpu"
    assert m.transform.crop == (32, 32) and m.transform.resize == 32
    words = [f"word {i}" for i in range(7)]
    full = m.encode_text(words)
    m.text_batch_size = 3
    assert torch.allclose(m.encode_text(words), full, atol=1e-6)
    x = random_images(3, 40, 50)
    emb = m.encode_images(x)
    assert emb.shape == (3, 32) and emb.device.type == "cpu"
    path = tmp_path / "tiny.pt"
    torch.save(m.model.state_dict(), path)
    again = load_image_text(f"open_clip:{tiny_arch}", weights=path)
    assert again.spec() == f"open_clip:{tiny_arch}?weights={path}"
    assert torch.allclose(again.encode_images(x), emb, atol=1e-6)
    assert again.fingerprint() == m.fingerprint()
    torch.manual_seed(2)
    assert load_image_text(f"open_clip:{tiny_arch}").fingerprint() != m.fingerprint()
    if torch.cuda.is_available():
        m.to("cuda")
        assert m.encode_images(x).device.type == "cuda"
        assert torch.allclose(m.encode_images(x).cpu(), emb, atol=1e-3)


def test_open_clip_spec_errors_need_no_download():
    with pytest.raises(ConfigError, match=r"no architecture 'ViT-B-17'.*did you mean"):
        load_image_text("open_clip:ViT-B-17:openai")
    with pytest.raises(ConfigError, match=r"no pretrained weights 'opena'.*openai"):
        load_image_text("open_clip:ViT-B-16:opena")
    with pytest.raises(ConfigError, match="needs an architecture"):
        load_image_text("open_clip:")


def test_transform_of_other_resize_modes():
    class Visual:
        preprocess_cfg = {"size": (224, 224), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bilinear",
                          "resize_mode": "squash"}

    class Model:
        visual = Visual()

    assert open_clip_transform(Model()) == ImageTransform((224, 224), None, (0.5,) * 3, (0.5,) * 3, "bilinear",
                                                          "squash")
    Visual.preprocess_cfg = dict(Visual.preprocess_cfg, resize_mode="longest", fill_color=3)
    t = open_clip_transform(Model())
    assert (t.mode, t.fill) == ("longest", 3)
    assert t(torch.zeros(1, 3, 100, 50, dtype=torch.uint8)).shape == (1, 3, 224, 224)
    assert np.isfinite(t(torch.zeros(1, 3, 100, 50, dtype=torch.uint8)).numpy()).all()
