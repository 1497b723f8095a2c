"""Hugging Face CLIP/SigLIP plumbing with random weights and a tokenizer built offline (no download)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from netdissect.errors import ConfigError, ModelError
from netdissect.imagetext import ImageTextModel, load_image_text
from netdissect.imagetext.hf import HFImageText, transform_from_image_processor
from netdissect.imagetext.transforms import ImageTransform

transformers = pytest.importorskip("transformers")

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
SMALL_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=49408,
                  max_position_embeddings=77)
SMALL_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                    patch_size=8)


def smooth_images(n=2, h=48, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, h // 4, w // 4), generator=g).float()
    return F.interpolate(x, size=(h, w), mode="bilinear").round().byte()


@pytest.fixture(scope="module")
def small_clip(clip_tokenizer):
    torch.manual_seed(0)
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=SMALL_TEXT, vision_config=SMALL_VISION,
                                                           projection_dim=16))
    image_processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32},
                                                      crop_size={"height": 32, "width": 32})
    processor = transformers.CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer)
    return HFImageText(model, processor, spec="hf:small-test-clip")


def test_clip_plumbing_shapes_and_transform(small_clip):
    m = small_clip
    assert isinstance(m, ImageTextModel) and m.vocabulary is None and m.spec() == "hf:small-test-clip"
    assert m.transform == ImageTransform(32, (32, 32), OPENAI_MEAN, OPENAI_STD, "bicubic", "shortest")
    img = m.encode_images(smooth_images())
    txt = m.encode_text(["red", "a dog"])
    assert img.shape == (2, 16) and txt.shape == (2, 16) and img.dtype == txt.dtype == torch.float32
    assert m.encode_text([]).shape == (0, 16)


def test_clip_images_match_the_image_processor(small_clip):
    x = smooth_images(1, 60, 45, seed=3)
    pil = Image.fromarray(x[0].permute(1, 2, 0).numpy())
    ref = small_clip_processor_pixels(small_clip, pil)
    ours = small_clip.transform(x)
    assert ours.shape == ref.shape == (1, 3, 32, 32)
    assert (ours - ref).abs().mean() < 0.03
    with torch.no_grad():
        want = small_clip.model.get_image_features(pixel_values=ref)
    want = want if isinstance(want, torch.Tensor) else want.pooler_output
    assert F.cosine_similarity(small_clip.encode_images(x), want).item() > 0.99


def small_clip_processor_pixels(m, pil):
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return torch.as_tensor(np.asarray(processor(images=pil, return_tensors="pt")["pixel_values"]))


def test_clip_text_is_deterministic_padding_independent_and_matches_open_clip_ids(small_clip):
    ids = small_clip.tokenize(["red"])["input_ids"][0].tolist()
    assert ids[:3] == [49406, 736, 49407]
    a = small_clip.encode_text(["red", "red"])
    assert torch.equal(small_clip.encode_text(["red", "red"]), a)  # the same on every call
    assert torch.allclose(a[0], a[1], atol=1e-6)  # rows of one batch: equal up to float rounding
    b = small_clip.encode_text(["a much longer phrase about a red house", "red"])  # "red" padded here
    assert torch.allclose(a[0], b[1], atol=1e-5)
    small_clip.text_batch_size = 1
    try:
        assert torch.allclose(small_clip.encode_text(["a much longer phrase about a red house", "red"]), b, atol=1e-5)
    finally:
        small_clip.text_batch_size = 256
    with pytest.raises(ConfigError, match="sequence of strings"):
        small_clip.encode_text("red")


def test_device_moves(small_clip):
    assert small_clip.to("cpu") is small_clip and small_clip.encode_text(["red"]).device.type == "cpu"
    if torch.cuda.is_available():
        x = smooth_images()
        cpu = small_clip.encode_images(x)
        small_clip.to("cuda")
        try:
            assert torch.allclose(small_clip.encode_images(x).cpu(), cpu, atol=1e-4)
            assert small_clip.encode_text(["red"]).device.type == "cuda"
        finally:
            small_clip.to("cpu")


def test_saved_model_opens_by_spec_offline(small_clip, tmp_path):
    small_clip.model.save_pretrained(tmp_path)
    transformers.CLIPProcessor(image_processor=transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=small_clip.tokenizer).save_pretrained(tmp_path)
    m = load_image_text(f"hf:{tmp_path}")
    assert m.spec() == f"hf:{tmp_path}" and m.transform == small_clip.transform
    x = smooth_images()
    assert torch.allclose(m.encode_images(x), small_clip.encode_images(x), atol=1e-5)
    assert torch.allclose(m.encode_text(["red", "blue sky"]), small_clip.encode_text(["red", "blue sky"]), atol=1e-5)
    assert m.fingerprint() == small_clip.fingerprint()


def test_siglip_pads_to_max_length_and_squashes_images(clip_tokenizer):
    torch.manual_seed(0)
    config = transformers.SiglipConfig(text_config=dict(SMALL_TEXT, max_position_embeddings=64),
                                       vision_config=SMALL_VISION)
    m = HFImageText(transformers.SiglipModel(config), clip_tokenizer)
    assert m.padding == "max_length" and m.max_length == 64
    assert m.transform == ImageTransform((32, 32), None, (0.5,) * 3, (0.5,) * 3, "bicubic", "squash")
    assert m.tokenize(["red", "a dog"])["input_ids"].shape == (2, 64)
    img = m.encode_images(smooth_images(2, 50, 30))
    txt = m.encode_text(["red", "red", "a long phrase about a dog"])
    assert img.shape == (2, 32) and txt.shape == (3, 32)
    assert torch.allclose(txt[0], txt[1], atol=1e-6)
    assert torch.equal(m.encode_text(["red"]), m.encode_text(["red"]))
    processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    assert transform_from_image_processor(processor) == m.transform


def test_siglip_saved_with_its_sentencepiece_tokenizer_opens_by_spec(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    pytest.importorskip("google.protobuf")
    words = "red green blue sky sea sand grass house tree car person flower ball sun box a photo of the".split()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(words[i:] + words[:i]) for i in range(len(words))) + "\n")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "spiece"), vocab_size=40,
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    tokenizer = transformers.SiglipTokenizer(vocab_file=str(tmp_path / "spiece.model"))
    torch.manual_seed(0)
    text = dict(SMALL_TEXT, vocab_size=40, max_position_embeddings=16, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    model = transformers.SiglipModel(transformers.SiglipConfig(text_config=text, vision_config=SMALL_VISION))
    folder = tmp_path / "siglip"
    model.save_pretrained(folder)
    transformers.SiglipProcessor(image_processor=transformers.SiglipImageProcessor(size={"height": 32, "width": 32}),
                                 tokenizer=tokenizer).save_pretrained(folder)
    m = load_image_text(f"hf:{folder}")  # AutoModel + AutoProcessor, offline
    assert type(m.tokenizer).__name__ == "SiglipTokenizer" and (m.padding, m.max_length) == ("max_length", 16)
    assert m.transform == ImageTransform((32, 32), None, (0.5,) * 3, (0.5,) * 3, "bicubic", "squash")
    assert m.tokenize(["red"])["input_ids"].shape == (1, 16)
    want = HFImageText(model, tokenizer).encode_text(["red", "a red house"])
    assert torch.allclose(m.encode_text(["red", "a red house"]), want, atol=1e-5)
    assert m.encode_images(smooth_images(2, 40, 60)).shape == (2, 32)


def test_real_clip_vit_b16_architecture(clip_tokenizer):
    start = time.time()
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                         max_position_embeddings=77, vocab_size=49408),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=16),
        projection_dim=512)
    m = HFImageText(transformers.CLIPModel(config), transformers.CLIPProcessor(
        image_processor=transformers.CLIPImageProcessor(), tokenizer=clip_tokenizer))
    assert m.transform == ImageTransform(224, (224, 224), OPENAI_MEAN, OPENAI_STD, "bicubic", "shortest")
    assert m.encode_images(smooth_images(1, 256, 300)).shape == (1, 512)
    assert m.encode_text(["red", "great white shark"]).shape == (2, 512)
    assert time.time() - start < 30


def test_hf_errors():
    with pytest.raises(ConfigError, match="needs a model id"):
        load_image_text("hf:")
    with pytest.raises(ModelError, match="could not load Hugging Face model"):
        load_image_text("hf:/nonexistent/folder/of/a/model")
    with pytest.raises(ConfigError, match="has no get_image_features"):
        HFImageText(torch.nn.Linear(2, 2), None)
