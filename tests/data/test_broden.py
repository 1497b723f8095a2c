"""Tests of the Broden reader and writer (netdissect.data.broden)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netdissect.cli import main
from netdissect.data import Concept, ConceptDataset, ConceptTable, Sample, filehash, open_dataset
from netdissect.data.broden import BrodenDataset, write_broden
from netdissect.data.imageio import encode_label_rgb, read_label_png, read_rgb, write_label_png
from netdissect.data.memory import ArrayConcepts
from netdissect.data.synthetic import SyntheticConcepts
from netdissect.errors import ConfigError, DatasetError

N = 20


# -- fixtures and helpers -------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic():
    return SyntheticConcepts(n=N, size=64)


@pytest.fixture(scope="module")
def written(tmp_path_factory, synthetic):
    """SyntheticConcepts(n=20) written with PNG images (exact)."""
    return write_broden(synthetic, tmp_path_factory.mktemp("b") / "syn", image_format="png")


@pytest.fixture
def copy(written, tmp_path):
    """A fresh copy of the written folder, to corrupt."""
    dst = tmp_path / "broden"
    shutil.copytree(written, dst)
    return dst


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def write_rows(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def edit_index(root: Path, row: int, column: str, value: str) -> None:
    rows = read_rows(root / "index.csv")
    rows[row + 1][rows[0].index(column)] = value
    write_rows(root / "index.csv", rows)


def index_cell(root: Path, row: int, column: str) -> str:
    rows = read_rows(root / "index.csv")
    return rows[row + 1][rows[0].index(column)]


def label_masks(sample: Sample, max_number: int) -> np.ndarray:
    """(max_number + 1, sh, sw) bool: the union over layers of each label's pixels."""
    _, sh, sw = sample.pixel_labels.shape
    out = np.zeros((max_number + 1, sh, sw), dtype=bool)
    rows, cols = np.indices((sh, sw))
    for layer in sample.pixel_labels:
        out[layer, rows, cols] = True
    out[0] = False
    return out


class Handmade:
    """A tiny ConceptDataset with hand-set labels (2 images, 4x4 labels)."""

    def __init__(self):
        self.concepts = ConceptTable(
            [
                Concept(1, "red-c", "color"),
                Concept(2, "car", "object"),
                Concept(3, "wheel", "part"),
                Concept(4, "window", "part"),
                Concept(5, "street-s", "scene"),
                Concept(6, "unused", "object"),
            ],
            ["color", "object", "part", "scene"],
        )
        self.image_size = (8, 8)
        self.label_size = (4, 4)
        car = np.zeros((4, 4), np.int32)
        car[:2] = 2  # object 'car' on the top half ...
        car[3, :] = 3  # ... and part 'wheel' on the bottom row, in the same layer
        window = np.zeros((4, 4), np.int32)
        window[0, :2] = 4
        wheel2 = np.zeros((4, 4), np.int32)
        wheel2[3, :1] = 3  # a second part layer, overlapping the first wheel pixel
        red = np.full((4, 4), 1, np.int32)
        half_red = red * (np.arange(4)[:, None] < 2)
        self.samples = [
            Sample(self._image(0), np.stack([car, window, wheel2, half_red]), np.array([5], np.int64)),
            Sample(self._image(1), np.stack([red, np.zeros((4, 4), np.int32)]), np.array([], np.int64)),
        ]

    @staticmethod
    def _image(k):
        return (np.arange(8 * 8 * 3).reshape(8, 8, 3) * (k + 3) % 256).astype(np.uint8)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]

    def load_labels(self, i):
        s = self.samples[i]
        return Sample(None, s.pixel_labels, s.image_labels)

    def image_id(self, i):
        return ["street/a.jpg", "street/b;c.jpg"][i]

    def fingerprint(self):
        return "handmade"

    def spec(self):
        return "handmade"


def half_red_of(ds):
    return ds.samples[0].pixel_labels[3]


# -- round trip ----------------------------------------------------------------


def test_round_trip_png_is_exact(written, synthetic):
    b = BrodenDataset(written)
    assert isinstance(b, ConceptDataset)
    assert len(b) == N
    assert b.image_size == synthetic.image_size
    assert b.label_size == synthetic.label_size
    top = synthetic.concepts.max_number
    for i in range(N):
        a, c = synthetic[i], b[i]
        assert c.image.dtype == np.uint8 and c.pixel_labels.dtype == np.int32 and c.image_labels.dtype == np.int64
        assert np.array_equal(a.image, c.image)
        assert np.array_equal(label_masks(a, top), label_masks(c, top))
        assert sorted(a.image_labels.tolist()) == sorted(c.image_labels.tolist())
        lab = b.load_labels(i)
        assert lab.image is None and np.array_equal(lab.pixel_labels, c.pixel_labels)


def test_round_trip_per_category(written, synthetic):
    """Read-back layers are grouped by category and each category's union matches."""
    b = BrodenDataset(written)
    cat_of = b.concepts.category_index()
    for i in (0, 7, 19):
        a, c = synthetic[i], b[i]
        for k, cat in enumerate(("color", "object", "part", "texture")):
            mine = a.pixel_labels[k]
            back = np.zeros_like(mine)
            for layer in c.pixel_labels:
                in_cat = (layer > 0) & (cat_of[layer] == b.concepts.categories.index(cat))
                back[in_cat] = layer[in_cat]
            assert np.array_equal(mine, back), cat


def test_round_trip_concept_table(written, synthetic):
    b = BrodenDataset(written)
    assert b.concepts.categories == synthetic.concepts.categories
    assert [(c.number, c.name, c.category) for c in b.concepts] == [
        (c.number, c.name, c.category) for c in synthetic.concepts
    ]


def test_round_trip_jpeg_is_close(tmp_path, synthetic):
    root = write_broden(synthetic, tmp_path / "j", image_format="jpg", quality=95)
    b = BrodenDataset(root)
    assert b.image_id(0).endswith(".jpg")
    for i in (0, 5, 19):
        diff = np.abs(b[i].image.astype(np.int16) - synthetic[i].image.astype(np.int16))
        assert diff.mean() < 4
        assert np.array_equal(b[i].pixel_labels.max(0) > 0, synthetic[i].pixel_labels.max(0) > 0)


def test_ids_paths_spec_fingerprint(written):
    b = BrodenDataset(written)
    assert b.image_id(3) == "000003.png"
    assert b.image_path(3) == written.resolve() / "images" / "000003.png"
    assert b.image_path(3).is_file()
    assert b.spec() == str(written.resolve())
    again = open_dataset(b.spec())
    assert isinstance(again, BrodenDataset)
    assert again.fingerprint() == b.fingerprint()
    assert len(b.fingerprint()) == 64
    with pytest.raises(IndexError):
        b[N]
    assert np.array_equal(b[-1].pixel_labels, b[N - 1].pixel_labels)


def test_fingerprint_follows_content(copy):
    before = BrodenDataset(copy).fingerprint()
    # A referenced file changing size changes it.
    png = copy / "images" / index_cell(copy, 0, "object")
    size = png.stat().st_size
    noisy = np.random.default_rng(0).integers(12, 28, size=(32, 32)).astype(np.int32)
    write_label_png(png, noisy)  # valid object codes, but a much larger file
    assert png.stat().st_size != size
    after = BrodenDataset(copy).fingerprint()
    assert after != before
    # So does a change to a CSV file.
    rows = read_rows(copy / "label.csv")
    rows[1][5] = "synonym"
    write_rows(copy / "label.csv", rows)
    assert BrodenDataset(copy).fingerprint() != after


def uncompressed_png(path: Path, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 PNG without compression: its byte size depends on H and W only."""
    Image.fromarray(rgb, "RGB").save(path, format="PNG", compress_level=0)


def relabel_in_place(path: Path, labels: np.ndarray) -> None:
    """Rewrite a label PNG with other labels, keeping its byte size and its modification time."""
    st = path.stat()
    uncompressed_png(path, encode_label_rgb(labels))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def swap_codes(labels: np.ndarray) -> np.ndarray:
    """The two most frequent nonzero codes of a label map exchanged (relabelled classes)."""
    codes, counts = np.unique(labels[labels > 0], return_counts=True)
    a, b = codes[np.argsort(-counts)[:2]]
    out = labels.copy()
    out[labels == a], out[labels == b] = b, a
    return out


def test_fingerprint_follows_content_of_the_same_size_and_time(copy):
    """Relabelled classes written in place (same bytes count, mtime kept) must not serve old results."""
    png = copy / "images" / index_cell(copy, 0, "object")
    labels = read_label_png(png)
    image = copy / "images" / index_cell(copy, 1, "image")
    pixels = np.asarray(Image.open(image).convert("RGB"))
    uncompressed_png(png, encode_label_rgb(labels))  # same content, uncompressed: the "before" state
    uncompressed_png(image, pixels)
    before = BrodenDataset(copy).fingerprint()
    assert BrodenDataset(copy).fingerprint() == before
    relabel_in_place(png, swap_codes(labels))
    assert not np.array_equal(BrodenDataset(copy).load_labels(0).pixel_labels[1], labels)  # it was relabelled
    relabelled = BrodenDataset(copy).fingerprint()
    assert relabelled != before
    # An image changed the same way changes it too.
    st = image.stat()
    uncompressed_png(image, 255 - pixels)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert image.stat().st_size == st.st_size
    assert BrodenDataset(copy).fingerprint() not in (relabelled, before)
    # Back to the first labels and image: back to the first fingerprint (content, not history).
    relabel_in_place(png, labels)
    uncompressed_png(image, pixels)
    assert BrodenDataset(copy).fingerprint() == before


def test_fingerprint_digests_are_cached_and_checked(copy, tmp_path, monkeypatch):
    monkeypatch.setattr(filehash, "RACY_SECONDS", 0.0)  # files written a moment ago may be cached too
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    b = BrodenDataset(copy)
    first = b.fingerprint()
    sidecar = copy / filehash.SIDECAR
    cached = json.loads(sidecar.read_text())["files"]
    referenced = {e for i in range(N) for e in [b.image_id(i)] + [x for c in b.entries(i).values() for x in c
                                                                  if isinstance(x, str)]}
    assert set(cached) == referenced and len(referenced) > N
    # A second open trusts a digest whose file has the same size, times, inode and device ...
    name = b.image_id(2)
    tampered = json.loads(sidecar.read_text())
    tampered["files"][name][-1] = "0" * 32
    sidecar.write_text(json.dumps(tampered))
    assert BrodenDataset(copy).fingerprint() != first  # (proof that the cached digest was used)
    # ... and hashes the file again once any of them changed, even to the same content and mtime.
    st = (copy / "images" / name).stat()
    (copy / "images" / name).write_bytes((copy / "images" / name).read_bytes())
    os.utime(copy / "images" / name, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert BrodenDataset(copy).fingerprint() == first
    # A corrupt sidecar is ignored; an unwritable one falls back to ~/.cache/netdissect/digests.
    sidecar.write_text("{not json")
    assert BrodenDataset(copy).fingerprint() == first
    sidecar.unlink()
    sidecar.mkdir()  # cannot be replaced by a file
    assert BrodenDataset(copy).fingerprint() == first
    fallback = list((tmp_path / "home" / ".cache" / "netdissect" / "digests").glob("*.json"))
    assert len(fallback) == 1 and set(json.loads(fallback[0].read_text())["files"]) == referenced
    fallback[0].write_text(fallback[0].read_text().replace(cached[name][-1], "1" * 32))
    assert BrodenDataset(copy).fingerprint() != first  # the fallback is read too


def test_fingerprint_does_not_cache_files_changed_a_moment_ago(copy):
    """A file changed within the timestamp resolution could change again unseen: its digest is not kept."""
    png = copy / "images" / index_cell(copy, 0, "object")
    uncompressed_png(png, encode_label_rgb(swap_codes(read_label_png(png))))  # changed now
    BrodenDataset(copy).fingerprint()
    sidecar = copy / filehash.SIDECAR
    cached = json.loads(sidecar.read_text())["files"] if sidecar.exists() else {}
    assert index_cell(copy, 0, "object") not in cached


def test_fingerprint_names_a_missing_file(copy):
    name = index_cell(copy, 3, "object")
    (copy / "images" / name).unlink()
    with pytest.raises(DatasetError, match=rf"{re.escape(str(copy.resolve() / 'images' / name))} does not exist "
                                           rf"\(referenced by index\.csv line 5\)"):
        BrodenDataset(copy).fingerprint()


def test_split_filter(copy):
    rows = read_rows(copy / "index.csv")
    for k, row in enumerate(rows[1:]):
        row[1] = "val" if k % 4 == 0 else "train"
    write_rows(copy / "index.csv", rows)
    val = BrodenDataset(copy, split="val")
    train = BrodenDataset(copy, split="train")
    assert len(val) == 5 and len(train) == 15
    assert val.image_id(1) == "000004.png"
    assert val.split_name(1) == "val"
    assert val.fingerprint() != train.fingerprint() != BrodenDataset(copy).fingerprint()
    with pytest.raises(DatasetError, match=r"split 'test'.*'val'.*'train'|split 'test'.*'train'.*'val'"):
        BrodenDataset(copy, split="test")
    # The writer keeps the split of a Broden source.
    out = write_broden(val, copy.parent / "val_only", image_format="png")
    assert {r[1] for r in read_rows(out / "index.csv")[1:]} == {"val"}


# -- writer --------------------------------------------------------------------


def test_written_files_follow_broden_layout(written):
    header = read_rows(written / "index.csv")[0]
    assert header == ["image", "split", "ih", "iw", "sh", "sw", "color", "object", "part", "texture", "scene"]
    assert read_rows(written / "label.csv")[0] == ["number", "name", "category", "frequency", "coverage", "syns"]
    assert read_rows(written / "category.csv")[0] == ["name", "first", "last", "count", "frequency"]
    for cat in ("color", "object", "part", "texture", "scene"):
        assert read_rows(written / f"c_{cat}.csv")[0] == ["code", "number", "name", "frequency", "coverage"]
    row = read_rows(written / "index.csv")[1]
    assert row[:6] == ["000000.png", "train", "64", "64", "32", "32"]
    assert row[7] == "000000_object.png"
    assert re.fullmatch(r"\d+", row[10])  # the scene: an image-level label
    assert not (written.parent / "syn.partial").exists()


def test_written_metadata_parses_as_the_original_tools_parse_it(written):
    """The regexes of the original loadseg.py decode every label.csv / c_*.csv row."""
    for line in read_rows(written / "label.csv")[1:]:
        number, name, category, frequency, coverage, syns = line
        assert int(number) >= 1  # no row for label 0
        for part in category.split(";"):
            assert re.match(r"^([^(]*)\(([^)]*)\)$", part)
        assert re.match(r"^\d+$", frequency)
        assert re.match(r"^\d+\.\d*$", coverage)
    for cat in ("color", "object", "part", "texture", "scene"):
        rows = read_rows(written / f"c_{cat}.csv")[1:]
        assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))  # dense codes from 1
        for r in rows:
            assert re.match(r"^\d+\.\d*$", r[4])


def test_original_primary_category_rule_agrees(written, synthetic):
    """The original loadseg.py rule (max of (c_ coverage or 0, category index))
    gives every label that occurs the category of our concept table."""
    cats = [r[0] for r in read_rows(written / "category.csv")[1:]]
    coverage, frequency = {}, {}
    for cat in cats:
        for _code, number, _name, freq, cov in read_rows(written / f"c_{cat}.csv")[1:]:
            coverage[int(number), cat] = float(cov)
            frequency[int(number)] = frequency.get(int(number), 0) + int(freq)
    checked = 0
    for concept in synthetic.concepts:
        if not frequency.get(concept.number):
            continue
        _, best = max((coverage.get((concept.number, cat), 0), ic) for ic, cat in enumerate(cats))
        assert cats[best] == concept.category, concept.name
        checked += 1
    assert checked > 30


def test_writer_statistics_and_layer_split(tmp_path):
    ds = Handmade()
    root = write_broden(ds, tmp_path / "hand", image_format="png")
    index = read_rows(root / "index.csv")
    assert index[0][6:] == ["color", "object", "part", "scene"]
    first = dict(zip(index[0], index[1]))
    # The mixed car/wheel layer is split into an object layer and a part layer;
    # with the window and second wheel layers, image 0 has 3 part layers.
    assert first["image"] == "street/a.png"
    assert first["object"] == "street/a_object.png"
    assert first["part"] == "street/a_part_1.png;street/a_part_2.png;street/a_part_3.png"
    assert first["scene"] == "5"
    assert first["color"] == "street/a_color.png"
    second = dict(zip(index[0], index[2]))
    assert second["image"] == "street/b_c.png"  # ';' is not allowed in a file name
    assert second["color"] == "street/b_c_color.png"
    assert (root / "images" / "street" / "a_part_3.png").is_file()

    labels = {int(r[0]): r for r in read_rows(root / "label.csv")[1:]}
    # wheel: the union of its two layers covers 4 of 16 pixels, in one image.
    assert labels[3][2:5] == ["part(1)", "1", "0.25"]
    assert labels[2][2:5] == ["object(1)", "1", "0.5"]
    # red-c: half of image 0 and all of image 1; coverage is a sum over images.
    assert labels[1][2:5] == ["color(2)", "2", "1.5"]
    assert labels[5][2:5] == ["scene(1)", "1", "1.0"]  # image-level: whole image
    assert labels[6][1:5] == ["unused", "object(0)", "0", "0.0"]
    cats = {r[0]: r[1:] for r in read_rows(root / "category.csv")[1:]}
    assert cats["part"] == ["3", "4", "2", "2"]
    assert cats["object"] == ["2", "6", "2", "1"]
    assert cats["color"] == ["1", "1", "1", "2"]
    part_codes = read_rows(root / "c_part.csv")[1:]
    assert [r[:3] for r in part_codes] == [["1", "3", "wheel"], ["2", "4", "window"]]

    b = BrodenDataset(root)
    assert [(c.number, c.name, c.category) for c in b.concepts] == [
        (c.number, c.name, c.category) for c in ds.concepts
    ]
    for i in range(2):
        assert np.array_equal(label_masks(b[i], 6), label_masks(ds[i], 6))
        assert np.array_equal(b[i].image, ds[i].image)
    assert b[0].pixel_labels.shape == (5, 4, 4)  # colour, object, 3 part layers: category order
    assert (b[0].pixel_labels[0] == half_red_of(ds)).all()
    assert b[1].pixel_labels.shape == (1, 4, 4)  # the empty layer is not written


def test_writer_refuses_existing_folder_and_overwrites_on_request(tmp_path):
    ds = Handmade()
    root = write_broden(ds, tmp_path / "out", image_format="png")
    with pytest.raises(DatasetError, match=r"out.*already exists.*overwrite=True"):
        write_broden(ds, root)
    (root / "stray.txt").write_text("old")
    write_broden(ds, root, image_format="png", overwrite=True)
    assert not (root / "stray.txt").exists()
    assert len(BrodenDataset(root)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failed_write_leaves_nothing_that_looks_complete(tmp_path):
    class Broken(Handmade):
        def __getitem__(self, i):
            if i == 1:
                raise RuntimeError("disk on fire")
            return super().__getitem__(i)

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_broden(Broken(), tmp_path / "out", image_format="png")
    assert list(tmp_path.iterdir()) == []


def test_partial_folder_is_not_a_data_set(tmp_path):
    partial = tmp_path / "out.partial"
    (partial / "images").mkdir(parents=True)
    (partial / "label.csv").write_text("number,name,category,frequency,coverage,syns\n")
    with pytest.raises(DatasetError) as e:
        BrodenDataset(partial)
    msg = str(e.value)
    assert "missing index.csv" in msg and "category.csv" in msg
    assert "not in Broden format" in msg and "unfinished" in msg
    with pytest.raises(DatasetError, match="not in Broden format"):
        open_dataset(str(partial))


def test_writer_rejects_bad_arguments_and_labels(tmp_path):
    with pytest.raises(ConfigError, match="image_format='gif'"):
        write_broden(Handmade(), tmp_path / "x", image_format="gif")
    with pytest.raises(ConfigError, match="quality=0"):
        write_broden(Handmade(), tmp_path / "x", quality=0)
    ds = Handmade()
    ds.samples[1].pixel_labels[0, 0, 0] = 99
    with pytest.raises(DatasetError, match=r"street/b;c\.jpg.*99.*not in the concept table"):
        write_broden(ds, tmp_path / "x")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


# -- the reader: primary categories -------------------------------------------


def _minimal(root: Path, label_rows: list[str], c_files: dict[str, list[str]] | None):
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "images" / "a.png")
    (root / "index.csv").write_text("image,split,ih,iw,sh,sw,object,part\na.png,train,4,4,2,2,,\n")
    (root / "category.csv").write_text("name,first,last,count,frequency\nobject,1,3,3,1\npart,1,3,3,1\n")
    (root / "label.csv").write_text("number,name,category,frequency,coverage,syns\n" + "\n".join(label_rows) + "\n")
    for cat, rows in (c_files or {}).items():
        (root / f"c_{cat}.csv").write_text("code,number,name,frequency,coverage\n" + "\n".join(rows) + "\n")


def test_primary_category_is_largest_coverage(tmp_path):
    _minimal(
        tmp_path / "d",
        ["0,-,-,0,0.0,", "1,door,object(5);part(9),14,3.0,", "2,leg,object(1);part(1),2,1.0,",
         "3,tie,object(2);part(2),4,1.0,"],
        {
            "object": ["1,1,door,5,2.5", "2,2,leg,1,0.2", "3,3,tie,2,0.5"],
            "part": ["1,1,door,9,0.5", "2,2,leg,1,0.8", "3,3,tie,2,0.5"],
        },
    )
    b = BrodenDataset(tmp_path / "d")
    assert b.concepts[1].category == "object"  # 2.5 > 0.5 although part has more images
    assert b.concepts[2].category == "part"
    assert b.concepts[3].category == "object"  # a tie goes to the first category
    assert b.concepts[1].coverage == {"object": 2.5, "part": 0.5}
    assert 0 not in b.concepts


def test_primary_category_falls_back_to_label_csv_counts(tmp_path):
    _minimal(tmp_path / "d", ["1,door,object(5);part(9),14,3.0,", "2,tie,part(2);object(2),4,1.0,"], None)
    b = BrodenDataset(tmp_path / "d")
    assert b.concepts[1].category == "part"
    assert b.concepts[2].category == "object"


def test_all_c_files_removed_gives_the_same_table(copy, written):
    for p in copy.glob("c_*.csv"):
        p.unlink()
    a, b = BrodenDataset(written), BrodenDataset(copy)
    assert [(c.number, c.name, c.category) for c in a.concepts] == [
        (c.number, c.name, c.category) for c in b.concepts
    ]


# -- the reader: bad input -------------------------------------------------------


@pytest.mark.parametrize("name", ["index.csv", "label.csv", "category.csv"])
def test_missing_metadata_file(copy, name):
    (copy / name).unlink()
    with pytest.raises(DatasetError) as e:
        BrodenDataset(copy)
    assert f"missing {name}" in str(e.value) and "not in Broden format" in str(e.value)


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="nowhere.*does not exist"):
        BrodenDataset(tmp_path / "nowhere")


def test_index_missing_column(copy):
    rows = read_rows(copy / "index.csv")
    k = rows[0].index("texture")
    write_rows(copy / "index.csv", [r[:k] + r[k + 1:] for r in rows])
    with pytest.raises(DatasetError, match=r"index\.csv.*missing column\(s\) texture"):
        BrodenDataset(copy)


def broden_order_with_empty_columns(root: Path) -> list[str]:
    """Rewrite index.csv with every category column of the original Broden, in its order, the absent ones empty.

    The original Broden tools write such columns (``part,material,scene`` for a set with only colour,
    object and texture); returns the columns added.
    """
    rows = read_rows(root / "index.csv")
    header = rows[0]
    order = ["color", "object", "part", "material", "scene", "texture"]
    present = header[6:]
    columns = header[:6] + order + [c for c in present if c not in order]
    out = [columns]
    for r in rows[1:]:
        cell = dict(zip(header, r))
        out.append([cell.get(c, "") for c in columns])
    write_rows(root / "index.csv", out)
    return [c for c in columns[6:] if c not in present]


@pytest.fixture(scope="module")
def three_categories(tmp_path_factory):
    """A Broden folder with only the categories color, object and texture (as a converted CamVid + DTD set)."""
    table = ConceptTable([Concept(1, "red-c", "color"), Concept(2, "car", "object"), Concept(3, "striped", "texture")],
                         ["color", "object", "texture"])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    pixel = np.zeros((3, 2, 4, 4), np.int32)
    pixel[:, 0] = 1
    pixel[:, 1, :2] = 2
    ds = ArrayConcepts(images, pixel, table, image_labels=[[3], [], [3]])
    return ds, write_broden(ds, tmp_path_factory.mktemp("three") / "three", image_format="png")


def test_index_columns_of_categories_not_in_category_csv_are_ignored(three_categories, tmp_path):
    """NetDissect-Lite reads only the columns of category.csv's categories; so does the reader."""
    source, written = three_categories
    root = tmp_path / "b"
    shutil.copytree(written, root)
    assert broden_order_with_empty_columns(root) == ["part", "material", "scene"]
    assert read_rows(root / "index.csv")[0][6:] == ["color", "object", "part", "material", "scene", "texture"]
    b = BrodenDataset(root)
    assert b.concepts.categories == ("color", "object", "texture")
    assert b.ignored_columns == ("part", "material", "scene")
    assert len(b.notes) == 1 and re.search(r"index\.csv column\(s\) part, material, scene are not categories of "
                                           r"category\.csv \(color, object, texture\) and are ignored.*all empty",
                                           b.notes[0])
    for i in range(len(source)):
        np.testing.assert_array_equal(b[i].image, source[i].image)
        np.testing.assert_array_equal(b[i].pixel_labels, source[i].pixel_labels)
        np.testing.assert_array_equal(b[i].image_labels, source[i].image_labels)
    assert BrodenDataset(written).ignored_columns == () and BrodenDataset(written).notes == []
    # An ignored column that holds entries is still ignored, and the note says so.
    edit_index(root, 1, "scene", "7")
    b = BrodenDataset(root)
    assert np.array_equal(b[1].image_labels, source[1].image_labels)
    assert re.search(r"column 'scene' holds entries in 1 row\(s\) \(first: line 3\)", b.notes[0])


def test_image_listed_twice_is_refused_in_every_split(copy, tmp_path, capsys, monkeypatch):
    """dissect would count a repeated row twice: the reader refuses, naming the rows (also across splits)."""
    rows = read_rows(copy / "index.csv")
    rows.append(list(rows[3]))
    rows[-1][1] = "val"  # the same image again, in another split
    write_rows(copy / "index.csv", rows)
    message = (f"{copy.resolve() / 'index.csv'} lists 1 image more than once, and each listing would be counted: "
               f"{rows[3][0]} on lines 4, {N + 2}; list each image once")
    for split in (None, "train", "val"):
        with pytest.raises(DatasetError) as e:
            BrodenDataset(copy, split=split)
        assert str(e.value) == message
    with pytest.raises(DatasetError, match="more than once"):
        open_dataset(str(copy))
    assert main(["dissect", "--model", "efficientnet_lite0_random", "--layers", "blocks.5", "--data", str(copy),
                 "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "summary.json").exists()


def test_index_short_row(copy):
    rows = read_rows(copy / "index.csv")
    rows[3] = rows[3][:-1]
    write_rows(copy / "index.csv", rows)
    with pytest.raises(DatasetError, match=r"index\.csv line 4 has 10 fields but the header has 11"):
        BrodenDataset(copy)


def test_malformed_cell(copy):
    edit_index(copy, 2, "object", "000002_object.png;big dog")
    with pytest.raises(DatasetError) as e:
        BrodenDataset(copy)
    msg = str(e.value)
    assert "index.csv line 4" in msg and "'object'" in msg and "'big dog'" in msg


def test_malformed_size(copy):
    edit_index(copy, 0, "sh", "x")
    with pytest.raises(DatasetError, match=r"index\.csv line 2: column 'sh' holds 'x'"):
        BrodenDataset(copy)


def test_inconsistent_sizes(copy):
    edit_index(copy, 5, "ih", "65")
    with pytest.raises(DatasetError) as e:
        BrodenDataset(copy)
    msg = str(e.value)
    assert "line 7" in msg and "000005.png" in msg and "65,64,32,32" in msg and "64,64,32,32" in msg


def test_missing_label_png(copy):
    name = index_cell(copy, 4, "part")
    (copy / "images" / name).unlink()
    b = BrodenDataset(copy)  # opening is lazy ...
    with pytest.raises(DatasetError) as e:
        b[4]
    assert name in str(e.value) and "does not exist" in str(e.value)
    with pytest.raises(DatasetError, match=re.escape(name)):
        b.load_labels(4)
    with pytest.raises(DatasetError, match=re.escape(name)):  # ... the fingerprint is not
        b.fingerprint()


def test_missing_image(copy):
    (copy / "images" / "000006.png").unlink()
    b = BrodenDataset(copy)
    with pytest.raises(DatasetError, match=r"000006\.png does not exist.*line 8"):
        b[6]
    assert b.load_labels(6).pixel_labels.shape[0] > 0  # labels alone still load


def test_unreadable_image(copy):
    (copy / "images" / "000001.png").write_bytes(b"this is not a picture")
    with pytest.raises(DatasetError, match=r"000001\.png cannot be read as an image"):
        BrodenDataset(copy)[1]


def test_unreadable_label_png(copy):
    name = index_cell(copy, 1, "color")
    (copy / "images" / name).write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match=re.escape(name) + ".*cannot be read"):
        BrodenDataset(copy).load_labels(1)


def test_wrong_image_size(copy):
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(copy / "images" / "000002.png")
    with pytest.raises(DatasetError, match=r"000002\.png is 10x12.*64x64"):
        BrodenDataset(copy)[2]


def test_label_png_of_wrong_size(copy):
    name = index_cell(copy, 3, "object")
    write_label_png(copy / "images" / name, np.full((31, 30), 12, np.int32))
    with pytest.raises(DatasetError) as e:
        BrodenDataset(copy).load_labels(3)
    msg = str(e.value)
    assert name in msg and "31x30" in msg and "32x32" in msg


def test_unknown_code_in_label_png(copy):
    name = index_cell(copy, 0, "object")
    labels = read_label_png(copy / "images" / name)
    labels[5, 5] = 999
    labels[6, 6] = 300
    write_label_png(copy / "images" / name, labels)
    b = BrodenDataset(copy)  # checked lazily, not at open time
    with pytest.raises(DatasetError) as e:
        b[0]
    msg = str(e.value)
    assert name in msg and "300, 999" in msg and "not in label.csv" in msg
    b[1]  # other images are fine


def test_unknown_image_level_code(copy):
    edit_index(copy, 9, "scene", "777")
    b = BrodenDataset(copy)
    with pytest.raises(DatasetError) as e:
        b.load_labels(9)
    msg = str(e.value)
    assert "index.csv line 11" in msg and "000009.png" in msg and "777" in msg and "scene" in msg


def test_malformed_label_csv_category(copy):
    rows = read_rows(copy / "label.csv")
    rows[3][2] = "object:3"
    write_rows(copy / "label.csv", rows)
    with pytest.raises(DatasetError, match=r"label\.csv line 4: category cell 'object:3' is malformed"):
        BrodenDataset(copy)


def test_label_csv_missing_column(copy):
    rows = read_rows(copy / "label.csv")
    write_rows(copy / "label.csv", [r[:1] + r[2:] for r in rows])
    with pytest.raises(DatasetError, match=r"label\.csv lacks column\(s\) name"):
        BrodenDataset(copy)


def test_some_c_files_missing(copy):
    (copy / "c_part.csv").unlink()
    with pytest.raises(DatasetError, match=r"c_part\.csv"):
        BrodenDataset(copy)


def test_c_file_with_unknown_number(copy):
    with open(copy / "c_scene.csv", "a") as f:
        f.write("99,500,nowhere-s,1,1.0\n")
    with pytest.raises(DatasetError, match=r"c_scene\.csv line \d+: label number 500 is not in label\.csv"):
        BrodenDataset(copy)


def test_empty_index(copy):
    write_rows(copy / "index.csv", read_rows(copy / "index.csv")[:1])
    with pytest.raises(DatasetError, match=r"index\.csv lists no images"):
        BrodenDataset(copy)


# -- image decoding --------------------------------------------------------------


def test_read_rgb_converts_modes(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    out = read_rgb(tmp_path / "g.png", (3, 4))
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, :, 1], grey)
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0] = 200
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert read_rgb(tmp_path / "a.png")[0, 0].tolist() == [200, 0, 0]
    Image.fromarray(grey, "L").convert("P").save(tmp_path / "p.png")
    assert np.array_equal(read_rgb(tmp_path / "p.png")[:, :, 0], grey)


def test_label_png_modes(tmp_path):
    labels = np.array([[0, 1, 255], [256, 300, 1197]], np.int32)
    write_label_png(tmp_path / "l.png", labels)
    assert np.array_equal(read_label_png(tmp_path / "l.png"), labels)
    rgb = np.asarray(Image.open(tmp_path / "l.png"))
    assert rgb[1, 2].tolist() == [1197 % 256, 1197 // 256, 0]
    # RGBA and palette images decode as R + 256 G; grey images hold the number.
    Image.open(tmp_path / "l.png").convert("RGBA").save(tmp_path / "la.png")
    assert np.array_equal(read_label_png(tmp_path / "la.png"), labels)
    Image.open(tmp_path / "l.png").quantize(colors=16).save(tmp_path / "lp.png")
    assert np.array_equal(read_label_png(tmp_path / "lp.png"), labels)
    Image.fromarray(np.array([[0, 7], [12, 255]], np.uint8), "L").save(tmp_path / "lg.png")
    assert read_label_png(tmp_path / "lg.png").tolist() == [[0, 7], [12, 255]]


def test_pickles_for_dataloader_workers(written):
    import pickle

    b = BrodenDataset(written)
    clone = pickle.loads(pickle.dumps(b))
    assert clone.fingerprint() == b.fingerprint()
    assert np.array_equal(clone[3].pixel_labels, b[3].pixel_labels)
    assert isinstance(open_dataset(Path(written)), BrodenDataset)
