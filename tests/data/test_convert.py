"""Tests of the converters into Broden format and of merging (netdissect.data.convert)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import netdissect
from netdissect.cli import main
from netdissect.data.broden import BrodenDataset, write_broden
from netdissect.data.colornames import COLOR_CONCEPTS, color_map
from netdissect.data.convert import (
    ADE20KSource,
    ImageFolders,
    MergedBroden,
    SegmentationFolders,
    convert_ade20k,
    convert_folders,
    convert_segmentation,
    label_sample_index,
    merge_broden,
    read_class_list,
)
from netdissect.data.imageio import encode_label_rgb, read_label_png
from netdissect.errors import ConfigError, DatasetError
from netdissect.models import Preprocess

ASSETS = Path(__file__).resolve().parents[3] / "shared" / "assets"
DATA = ASSETS / "data"
_skip = pytest.mark.skipif(not (DATA / "camvid").is_dir(),
                           reason=f"test assets not found at {ASSETS} (../shared/assets)")


def needs_assets(test):
    return pytest.mark.assets(_skip(test))


# -- helpers -------------------------------------------------------------------------


def expected_labels(source: np.ndarray, out: tuple[int, int], fit: str = "stretch") -> np.ndarray:
    """The documented nearest-neighbour resize, written independently with floats."""
    h, w = source.shape
    if fit == "crop":
        s = min(h, w)
        y0, x0, h, w = (source.shape[0] - s) // 2, (source.shape[1] - s) // 2, s, s
    else:
        y0 = x0 = 0
    rows = [y0 + math.floor((i + 0.5) * h / out[0]) for i in range(out[0])]
    cols = [x0 + math.floor((j + 0.5) * w / out[1]) for j in range(out[1])]
    return source[np.ix_(rows, cols)]


def names_of(ds, numbers: np.ndarray) -> np.ndarray:
    """Label numbers -> concept names ('' for 0)."""
    names = [ds.concepts[n].name if n in ds.concepts else "?" for n in range(1, ds.concepts.max_number + 1)]
    table = np.array([""] + names, dtype=object)
    return table[numbers]


def layers_by_category(ds: BrodenDataset, index: int) -> dict[str, list[np.ndarray]]:
    """The label PNGs of one image, read per index.csv column."""

    out: dict[str, list[np.ndarray]] = {}
    for cat, entries in ds.entries(index).items():
        out[cat] = [read_label_png(ds.root / "images" / e) for e in entries if isinstance(e, str)]
    return out


def make_segmentation(root: Path, *, splits=("train", "val"), sizes=((30, 40), (37, 23), (16, 16)),
                      values=(0, 1, 2, 3, 255), seed=0) -> Path:
    """Split folders of PNG images and L-mode label maps holding ``values``; returns the class list path."""
    rng = np.random.default_rng(seed)
    for split in splits:
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for k, (h, w) in enumerate(sizes):
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            lab = rng.choice(np.array(values, dtype=np.uint8), size=(h, w))
            Image.fromarray(img).save(root / split / "images" / f"im{k}.png")
            Image.fromarray(lab, "L").save(root / split / "labels" / f"im{k}.png")
    classes = root / "classes.txt"
    classes.write_text("void\nsky\nroad\ncar\n")
    return classes


# -- geometry ----------------------------------------------------------------------------


def test_label_sample_index_matches_the_documented_formula():
    for n_in in range(1, 300, 7):
        for n_out in (1, 2, 8, 112, 113):
            expected = [math.floor((i + 0.5) * n_in / n_out) for i in range(n_out)]
            assert label_sample_index(n_out, n_in).tolist() == expected
    assert label_sample_index(2, 4).tolist() == [1, 3]  # even sizes: the second pixel of each pair
    assert label_sample_index(3, 6, offset=10).tolist() == [11, 13, 15]


# -- segmentation --------------------------------------------------------------------


def test_segmentation_round_trip_pixel_for_pixel(tmp_path):
    classes = make_segmentation(tmp_path / "src")
    ds = SegmentationFolders(tmp_path / "src", classes, size=16, ignore_values=[255])
    assert ds.image_size == (16, 16) and ds.label_size == (8, 8)
    assert [c.name for c in ds.concepts] == list(COLOR_CONCEPTS) + ["sky", "road", "car"]
    assert ds.concepts.categories == ("color", "object")
    out = write_broden(ds, tmp_path / "out", image_format="png")
    back = BrodenDataset(out)
    assert len(back) == 6 and sorted({back.split_name(i) for i in range(6)}) == ["train", "val"]
    names = np.array(["", "sky", "road", "car"] + [""] * 252, dtype=object)  # value -> name (void, 255: none)
    for i in range(len(back)):
        ident = back.image_id(i)  # e.g. train/im1.png
        split, stem = ident.rsplit(".", 1)[0].split("/")
        source = np.asarray(Image.open(tmp_path / "src" / split / "labels" / f"{stem}.png")).astype(np.int64)
        layers = layers_by_category(back, i)
        assert len(layers["object"]) == 1
        np.testing.assert_array_equal(names_of(back, layers["object"][0]), names[expected_labels(source, (8, 8))])
        # colours: the namer on the written (lossless) image, area-averaged to the label grid
        image = back[i].image
        np.testing.assert_array_equal(names_of(back, layers["color"][0]),
                                      np.array(COLOR_CONCEPTS, dtype=object)[color_map(image, (8, 8))])
        # the image is the whole source resized (bicubic), not a crop
        src_img = Image.open(tmp_path / "src" / split / "images" / f"{stem}.png").convert("RGB")
        np.testing.assert_array_equal(image, np.asarray(src_img.resize((16, 16), Image.Resampling.BICUBIC)))


def test_segmentation_crop_fit(tmp_path):
    classes = make_segmentation(tmp_path / "src", splits=("only",), sizes=((30, 50),))
    ds = SegmentationFolders(tmp_path / "src", classes, size=10, fit="crop", ignore_values=[255])
    source = np.asarray(Image.open(tmp_path / "src/only/labels/im0.png")).astype(np.int64)
    lut = np.zeros(256, np.int64)
    lut[[1, 2, 3]] = [ds.concepts.by_name(n).number for n in ("sky", "road", "car")]
    np.testing.assert_array_equal(ds[0].pixel_labels[1], lut[expected_labels(source, (5, 5), "crop")])
    src_img = Image.open(tmp_path / "src/only/images/im0.png").convert("RGB")
    np.testing.assert_array_equal(ds[0].image, np.asarray(src_img.resize((10, 10), Image.Resampling.BICUBIC,
                                                                          box=(10, 0, 40, 30))))


def test_class_list_forms(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("# comment\n0 background\n5: cat\n7,dog\n")
    assert read_class_list(p) == {0: "background", 5: "cat", 7: "dog"}
    p.write_text("sky\n\nroad\n")
    assert read_class_list(p) == {0: "sky", 1: "road"}
    p.write_text("sky\n3 road\n")
    with pytest.raises(DatasetError, match=r"c\.txt line 2: '3 road' mixes the two forms"):
        read_class_list(p)
    p.write_text("1 a\n1 b\n")
    with pytest.raises(DatasetError, match=r"c\.txt line 2: value 1 is listed twice"):
        read_class_list(p)
    p.write_text("# nothing\n")
    with pytest.raises(DatasetError, match=r"c\.txt lists no classes"):
        read_class_list(p)
    with pytest.raises(DatasetError, match=r"class list .*missing\.txt cannot be read"):
        read_class_list(tmp_path / "missing.txt")


def test_uncovered_label_values_name_the_class_list_and_leave_no_output(tmp_path):
    classes = make_segmentation(tmp_path / "src")  # label maps hold 255, which the class list does not name
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"class list .*classes\.txt does not cover label value\(s\) 255 found in "
                                           r"label map .*im0\.png; it names values 0-3"):
        convert_segmentation(tmp_path / "src", out, classes=classes, size=16)
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_segmentation_input_errors(tmp_path):
    classes = make_segmentation(tmp_path / "src", splits=("a",))
    (tmp_path / "src/a/labels/im1.png").unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\) in .*a/images have no label map in .*a/labels "
                                           r"\(expected <name>\.png\): im1\.png"):
        SegmentationFolders(tmp_path / "src", classes)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "src/a/labels/im1.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "src/a/labels/stray.png")
    with pytest.raises(DatasetError, match=r"1 label map\(s\) in .*a/labels have no image in .*a/images: stray"):
        SegmentationFolders(tmp_path / "src", classes)
    (tmp_path / "src/a/labels/stray.png").unlink()
    ds = SegmentationFolders(tmp_path / "src", classes, ignore_values=[255])
    index = [r.image_id for r in ds.records].index("a/im1")
    with pytest.raises(DatasetError, match=r"label map for image .*im1\.png is 4x4 \(HxW\) but the image is 37x23"):
        ds[index]
    Image.fromarray(np.zeros((37, 23, 3), np.uint8)).save(tmp_path / "src/a/labels/im1.png")
    with pytest.raises(DatasetError, match=r"label map .*im1\.png is a RGB colour image; .* class indices"):
        ds[index]
    with pytest.raises(DatasetError, match=r"has no images/ folder, and no subfolder \(split\) has one"):
        SegmentationFolders(tmp_path / "src/a/images", classes)
    with pytest.raises(ConfigError, match="fit='zoom' is not one of stretch, crop"):
        SegmentationFolders(tmp_path / "src", classes, fit="zoom")
    with pytest.raises(ConfigError, match="size=1 must be at least 2"):
        SegmentationFolders(tmp_path / "src", classes, size=1)


@needs_assets
def test_camvid_subset_round_trip(tmp_path):
    src = tmp_path / "camvid"
    for split in ("train", "test"):
        for kind in ("images", "labels"):
            (src / split / kind).mkdir(parents=True)
        for f in sorted((DATA / "camvid" / split / "images").glob("*.jpg"))[:3]:
            shutil.copy(f, src / split / "images" / f.name)
            shutil.copy(DATA / "camvid" / split / "labels" / (f.stem + ".png"), src / split / "labels")
    out = convert_segmentation(src, tmp_path / "out", classes=DATA / "camvid" / "classes.txt", size=224)
    back = BrodenDataset(out)
    assert back.image_size == (224, 224) and back.label_size == (112, 112)
    class_names = (DATA / "camvid" / "classes.txt").read_text().split()
    assert [c.name for c in back.concepts if c.category == "object"] == class_names[:11]  # void is no label
    names = np.array(class_names[:11] + [""], dtype=object)  # value 11 = void -> no label
    for i in range(len(back)):
        split, stem = back.image_id(i).rsplit(".", 1)[0].split("/")
        source = np.asarray(Image.open(src / split / "labels" / f"{stem}.png")).astype(np.int64)
        obj = layers_by_category(back, i)["object"][0]
        np.testing.assert_array_equal(names_of(back, obj), names[expected_labels(source, (112, 112))])
        assert back.load_labels(i).pixel_labels.shape == (2, 112, 112)


# -- ADE20K --------------------------------------------------------------------------------


@needs_assets
def test_ade20k_round_trip(tmp_path):
    out = convert_ade20k(DATA / "ade20k-samples", tmp_path / "ade", size=224)
    back = BrodenDataset(out)
    assert len(back) == 3 and back.concepts.categories == ("color", "object", "part", "scene")
    by_cat = {cat: {c.name for c in back.concepts if c.category == cat} for cat in back.concepts.categories}
    assert {"building", "car", "sky", "road", "tree", "person", "sidewalk"} <= by_cat["object"]
    assert {"window", "door", "wheel", "headlight", "license plate"} <= by_cat["part"]
    assert by_cat["scene"] == {"street-s"}
    for i in range(len(back)):
        stem = back.image_id(i).rsplit(".", 1)[0]
        folder = next((DATA / "ade20k-samples").rglob(f"{stem}.json")).parent
        ann = json.loads((folder / f"{stem}.json").read_text())["annotation"]
        name_of = {o["name_ndx"]: o["name"].split(",")[0].strip() for o in ann["object"]}
        table = np.full(4000, "", dtype=object)
        for k, v in name_of.items():
            table[k] = v

        def expected(mask_file, folder=folder, table=table):
            rgb = np.asarray(Image.open(folder / mask_file)).astype(np.int64)
            cls = rgb[..., 0] // 10 * 256 + rgb[..., 1]
            return table[expected_labels(cls, (112, 112))]

        layers = layers_by_category(back, i)
        np.testing.assert_array_equal(names_of(back, layers["object"][0]), expected(f"{stem}_seg.png"))
        parts = sorted(folder.glob(f"{stem}_parts_*.png"))
        got_parts = [names_of(back, layer) for layer in layers["part"]]
        want_parts = [expected(p.name) for p in parts]
        want_parts = [w for w in want_parts if (w != "").any()]  # a level whose parts vanish at 112 has no file
        assert len(got_parts) == len(want_parts)
        for g, w in zip(got_parts, want_parts):
            np.testing.assert_array_equal(g, w)
        scene = back.load_labels(i).image_labels
        assert [back.concepts[int(n)].name for n in scene] == ["street-s"]


def test_ade20k_input_errors(tmp_path):
    d = tmp_path / "ade" / "training" / "x"
    d.mkdir(parents=True)
    seg = np.zeros((8, 8, 3), np.uint8)
    seg[..., 0] = 10  # class 256 + G
    seg[..., 1] = 4   # -> class 260
    Image.fromarray(seg).save(d / "a_seg.png")
    with pytest.raises(DatasetError, match=r"ADE20K mask .*a_seg\.png has no image file a\.jpg beside it"):
        ADE20KSource(tmp_path / "ade")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "a.jpg")
    (d / "a.json").write_text(json.dumps({"annotation": {"scene": ["outdoor", "x"], "object": [
        {"name_ndx": 12, "name": "thing, object", "parts": {"part_level": 0}}]}}))
    ds = ADE20KSource(tmp_path / "ade", size=8)
    with pytest.raises(DatasetError, match=r"mask .*a_seg\.png holds class index\(es\) 260 that no annotation"):
        ds[0]
    (d / "a.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"annotation .*a\.json is not valid JSON"):
        ADE20KSource(tmp_path / "ade")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"holds no \*_seg\.png files"):
        ADE20KSource(tmp_path / "empty")


# -- folders ------------------------------------------------------------------------------------


def make_folders(root: Path, classes=("striped", "dotted"), n=2, seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for k in range(n):
            Image.fromarray(rng.integers(0, 256, (20 + k, 30, 3), dtype=np.uint8)).save(root / c / f"{c}_{k}.png")
    (root / "README.txt").write_text("ignored")


def test_folders_round_trip_and_errors(tmp_path):
    make_folders(tmp_path / "tex")
    out = convert_folders(tmp_path / "tex", tmp_path / "out", size=16)
    back = BrodenDataset(out)
    assert [c.name for c in back.concepts if c.category == "texture"] == ["dotted", "striped"]
    for i in range(len(back)):
        cls = back.image_id(i).split("/")[0]
        s = back.load_labels(i)
        assert [back.concepts[int(n)].name for n in s.image_labels] == [cls]
        assert s.pixel_labels.shape == (1, 8, 8)  # the colour layer
        assert back.concepts[int(s.pixel_labels[0, 0, 0])].category == "color"
    scenes = ImageFolders(tmp_path / "tex", category="scene", colors=False)
    assert [c.name for c in scenes.concepts] == ["dotted-s", "striped-s"] and scenes.concepts.categories == ("scene",)
    (tmp_path / "tex" / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"class folder .*tex/empty holds no images .*every class needs at least"):
        ImageFolders(tmp_path / "tex")
    with pytest.raises(DatasetError, match=r"class-folder source .*nowhere is not a folder"):
        ImageFolders(tmp_path / "nowhere")


# -- merge ----------------------------------------------------------------------------------------


def test_merge_unifies_names_and_keeps_labels(tmp_path):
    classes = make_segmentation(tmp_path / "seg", splits=("train",))
    seg = convert_segmentation(tmp_path / "seg", tmp_path / "a", classes=classes, size=16, ignore_values=[255])
    # a second segmentation source sharing 'sky' and adding 'tree'
    classes2 = make_segmentation(tmp_path / "seg2", splits=("val",), seed=1)
    classes2.write_text("void\nsky\ntree\nroad\n")
    seg2 = convert_segmentation(tmp_path / "seg2", tmp_path / "b", classes=classes2, size=16, ignore_values=[255])
    make_folders(tmp_path / "tex")
    tex = convert_folders(tmp_path / "tex", tmp_path / "c", size=16)
    out = merge_broden([seg, seg2, tex], tmp_path / "merged")
    merged = BrodenDataset(out)
    names = [c.name for c in merged.concepts]
    assert names == list(COLOR_CONCEPTS) + ["sky", "road", "car", "tree", "dotted", "striped"]
    assert merged.concepts.numbers() == list(range(1, len(names) + 1))
    assert merged.concepts.categories == ("color", "object", "texture")
    assert len(merged) == 3 + 3 + 4
    sources = [BrodenDataset(p) for p in (seg, seg2, tex)]
    k = 0
    for src in sources:
        for j in range(len(src)):
            a, b = src.load_labels(j), merged.load_labels(k)
            assert merged.image_id(k) == f"{src.root.name}/{src.image_id(j)}"
            np.testing.assert_array_equal(names_of(merged, b.pixel_labels), names_of(src, a.pixel_labels))
            assert list(names_of(merged, b.image_labels)) == list(names_of(src, a.image_labels))
            # jpg images are copied byte for byte
            assert (merged.root / "images" / merged.image_id(k)).read_bytes() == src.image_path(j).read_bytes()
            k += 1
    # same-name concepts across categories become one, in the category with the most coverage
    ds = MergedBroden([seg, tex])
    assert len(ds.concepts) == 11 + 3 + 2
    small = convert_folders(tmp_path / "tex", tmp_path / "d", size=20)
    with pytest.raises(DatasetError, match=r"cannot merge .*d \(images 20x20, labels 10x10\) with .*a \(images 16x16"):
        MergedBroden([seg, small])


# -- end to end ---------------------------------------------------------------------------------


class Brightness(nn.Module):
    """Unit 0 = blueness (B - (R + G) / 2), unit 1 = brightness (R + G + B), on raw 0..1 RGB."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.bias.zero_()
            self.features.weight[0, :, 0, 0] = torch.tensor([-0.5, -0.5, 1.0])
            self.features.weight[1, :, 0, 0] = 1.0

    def forward(self, x):
        return self.features(x).mean((2, 3))


@needs_assets
def test_merged_camvid_dtd_colours_dissect_end_to_end(tmp_path):
    """CamVid objects + DTD textures + colours, merged and dissected: the blue unit is blue, the bright one white."""
    src = tmp_path / "camvid"
    for kind in ("images", "labels"):
        (src / "train" / kind).mkdir(parents=True)
    for f in sorted((DATA / "camvid" / "train" / "images").glob("*.jpg"))[:6]:
        shutil.copy(f, src / "train" / "images")
        shutil.copy(DATA / "camvid" / "train" / "labels" / (f.stem + ".png"), src / "train" / "labels")
    dtd = tmp_path / "dtd"
    for c in ("banded", "chequered"):
        (dtd / c).mkdir(parents=True)
        for f in sorted((DATA / "dtd10" / c).glob("*.jpg"))[:3]:
            shutil.copy(f, dtd / c)
    a = convert_segmentation(src, tmp_path / "cv", classes=DATA / "camvid" / "classes.txt", size=64)
    b = convert_folders(dtd, tmp_path / "tx", size=64)
    assert main(["data", "convert", "merge", str(a), str(b), str(tmp_path / "merged")]) == 0
    assert main(["data", "check", str(tmp_path / "merged")]) == 0
    result = netdissect.dissect(Brightness(), tmp_path / "merged", layers=["features"], out=tmp_path / "run",
                                preprocess=Preprocess(mean=(0, 0, 0), std=(1, 1, 1)), progress=False,
                                batch_size=4, num_workers=0, device="cpu")
    iou = result.iou("features")
    assert {"sky", "road", "car", "banded", "chequered", "black-c", "white-c"} <= set(iou.columns)
    colours = iou[list(COLOR_CONCEPTS)]
    assert colours.loc[1].idxmax() == "blue-c" and colours.loc[2].idxmax() == "white-c"
    assert colours.loc[1, "blue-c"] > 0.002 and colours.loc[2, "white-c"] > 0.002


# -- ADE20K format details on a hand-made sample ---------------------------------------------------------


def ade_image(folder: Path, stem: str, seg: np.ndarray, parts: list[np.ndarray], objects: list[dict], scene):
    """Write an ADE20K-style image: class c is stored as R = c // 256 * 10, G = c % 256."""
    def encode(classes):
        rgb = np.zeros(classes.shape + (3,), np.uint8)
        rgb[..., 0] = (classes // 256) * 10
        rgb[..., 1] = classes % 256
        rgb[..., 2] = (classes > 0) * 7  # instance ids: ignored
        return rgb

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(seg.shape + (3,), 128, np.uint8)).save(folder / f"{stem}.jpg")
    Image.fromarray(encode(seg)).save(folder / f"{stem}_seg.png")
    for k, p in enumerate(parts, 1):
        Image.fromarray(encode(p)).save(folder / f"{stem}_parts_{k}.png")
    (folder / f"{stem}.json").write_text(json.dumps({"annotation": {"scene": scene, "object": objects}}))


def test_ade20k_classes_levels_and_names(tmp_path):
    root = tmp_path / "ADE" / "training" / "urban"
    h, w = 6, 8
    seg = np.zeros((h, w), np.int64)
    seg[:3] = 300  # class 300 = 1 * 256 + 44: needs the R channel
    seg[3:] = 7
    part = np.zeros((h, w), np.int64)
    part[4:, :4] = 5
    obj = [{"name_ndx": 300, "name": "plant, flora, plant life", "parts": {"part_level": 0}},
           {"name_ndx": 7, "name": "wall", "parts": {"part_level": 0}},
           {"name_ndx": 5, "name": "window", "parts": {"part_level": 1}}]
    ade_image(root, "ADE_train_1", seg, [part], obj, ["outdoor", "urban", "street"])
    # image 2: 'window' as an object (level 0) once; 'plant, works' shares the first synonym 'plant'
    seg2 = np.full((h, w), 5, np.int64)
    seg2[0] = 9
    ade_image(root, "ADE_train_2", seg2, [], [
        {"name_ndx": 5, "name": "window", "parts": {"part_level": 0}},
        {"name_ndx": 9, "name": "plant, works, industrial plant", "parts": {"part_level": 0}},
    ], ["indoor", "x", "lobby"])
    # image 3: window as a part again -> parts win (2 images vs 1)
    ade_image(tmp_path / "ADE" / "validation" / "v", "ADE_val_3", seg, [part], obj, [])
    ds = ADE20KSource(tmp_path / "ADE", size=(12, 16))
    cats = {c.name: c.category for c in ds.concepts}
    assert cats["plant (flora)"] == "object" and cats["plant (works)"] == "object" and cats["wall"] == "object"
    assert cats["window"] == "part" and cats["street-s"] == "scene" and cats["lobby-s"] == "scene"
    assert [ds.split_name(i) for i in range(3)] == ["train", "train", "val"]
    num = {c.name: c.number for c in ds.concepts}
    s = ds[0]
    assert s.pixel_labels.shape == (3, 6, 8)  # colour, objects, parts
    np.testing.assert_array_equal(s.pixel_labels[1], np.where(seg == 300, num["plant (flora)"], num["wall"]))
    np.testing.assert_array_equal(s.pixel_labels[2], np.where(part == 5, num["window"], 0))
    assert s.image_labels.tolist() == [num["street-s"]] and ds[2].image_labels.tolist() == []
    out = write_broden(ds, tmp_path / "out", image_format="png")
    back = BrodenDataset(out)
    # image 2's window object layer went into the part column, its primary category
    layers = layers_by_category(back, 1)
    assert set(names_of(back, layers["part"][0]).ravel()) == {"", "window"}
    assert set(names_of(back, layers["object"][0]).ravel()) == {"", "plant (works)"}
    from netdissect.data.broden import check_broden

    assert check_broden(out) == []


def test_converted_folder_fingerprint_follows_relabelled_classes(tmp_path):
    """Classes relabelled in place in a converted folder (same byte size, same mtime) change its fingerprint."""
    classes = make_segmentation(tmp_path / "src", splits=("train",), sizes=((16, 16),), values=(1, 2))
    out = convert_segmentation(tmp_path / "src", tmp_path / "out", classes=classes, size=16, image_format="png")
    ds = BrodenDataset(out)
    png = out / "images" / ds.entries(0)["object"][0]
    before_labels = read_label_png(png)
    assert set(np.unique(before_labels)) == {ds.concepts.by_name("sky").number, ds.concepts.by_name("road").number}

    def write_in_place(labels):
        st = png.stat()
        Image.fromarray(encode_label_rgb(labels), "RGB").save(png, format="PNG", compress_level=0)
        os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns))
        return st.st_size

    write_in_place(before_labels)
    before = BrodenDataset(out).fingerprint()
    sky, road = ds.concepts.by_name("sky").number, ds.concepts.by_name("road").number
    swapped = np.where(before_labels == sky, road, sky)
    size = write_in_place(swapped)
    assert png.stat().st_size == size
    assert BrodenDataset(out).fingerprint() != before
    write_in_place(before_labels)
    assert BrodenDataset(out).fingerprint() == before


def test_source_fingerprint_follows_label_maps(tmp_path):
    classes = make_segmentation(tmp_path / "src", splits=("train",), values=(1, 2))
    before = SegmentationFolders(tmp_path / "src", classes, size=16).fingerprint()
    label = tmp_path / "src" / "train" / "labels" / "im0.png"
    values = np.asarray(Image.open(label))
    Image.fromarray((3 - values).astype(np.uint8), "L").save(label)  # sky <-> road
    assert SegmentationFolders(tmp_path / "src", classes, size=16).fingerprint() != before


# -- options shared by the converters ------------------------------------------------------------------


def test_any_size_converts_and_the_help_says_so(tmp_path, capsys):
    classes = make_segmentation(tmp_path / "src", splits=("train",), values=(0, 1, 2, 3))
    assert main(["data", "convert", "segmentation", str(tmp_path / "src"), str(tmp_path / "out"), "--classes",
                 str(classes), "--size", "41", "--format", "png"]) == 0
    ds = BrodenDataset(tmp_path / "out")
    assert ds.image_size == (41, 41) and ds.label_size == (20, 20) and ds[0].image.shape == (41, 41, 3)
    capsys.readouterr()
    for kind in ("segmentation", "ade20k", "folders"):
        with pytest.raises(SystemExit):
            main(["data", "convert", kind, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "224 or 227" not in text and "--size SIZE image side in pixels, any size from 2" in text


def test_parallel_writing_gives_identical_output(tmp_path):
    classes = make_segmentation(tmp_path / "src")
    a = convert_segmentation(tmp_path / "src", tmp_path / "a", classes=classes, size=16, ignore_values=[255])
    b = convert_segmentation(tmp_path / "src", tmp_path / "b", classes=classes, size=16, ignore_values=[255],
                             workers=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    # an error in a worker process reaches the caller with its message, and no output is left
    with pytest.raises(DatasetError, match="does not cover label value"):
        convert_segmentation(tmp_path / "src", tmp_path / "c", classes=classes, size=16, workers=2)
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.partial").exists()


def test_split_spec_and_cli(tmp_path, capsys):
    from netdissect.data import open_dataset

    classes = make_segmentation(tmp_path / "src")
    rc = main(["data", "convert", "segmentation", str(tmp_path / "src"), str(tmp_path / "out"), "--classes",
               str(classes), "--size", "16", "--ignore-value", "255", "--category", "thing"])
    assert rc == 0 and "wrote 6 images, 14 concepts (color: 11, thing: 3)" in capsys.readouterr().out
    val = open_dataset(f"{tmp_path / 'out'}?split=val")
    assert len(val) == 3 and all(val.split_name(i) == "val" for i in range(3))
    assert val.spec() == f"{(tmp_path / 'out').resolve()}?split=val" and len(open_dataset(val.spec())) == 3
    with pytest.raises(DatasetError, match=r"unknown option\(s\) size for a Broden folder; allowed: split"):
        open_dataset(f"{tmp_path / 'out'}?size=3")
    rc = main(["data", "convert", "segmentation", str(tmp_path / "src"), str(tmp_path / "bad"), "--classes",
               str(classes), "--size", "16"])
    assert rc == 2 and "does not cover label value(s) 255" in capsys.readouterr().err
    make_folders(tmp_path / "tex")
    assert main(["data", "convert", "folders", str(tmp_path / "tex"), str(tmp_path / "sc"), "--category", "scene",
                 "--size", "16", "--no-color"]) == 0
    assert "2 concepts (scene: 2)" in capsys.readouterr().out
    rc = main(["data", "convert", "merge", str(tmp_path / "out"), str(tmp_path / "sc"), str(tmp_path / "m")])
    assert rc == 0 and "wrote 10 images, 16 concepts (color: 11, scene: 2, thing: 3)" in capsys.readouterr().out
