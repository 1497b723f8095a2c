"""The colour segmenter equals the project's colour namer, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from netdissect.data.colornames import COLOR_CONCEPTS, color_map, name_colors
from netdissect.data.synthetic import SyntheticConcepts
from netdissect.errors import ConfigError
from netdissect.segment import ColorSegmenter, Segmenter, load_segmenter
from netdissect.segment.color import _color_lut, box_resize

ASSETS = Path(__file__).resolve().parents[3] / "shared" / "assets"
needs_assets = pytest.mark.skipif(not (ASSETS / "data").is_dir(),
                                  reason=f"test assets not found at {ASSETS} (../shared/assets)")


def _batch(arrays: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) uint8 tensor."""
    return torch.from_numpy(np.array(arrays)).permute(0, 3, 1, 2).contiguous()


def _reference(arrays: np.ndarray, size) -> np.ndarray:
    return np.stack([color_map(a, size) for a in arrays]).astype(np.int64) + 1


def test_protocol_and_concepts():
    seg = ColorSegmenter()
    assert isinstance(seg, Segmenter)
    assert seg.concepts.names()[1:] == list(COLOR_CONCEPTS)
    assert seg.concepts.categories == ("color",)
    assert [c.number for c in seg.concepts] == list(range(1, 12))
    assert seg.label_size((224, 224)) == (112, 112)
    assert seg.label_size((227, 300)) == (113, 150)
    assert seg.label_size((1, 1)) == (1, 1)
    assert ColorSegmenter(size=56).label_size((224, 224)) == (56, 56)
    assert seg.to("cpu") is seg


@pytest.mark.parametrize("shape", [(4, 224, 224), (3, 227, 227), (2, 64, 48), (2, 37, 50)])
@pytest.mark.parametrize("lut", [True, False])
def test_equals_color_map_on_random_images(shape, lut):
    n, h, w = shape
    arrays = np.random.default_rng(h * w).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    seg = ColorSegmenter(lut=lut)
    out = seg.segment(_batch(arrays))
    size = seg.label_size((h, w))
    assert out.pixel_labels.shape == (n, 1, *size)
    assert out.pixel_labels.dtype == torch.int64
    assert out.image_labels.shape == (n, 1) and not out.image_labels.any()
    np.testing.assert_array_equal(out.pixel_labels[:, 0].numpy(), _reference(arrays, size))


@pytest.mark.parametrize("size", [(56, 56), (100, 30), (300, 300), (64, 64)])
def test_equals_color_map_at_other_label_sizes(size):
    arrays = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    out = ColorSegmenter(size=size).segment(_batch(arrays))
    np.testing.assert_array_equal(out.pixel_labels[:, 0].numpy(), _reference(arrays, size))


def test_smooth_images_equal_color_map():
    # random images only hit averages of noise; smooth gradients sweep every hue and lightness
    y, x = np.mgrid[0:96, 0:128]
    arrays = np.stack(
        [np.stack([(x * 2) % 256, (y * 3) % 256, (x + y + k * 40) % 256], -1) for k in range(6)]
    ).astype(np.uint8)
    out = ColorSegmenter().segment(_batch(arrays))
    np.testing.assert_array_equal(out.pixel_labels[:, 0].numpy(), _reference(arrays, (48, 64)))


def test_box_resize_is_pillows_box_filter():
    # the arithmetic used on GPUs (and MPS), checked here on the CPU
    rng = np.random.default_rng(0)
    for (H, W), (h, w) in [((224, 224), (112, 112)), ((227, 227), (113, 113)), ((224, 224), (56, 56)),
                           ((100, 90), (37, 41)), ((30, 20), (45, 50)), ((17, 33), (5, 7)), ((5, 5), (1, 1)),
                           ((224, 224), (224, 112))]:
        arrays = rng.integers(0, 256, (2, H, W, 3), dtype=np.uint8)
        ref = np.stack([np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.BOX)) for a in arrays])
        out = box_resize(_batch(arrays), (h, w)).permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(out, ref, err_msg=f"{(H, W)} -> {(h, w)}")


def test_device_path_equals_cpu_path():
    # the torch path (box_resize + table on the device) is the one non-CPU devices take
    arrays = np.random.default_rng(5).integers(0, 256, (3, 80, 60, 3), dtype=np.uint8)
    seg = ColorSegmenter()
    codes = seg._codes(_batch(arrays), (40, 30), on_device=True)
    np.testing.assert_array_equal(codes.numpy().astype(np.int64) + 1, _reference(arrays, (40, 30)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_color_map():
    arrays = np.random.default_rng(6).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    seg = ColorSegmenter().to("cuda")
    out = seg.segment(_batch(arrays).cuda())
    assert out.pixel_labels.device.type == "cuda" and out.image_labels.device.type == "cuda"
    np.testing.assert_array_equal(out.pixel_labels[:, 0].cpu().numpy(), _reference(arrays, (112, 112)))


@pytest.mark.slow
def test_table_names_every_colour_like_name_colors():
    table = _color_lut()[0]
    # another layout than the table's (image-shaped rows of 112, shifted by 37), as color_map calls it
    order = np.roll(np.arange(1 << 24, dtype=np.int64), 37)
    rgb = np.stack([(order >> 16) & 255, (order >> 8) & 255, order & 255], -1).astype(np.uint8)
    step = 112 * 112
    for start in range(0, 1 << 24, step):
        chunk = rgb[start : start + step]
        rows = len(chunk) // 112 * 112
        names = name_colors(chunk[:rows].reshape(-1, 112, 3)).reshape(-1)
        if rows < len(chunk):
            names = np.concatenate([names, name_colors(chunk[rows:])])
        np.testing.assert_array_equal(table[order[start : start + step]], names)


def test_synthetic_colour_layer():
    ds = SyntheticConcepts(n=8)
    seg = ColorSegmenter()
    # the synthetic data numbers its colours as the segmenter does
    assert ds.concepts.names()[1:12] == seg.concepts.names()[1:]
    assert seg.label_size(ds.image_size) == ds.label_size
    arrays = np.stack([ds[i].image for i in range(len(ds))])
    out = seg.segment(_batch(arrays))
    np.testing.assert_array_equal(out.pixel_labels[:, 0].numpy(), _reference(arrays, ds.label_size))
    # The stored colour layer (layer 0) is the colour each region was painted with, sampled at
    # label resolution; the namer sees the shaded, noisy, area-averaged pixels.  They agree on
    # about 99% of the label pixels (measured: 99.0% on these 8 images), not on all of them.
    stored = np.stack([ds.load_labels(i).pixel_labels[0] for i in range(len(ds))])
    agreement = (out.pixel_labels[:, 0].numpy() == stored).mean()
    assert agreement > 0.97


@needs_assets
def test_equals_color_map_on_real_photos():
    files = [ASSETS / "data" / "photos" / "mountains.jpg"]
    files += sorted((ASSETS / "data" / "camvid" / "val" / "images").glob("*.jpg"))[:3]
    files += sorted((ASSETS / "data" / "imagenet-samples").glob("*.jpg"))[:8]
    seg = ColorSegmenter()
    for f in files:
        with Image.open(f) as im:
            rgb = im.convert("RGB")
            native = np.asarray(rgb)
            square = np.asarray(rgb.resize((224, 224), Image.Resampling.BILINEAR))
        for array in (native, square):
            size = seg.label_size(array.shape[:2])
            out = seg.segment(_batch(array[None]))
            np.testing.assert_array_equal(out.pixel_labels[0, 0].numpy(), color_map(array, size) + 1, err_msg=str(f))


def test_empty_batch_and_bad_input():
    seg = ColorSegmenter()
    out = seg.segment(torch.zeros((0, 3, 8, 8), dtype=torch.uint8))
    assert out.pixel_labels.shape == (0, 1, 4, 4) and out.image_labels.shape == (0, 1)
    with pytest.raises(ConfigError, match="uint8"):
        seg.segment(torch.zeros((1, 3, 8, 8)))
    with pytest.raises(ConfigError, match=r"\(N, 3, H, W\)"):
        seg.segment(torch.zeros((3, 8, 8), dtype=torch.uint8))
    with pytest.raises(ConfigError, match="torch.Tensor"):
        seg.segment(np.zeros((1, 3, 8, 8), dtype=np.uint8))
    with pytest.raises(ConfigError, match="size"):
        ColorSegmenter(size=(0, 3))


def test_fingerprint_and_spec():
    a, b = ColorSegmenter(), load_segmenter("color")
    assert a.fingerprint() == b.fingerprint() == ColorSegmenter(lut=False).fingerprint()
    assert a.fingerprint() != ColorSegmenter(size=56).fingerprint()
    sized = ColorSegmenter(size=(20, 30))
    assert load_segmenter(sized.spec()).fingerprint() == sized.fingerprint()
