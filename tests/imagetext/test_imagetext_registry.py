"""The image-text registry: specs, options, errors, lazy imports; tensor preprocessing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from imagetext_helpers import IMAGENET, needs_imagenet
from PIL import Image

from netdissect.errors import ConfigError
from netdissect.imagetext import (
    ImageTextModel,
    list_image_text,
    load_image_text,
    parse_spec,
    register_image_text,
)
from netdissect.imagetext.transforms import ImageTransform, resize_center_crop


def test_kinds_are_listed():
    assert {"classifier", "open_clip", "hf", "synthetic_clip"} <= set(list_image_text())


def test_unknown_kind_names_close_matches():
    with pytest.raises(ConfigError, match=r"unknown kind 'open_clp'.*did you mean 'open_clip'"):
        load_image_text("open_clp:ViT-B-16:openai")
    with pytest.raises(ConfigError, match="unknown kind 'synthetic_clp'.*'synthetic_clip'"):
        load_image_text("synthetic_clp")


def test_bad_specs_and_options():
    with pytest.raises(ConfigError, match="non-empty string"):
        load_image_text("")
    with pytest.raises(ConfigError, match="must be a spec string or an ImageTextModel"):
        load_image_text(42)
    with pytest.raises(ConfigError, match="key=value"):
        load_image_text("synthetic_clip?weights")
    with pytest.raises(ConfigError, match="given twice"):
        load_image_text("classifier:efficientnet_lite0?classes=a&classes=b")
    with pytest.raises(ConfigError, match=r"no option 'clases'.*did you mean 'classes'"):
        load_image_text("classifier:efficientnet_lite0?clases=x.txt")
    with pytest.raises(ConfigError, match="nothing after the name"):
        load_image_text("synthetic_clip:big")
    with pytest.raises(ConfigError, match="names weights 'a.safetensors' and weights='b.safetensors'"):
        load_image_text("synthetic_clip?weights=a.safetensors", weights="b.safetensors")
    with pytest.raises(ConfigError, match="no weights file"):
        load_image_text("hf:openai/clip-vit-base-patch16", weights="x.bin")
    assert parse_spec("classifier:timm:resnet18:pretrained?classes=c.txt&weights=w.pt") == (
        "classifier", "timm:resnet18:pretrained", {"classes": "c.txt", "weights": "w.pt"})


class _Planted:
    vocabulary = ["a", "b"]

    def encode_images(self, images):
        return images.float().mean((2, 3))[:, :2]

    def encode_text(self, words):
        return torch.eye(2)[[self.vocabulary.index(w) for w in words]]

    def to(self, device):
        return self

    def spec(self):
        return "planted"

    def fingerprint(self):
        return "planted"


def test_objects_pass_through_and_new_kinds_register():
    planted = _Planted()
    assert isinstance(planted, ImageTextModel)
    assert load_image_text(planted) is planted
    with pytest.raises(ConfigError, match="weights= applies to a spec string"):
        load_image_text(planted, weights="x")
    seen = {}

    @register_image_text("planted_test_kind")
    def _load(rest, *, weights, options):
        seen.update(rest=rest, weights=weights, options=options)
        return planted

    assert load_image_text("planted_test_kind:abc?weights=w.bin&k=v") is planted
    assert seen == {"rest": "abc", "weights": "w.bin", "options": {"k": "v"}}
    assert "planted_test_kind" in list_image_text()
    with pytest.raises(ConfigError, match="without ':'"):
        register_image_text("bad:name")


def test_import_does_not_load_optional_libraries():
    code = ("import sys, netdissect.imagetext as it; it.list_image_text(); "
            "print(sorted(m for m in ('open_clip', 'transformers', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_optional_library_says_how_to_install(monkeypatch):
    from netdissect.errors import ModelError

    monkeypatch.setitem(sys.modules, "open_clip", None)  # makes `import open_clip` fail
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModelError, match=r"pip install 'netdissect\[text\]'"):
        load_image_text("open_clip:ViT-B-16:openai")
    with pytest.raises(ModelError, match=r"pip install 'netdissect\[text\]'"):
        load_image_text("hf:openai/clip-vit-base-patch16")


# -- preprocessing on tensors ------------------------------------------------------


def test_resize_center_crop_sizes_follow_torchvision():
    x = torch.randint(0, 256, (2, 3, 100, 150), dtype=torch.uint8)
    assert resize_center_crop(x, 50).shape == (2, 3, 50, 75)
    assert resize_center_crop(x, 64, 60).shape == (2, 3, 60, 60)
    assert resize_center_crop(x, 64, (60, 40)).shape == (2, 3, 60, 40)
    assert resize_center_crop(x, (32, 48), mode="squash").shape == (2, 3, 32, 48)
    assert resize_center_crop(x, 60, mode="longest").shape == (2, 3, 60, 60)
    assert resize_center_crop(x.transpose(2, 3), 50).shape == (2, 3, 75, 50)
    small = torch.zeros(1, 3, 10, 10, dtype=torch.uint8) + 7
    padded = resize_center_crop(small, 10, 14)  # a crop larger than the image pads with zeros
    assert padded.shape == (1, 3, 14, 14) and padded[..., 0, 0].eq(0).all() and padded[..., 7, 7].eq(7).all()
    with pytest.raises(ConfigError, match="uint8"):
        resize_center_crop(x.float(), 32)
    with pytest.raises(ConfigError, match=r"\(N, 3, H, W\)"):
        resize_center_crop(x[0], 32)
    with pytest.raises(ConfigError, match="resize mode"):
        resize_center_crop(x, 32, mode="fit")


@needs_imagenet
def test_tensor_recipe_matches_pil_within_a_grey_level():
    f = sorted(IMAGENET.glob("*.jpg"))[3]
    im = Image.open(f).convert("RGB")
    scale = 292 / min(im.size)
    ref = im.resize((int(im.width * scale) if im.width > im.height else 292,
                     int(im.height * scale) if im.height > im.width else 292), Image.BICUBIC)
    left, top = round((ref.width - 260) / 2), round((ref.height - 260) / 2)
    ref = np.asarray(ref.crop((left, top, left + 260, top + 260))).astype(float)
    x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None]
    ours = resize_center_crop(x, 292, 260, interpolation="bicubic")[0].permute(1, 2, 0).numpy().astype(float)
    assert np.abs(ours - ref).mean() < 1.0
    t = ImageTransform(292, 260, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    y = t(x)
    assert y.shape == (1, 3, 260, 260) and y.dtype == torch.float32
    assert torch.allclose(y, (torch.from_numpy(ours).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.25, atol=1e-5)
