"""Tests of the procedural concept data set (netdissect.data.synthetic)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from netdissect.data import ConceptDataset, list_datasets, open_dataset
from netdissect.data.synthetic import (
    _PALETTE,
    CATEGORIES,
    COLORS,
    FOREGROUND_OBJECTS,
    PART_OF,
    SCENES,
    SyntheticConcepts,
)
from netdissect.errors import DatasetError

W2COLOR = Path(__file__).resolve().parents[3] / "shared" / "assets" / "reference" / "netdissect" / "w2color.npy"
PIXEL_CATEGORIES = ("color", "object", "part", "texture")  # the order of the label layers


@pytest.fixture(scope="module")
def ds():
    return SyntheticConcepts(n=300)


@pytest.fixture(scope="module")
def samples(ds):
    return [ds[i] for i in range(60)]


def _number(ds, name):
    return ds.concepts.by_name(name).number


def _sampled_image(ds, sample):
    """The image pixels the label pixels were sampled from (label resolution)."""
    idx = ds._label_rows
    return sample.image[idx[:, None], idx[None, :]]


# -- determinism -------------------------------------------------------------


def _equal(a, b):
    return (
        np.array_equal(a.image, b.image)
        and np.array_equal(a.pixel_labels, b.pixel_labels)
        and np.array_equal(a.image_labels, b.image_labels)
    )


def test_same_index_twice_is_identical(ds):
    first = ds[17]
    for i in (3, 250, 0):  # other images in between must not matter
        ds[i]
    assert _equal(first, ds[17])


def test_two_instances_agree(ds):
    other = SyntheticConcepts(n=300)
    for i in (0, 1, 99, 299):
        assert _equal(ds[i], other[i])


def test_random_access_does_not_depend_on_n(ds):
    # Image i depends only on (seed, i), not on how many images the set has.
    assert _equal(SyntheticConcepts(n=5)[4], ds[4])


def test_different_seeds_differ():
    a, b = SyntheticConcepts(n=10, seed=0), SyntheticConcepts(n=10, seed=1)
    assert not any(np.array_equal(a[i].image, b[i].image) for i in range(10))
    assert a.fingerprint() != b.fingerprint()


def test_different_indices_differ(samples):
    images = {s.image.tobytes() for s in samples}
    assert len(images) == len(samples)


GOLDEN = "b4ea89e6349fb856e0b90d7fcbf025b33df2296da800e400feecaa1476c078c5"


def test_identical_across_runs():
    """Pinned content of SyntheticConcepts(n=3, size=64).

    If this fails, generated images changed: either the generator was edited
    (bump GENERATOR_VERSION, so caches keyed by the fingerprint are not
    reused, and update GOLDEN) or numpy changed its random streams.
    """
    import hashlib

    d = SyntheticConcepts(n=3, size=64)
    h = hashlib.sha256()
    for i in range(3):
        s = d[i]
        h.update(s.image.tobytes())
        h.update(s.pixel_labels.tobytes())
        h.update(s.image_labels.tobytes())
    assert h.hexdigest() == GOLDEN


def test_pickle_round_trip(ds):
    clone = pickle.loads(pickle.dumps(ds))
    assert clone == ds
    assert _equal(clone[42], ds[42])


# -- shapes, types, protocol -------------------------------------------------


def test_protocol_and_shapes(ds, samples):
    assert isinstance(ds, ConceptDataset)
    assert len(ds) == 300
    assert ds.image_size == (224, 224)
    assert ds.label_size == (112, 112)
    for s in samples[:5]:
        assert s.image.shape == (224, 224, 3) and s.image.dtype == np.uint8
        assert s.pixel_labels.shape == (4, 112, 112) and s.pixel_labels.dtype == np.int32
        assert s.image_labels.shape == (1,) and s.image_labels.dtype == np.int64


@pytest.mark.parametrize("size,label", [(64, 32), (65, 32), (227, 113)])
def test_other_sizes(size, label):
    d = SyntheticConcepts(n=3, size=size)
    s = d[2]
    assert d.image_size == (size, size) and d.label_size == (label, label)
    assert s.image.shape == (size, size, 3)
    assert s.pixel_labels.shape == (4, label, label)


def test_load_labels_matches_getitem(ds, samples):
    for i in range(0, 60, 7):
        lab = ds.load_labels(i)
        assert lab.image is None
        assert np.array_equal(lab.pixel_labels, samples[i].pixel_labels)
        assert np.array_equal(lab.image_labels, samples[i].image_labels)


def test_index_bounds(ds):
    assert _equal(ds[-1], ds[299])
    with pytest.raises(IndexError):
        ds[300]
    with pytest.raises(IndexError):
        ds.load_labels(-301)
    assert ds.image_id(7) == "000007"


# -- the concept table ---------------------------------------------------------


def test_concept_table(ds):
    table = ds.concepts
    assert table.categories == CATEGORIES == ("color", "object", "part", "texture", "scene")
    assert table.numbers() == list(range(1, len(table) + 1))
    names = [c.name for c in table]
    assert len(set(names)) == len(names)  # one concept per word
    colors = [c.name for c in table if c.category == "color"]
    assert colors == [f"{c}-c" for c in COLORS]
    assert len(colors) == 11
    scenes = [c.name for c in table if c.category == "scene"]
    assert scenes == [f"{s}-s" for s in SCENES]
    assert {"sky", "sea", "sand", "grass", "building", "road", "wall", "floor", "house", "car"} <= {
        c.name for c in table if c.category == "object"
    }
    assert table.by_name("window").category == "part"
    assert {c.name for c in table if c.category == "texture"} == {
        "striped", "dotted", "chequered", "zigzagged", "grid", "speckled"
    }


# -- labels ------------------------------------------------------------------


def test_labels_are_known_and_in_their_layer(ds, samples):
    cat_index = ds.concepts.category_index()
    for s in samples:
        for layer, cat in zip(s.pixel_labels, PIXEL_CATEGORIES):
            codes = np.unique(layer)
            codes = codes[codes != 0]
            assert all(int(c) in ds.concepts for c in codes)
            assert (cat_index[codes] == CATEGORIES.index(cat)).all(), cat
        (scene,) = s.image_labels
        assert ds.concepts[int(scene)].category == "scene"


def test_every_pixel_has_a_colour_and_an_object(samples):
    for s in samples:
        assert (s.pixel_labels[0] > 0).all()
        assert (s.pixel_labels[1] > 0).all()


def test_parts_lie_on_their_objects(ds, samples):
    """Occlusion consistency: a part label sits on an object that has that part."""
    allowed = np.zeros((ds.concepts.max_number + 1, ds.concepts.max_number + 1), dtype=bool)
    for part, objects in PART_OF.items():
        for obj in objects:
            allowed[_number(ds, part), _number(ds, obj)] = True
    foreground = [_number(ds, o) for o in FOREGROUND_OBJECTS]
    partless = [_number(ds, o) for o in ("ball", "sun", "box")]
    seen_parts = 0
    for s in samples:
        obj, part = s.pixel_labels[1], s.pixel_labels[2]
        has_part = part > 0
        seen_parts += has_part.sum()
        assert allowed[part[has_part], obj[has_part]].all()
        # Background objects and partless objects never carry a part label.
        assert not (has_part & ~np.isin(obj, foreground)).any()
        assert not (has_part & np.isin(obj, partless)).any()
    assert seen_parts > 0


def test_occluded_objects_lose_their_labels():
    """Where a later object covers an earlier one, only the later one is labelled."""
    d = SyntheticConcepts(n=400)
    found = 0
    for i in range(400):
        s = d.load_labels(i)
        obj, part = s.pixel_labels[1], s.pixel_labels[2]
        house, tree = _number(d, "house"), _number(d, "tree")
        # A pixel can hold only one object, and the part layer agrees with it:
        # no 'roof' pixel where a tree is painted on top, etc.
        roof, crown = _number(d, "roof"), _number(d, "crown")
        assert not ((part == roof) & (obj != house)).any()
        assert not ((part == crown) & (obj != tree)).any()
        found += int(((obj == house).any() and (obj == tree).any()))
    assert found > 0


def test_every_concept_appears_in_a_few_hundred_images(ds):
    counts = np.zeros(ds.concepts.max_number + 1, dtype=int)
    for i in range(len(ds)):
        s = ds.load_labels(i)
        present = np.unique(np.concatenate([s.pixel_labels.ravel(), s.image_labels]))
        counts[present] += 1
    names = ds.concepts.names()
    rare = [names[n] for n in ds.concepts.numbers() if counts[n] < 10]
    assert not rare, f"concepts in fewer than 10 of 300 images: {rare}"


def test_textured_and_plain_regions_both_occur(samples):
    texture = np.stack([s.pixel_labels[3] for s in samples])
    assert 0.05 < (texture > 0).mean() < 0.7


# -- pixels ------------------------------------------------------------------


def test_colour_labels_name_the_painted_colour(ds, samples):
    """Every pixel is nearest to a palette tone of the colour it is labelled with."""
    names, tones = [], []
    for name, variants in _PALETTE.items():
        for pair in variants:
            for tone in pair:
                names.append(ds.concepts.by_name(f"{name}-c").number)
                tones.append(tone)
    names, tones = np.array(names), np.array(tones, dtype=np.float32)
    agree = total = 0
    for s in samples:
        px = _sampled_image(ds, s).reshape(-1, 3).astype(np.float32)
        d = ((px[:, None, :] - tones[None, :, :]) ** 2).sum(-1)
        nearest = names[d.argmin(1)]
        agree += (nearest == s.pixel_labels[0].ravel()).sum()
        total += px.shape[0]
    assert agree / total > 0.99


@pytest.mark.assets
@pytest.mark.skipif(not W2COLOR.exists(), reason="needs ../shared/assets (the w2color colour-name table)")
def test_colour_labels_agree_with_broden_colour_namer(ds, samples):
    w2color = np.load(W2COLOR)  # (32, 32, 32) index into COLORS, from RGB // 8
    first = ds.concepts.by_name("black-c").number
    agree = total = 0
    for s in samples:
        px = _sampled_image(ds, s) // 8
        named = w2color[px[..., 0], px[..., 1], px[..., 2]] + first
        agree += (named == s.pixel_labels[0]).sum()
        total += named.size
    assert agree / total > 0.97


def test_images_are_not_flat(ds, samples):
    """Noise: pixels of one plain, single-colour region still vary."""
    s = samples[0]
    img = _sampled_image(ds, s).astype(np.float32)
    plain = s.pixel_labels[3] == 0
    colour = s.pixel_labels[0]
    values, counts = np.unique(colour[plain], return_counts=True)
    big = values[counts.argmax()]
    region = img[plain & (colour == big)]
    assert region.std(axis=0).mean() > 1.0
    assert region.std(axis=0).mean() < 15.0  # mild


# -- spec, registry, options ---------------------------------------------------


def test_spec_round_trip(ds):
    assert ds.spec() == "synthetic:n=300,seed=0,size=224"
    again = open_dataset(ds.spec())
    assert isinstance(again, SyntheticConcepts)
    assert again == ds
    assert again.fingerprint() == ds.fingerprint()
    assert _equal(again[5], ds[5])


def test_registered_and_options_from_strings():
    assert "synthetic" in list_datasets()
    assert isinstance(open_dataset("synthetic:n=3"), SyntheticConcepts)
    d = open_dataset("synthetic:n=7,seed=3,size=64")
    assert (len(d), d.seed, d.size) == (7, 3, 64)
    assert d.spec() == "synthetic:n=7,seed=3,size=64"
    assert open_dataset("synthetic").spec() == "synthetic:n=1000,seed=0,size=224"


def test_fingerprint_depends_on_every_option():
    base = SyntheticConcepts(n=10, seed=0, size=64).fingerprint()
    assert base == SyntheticConcepts(n="10", seed="0", size="64").fingerprint()
    assert base != SyntheticConcepts(n=11, seed=0, size=64).fingerprint()
    assert base != SyntheticConcepts(n=10, seed=2, size=64).fingerprint()
    assert base != SyntheticConcepts(n=10, seed=0, size=66).fingerprint()


@pytest.mark.parametrize(
    "spec,words",
    [
        ("synthetic:n=abc", ["n=", "abc", "integer"]),
        ("synthetic:seed=-1", ["seed", ">= 0"]),
        ("synthetic:size=8", ["size", ">= 16"]),
        ("synthetic:colour=red", ["colour", "allowed", "n, seed, size"]),
    ],
)
def test_bad_options(spec, words):
    with pytest.raises(DatasetError) as e:
        open_dataset(spec)
    for w in words:
        assert w in str(e.value)
