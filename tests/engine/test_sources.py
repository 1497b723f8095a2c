"""Sources by known answers: stored labels, photos + a segmenter, a generator + a segmenter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import IDENTITY, red_model, square_concepts
from PIL import Image
from torch import nn

import netdissect
from netdissect.data.synthetic import SyntheticConcepts
from netdissect.engine.sources import ConceptSource, GeneratorSource, SegmentedSource, latent
from netdissect.errors import ConfigError
from netdissect.models import LoadedGenerator, Preprocess
from netdissect.segment import OracleSegmenter, load_segmenter

COLORS = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=torch.float32) / 255


class Painter(nn.Module):
    """A hand-weighted generator: unit k of layer ``units`` paints colour k exactly where it is active.

    z (N, 4) -> the four rows of a 4x4 grid are given to the four units in the order
    ``z.argsort()``; unit k is 2.0 on its row and 0 elsewhere, and the 64x64 image is colour k
    (red, green, blue, yellow) there.  Output in [-1, 1].  (Rows, not blocks: a bilinear
    upsampling of a block has corners no single threshold separates exactly.)
    """

    def __init__(self):
        super().__init__()
        self.units = nn.Identity()
        self.register_buffer("colors", COLORS.clone())

    def forward(self, z):
        n = z.shape[0]
        perm = z.argsort(dim=1)  # perm[n, r]: the unit painting row r
        maps = torch.zeros(n, 4, 4, 4)
        for r in range(4):
            maps[torch.arange(n), perm[:, r], r, :] = 2.0
        h = self.units(maps)
        on = (h > 1).float().repeat_interleave(16, 2).repeat_interleave(16, 3)  # (N, 4, 64, 64)
        image = torch.einsum("nkhw,kc->nchw", on, self.colors)
        return image * 2 - 1


def test_generator_unit_painting_a_concept_gets_it_with_iou_one(tmp_path):
    gen = LoadedGenerator(Painter(), (4,), (-1.0, 1.0), "tests:Painter")
    n = 6
    # exactly a quarter of each unit's upsampled pixels are its row: q puts the threshold between
    # the inside (>= 0.5625 * 2) and the outside (<= 0.4375 * 2) of the bilinear edge
    inside, total = n * 16 * 16, n * 32 * 32
    result = netdissect.dissect(generator=gen, segmenter="color", samples=n, layers=["units"], out=tmp_path / "g",
                                quantile=(inside - 0.5) / (total - 1), batch_size=4, num_workers=0, progress=False)
    labels = result.labels.set_index("unit")
    assert [labels.loc[u, "label"] for u in (1, 2, 3, 4)] == ["red-c", "green-c", "blue-c", "yellow-c"]
    assert (labels["iou"] == 1.0).all() and labels["detector"].all()
    assert result.config["options"]["protocol"] == "pnas2020"  # the GAN default
    assert result.config["source"] == {"kind": "generator", "generator": "tests:Painter", "weights": None,
                                       "segmenter": "color", "samples": n, "seed": 0}
    # each unit's top images hold it in some row: its top map is 2 on exactly a quarter
    top = result.top_images("units")
    assert ((top["maps"][:, 0] == 2.0).mean(axis=(1, 2)) == 0.25).all()


def test_generator_source_is_reproducible_from_seed_and_index():
    gen = LoadedGenerator(Painter(), (4,), (-1.0, 1.0), "tests:Painter")
    seg = load_segmenter("color")
    a, b = GeneratorSource(gen, seg, 10, seed=3), GeneratorSource(gen, seg, 10, seed=3)
    batch = next(iter(a.batches(range(2, 7), batch_size=5)))
    assert batch.indices.tolist() == [2, 3, 4, 5, 6]
    assert torch.equal(batch.latents[1], latent(3, 3, (4,)))
    assert np.array_equal(a.image(4), b.image(4))
    assert not torch.equal(latent(3, 4, (4,)), latent(4, 4, (4,)))
    assert a.fingerprint() == b.fingerprint() != GeneratorSource(gen, seg, 10, seed=4).fingerprint()
    assert a.image_size == (64, 64) and a.label_size == (32, 32)
    with pytest.raises(ConfigError, match="samples must be a positive integer"):
        GeneratorSource(gen, seg, 0)


def test_oracle_segmenter_gives_exactly_the_stored_label_result(tmp_path):
    ds = SyntheticConcepts(n=20, size=64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1))
    kw = dict(layers=["2"], preprocess=IDENTITY, batch_size=6, num_workers=0, progress=False, quantile=0.02)
    stored = netdissect.dissect(model, ds, out=tmp_path / "stored", **kw)
    oracle = netdissect.dissect(model, ds, segmenter=OracleSegmenter(ds), out=tmp_path / "oracle", **kw)
    for name in ("tally.csv",):
        assert (stored.layer_dir("2") / name).read_bytes() == (oracle.layer_dir("2") / name).read_bytes()
    assert np.array_equal(stored.iou("2").to_numpy(), oracle.iou("2").to_numpy())
    assert stored.labels["detector"].any()  # the comparison is not between two empty results
    assert oracle.config["source"]["kind"] == "segmented"


def test_a_folder_of_photos_becomes_concept_data_with_a_segmenter(tmp_path):
    ds = square_concepts(n=10)
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i in range(len(ds)):
        Image.fromarray(ds.images[i]).save(photos / ("sub" if i % 2 else "") / f"p{i:02d}.png")
    # unit 1 of red_model is the red channel: exactly the square, which the colour namer calls red
    red = (ds.images[..., 0] == 255).sum()
    n = ds.images[..., 0].size
    result = netdissect.dissect(red_model(), photos, segmenter="color?size=16", layers=["features"],
                                out=tmp_path / "run", quantile=float((red - 0.5) / (n - 1)), batch_size=4,
                                num_workers=0, progress=False)
    first = result.labels.set_index("unit").loc[1]
    assert first["label"] == "red-c" and first["category"] == "color" and first["iou"] == 1.0
    assert result.config["data"] == str(photos)
    assert sorted(result.image_ids.values())[0] in {"p00.png", "p02.png"}


def test_sources_refuse_inconsistent_arguments(tmp_path):
    gen = LoadedGenerator(Painter(), (4,), (-1.0, 1.0), "tests:Painter")
    with pytest.raises(ConfigError, match="samples need a segmenter"):
        netdissect.dissect(generator=gen, layers=["units"], out=tmp_path / "a")
    with pytest.raises(ConfigError, match="give neither model nor data"):
        netdissect.dissect(red_model(), generator=gen, segmenter="color", layers=["units"], out=tmp_path / "b")
    with pytest.raises(ConfigError, match="samples= is for generator dissection"):
        netdissect.dissect(red_model(), square_concepts(), samples=5, layers=["features"], out=tmp_path / "c")
    source = ConceptSource(square_concepts(), Preprocess())
    with pytest.raises(ConfigError, match="not both"):
        netdissect.dissect(red_model(), source, segmenter="color", layers=["features"], out=tmp_path / "d")
    segmented = SegmentedSource(square_concepts(), load_segmenter("color"), IDENTITY)
    assert [segmented.concepts[k].name for k in segmented.concepts.numbers()][:2] == ["black-c", "blue-c"]
    assert segmented.label_size == (8, 8)  # the colour namer's default: half the image size
