"""The rotation experiment (Bau et al. 2017, section 3.2; METHODS A1) on known answers."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import IDENTITY
from torch import nn

import netdissect
from netdissect.cli import main
from netdissect.data.memory import ArrayConcepts
from netdissect.data.protocol import Concept, ConceptTable
from netdissect.errors import ConfigError
from netdissect.experiments import rotation
from netdissect.experiments.rotation import (
    Rotation,
    fractional_rotation,
    plane_decomposition,
    random_rotation,
    rotation_logarithm,
    unpermutation,
)
from netdissect.models import LoadedModel

LEVELS = (0, 128, 255)
#: 12 colours of the 3-level grid (black, the background, left out)
COLORS = [c for c in itertools.product(LEVELS, repeat=3) if any(c)][:12]
PATCH = 4


def colour_patches(n: int = 48, size: int = 16, per_image: int = 3, seed: int = 0) -> ArrayConcepts:
    """Images of ``per_image`` PATCH x PATCH patches, each one of the 12 colours, on black.

    Label number k + 1 ("colour-k", object) marks the pixels of colour k;
    later patches paint over earlier ones and the labels follow.
    """
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    labels = np.zeros((n, 1, size, size), dtype=np.int32)
    for i in range(n):
        for j in range(per_image):
            k = (i * per_image + j) % len(COLORS)  # every colour equally often
            y, x = rng.integers(0, size - PATCH + 1, size=2)
            images[i, y:y + PATCH, x:x + PATCH] = COLORS[k]
            labels[i, 0, y:y + PATCH, x:x + PATCH] = k + 1
    table = ConceptTable([Concept(k + 1, f"colour-{k}", "object") for k in range(len(COLORS))], ["object"])
    return ArrayConcepts(images, labels, table, name="patches")


class ColourUnits(nn.Module):
    """Unit k is (1 + a tiny ramp) on pixels of colour k and 0 elsewhere: a perfect colour-k detector.

    ``calls`` counts forward passes.
    """

    def __init__(self):
        super().__init__()
        centres = torch.tensor(COLORS, dtype=torch.float32) / 255.0
        self.register_buffer("centres", centres.view(1, -1, 3, 1, 1))
        self.features = nn.Identity()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        dist = (x[:, None] - self.centres).abs().amax(dim=2)  # (B, K, H, W), >= 0.5 off colour
        hit = (dist < 0.1).float()
        h, w = x.shape[-2:]
        ramp = torch.linspace(0, 1e-2, h * w, device=x.device).view(1, 1, h, w)
        return self.features(hit * (1 + ramp)).mean((2, 3))


def colour_model() -> LoadedModel:
    return LoadedModel(ColourUnits().eval(), IDENTITY, "tests:ColourUnits")


def patch_quantile(ds: ArrayConcepts) -> float:
    """A top fraction just below the rarest colour's share of pixels."""
    counts = np.bincount(ds.pixel_labels.ravel(), minlength=len(COLORS) + 1)[1:]
    return float(0.8 * counts.min() / ds.pixel_labels.size)


def run_rotation(ds, out, model=None, **kw):
    kw.setdefault("quantile", patch_quantile(ds))
    kw.setdefault("batch_size", 16)
    kw.setdefault("num_workers", 0)
    kw.setdefault("page", False)
    return rotation(model or colour_model(), ds, layers=["features"], out=out, progress=False, **kw)


# -- the matrices ---------------------------------------------------------------------------
@pytest.mark.parametrize("n,seed", [(2, 0), (7, 3), (16, 1), (33, 5)])
def test_random_rotation_is_in_so_n(n, seed):
    q = random_rotation(n, seed)
    assert q.dtype == torch.float64 and q.shape == (n, n)
    assert torch.allclose(q @ q.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    assert torch.linalg.det(q).item() == pytest.approx(1.0, abs=1e-10)
    assert torch.equal(q, random_rotation(n, seed))  # seeded
    assert not torch.allclose(q, random_rotation(n, seed + 1))


def test_random_rotation_follows_the_original_recipe():
    """QR of RandomState(seed).normal, columns times sign(diag R), first row negated if det < 0."""
    n, seed = 6, 1
    g = np.random.RandomState(seed).normal(size=(n, n))
    q, r = np.linalg.qr(g)
    q = q @ np.diag(np.sign(np.diag(r)))
    if np.linalg.det(q) < 0:
        q[0] = -q[0]
    assert np.allclose(random_rotation(n, seed).numpy(), q, atol=1e-14)


@pytest.mark.parametrize("n,seed", [(8, 1), (9, 2), (64, 3)])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0, 1.7])
def test_fractional_rotation_is_a_rotation(n, seed, alpha):
    q = random_rotation(n, seed)
    for method in ("expm", "eigen-angle"):
        r = fractional_rotation(q, alpha, method=method)
        assert torch.allclose(r @ r.T, torch.eye(n, dtype=torch.float64), atol=1e-10)
        assert torch.linalg.det(r).item() == pytest.approx(1.0, abs=1e-9)


def test_expm_path_goes_from_identity_to_q_along_a_one_parameter_group():
    q = random_rotation(32, 1)
    assert torch.equal(fractional_rotation(q, 0.0), torch.eye(32, dtype=torch.float64))
    assert torch.allclose(fractional_rotation(q, 1.0), q, atol=1e-10)
    half = fractional_rotation(q, 0.5)
    assert torch.allclose(half @ half, q, atol=1e-10)
    assert torch.allclose(fractional_rotation(q, 0.2) @ fractional_rotation(q, 0.3), half, atol=1e-10)
    log = rotation_logarithm(q)
    assert torch.allclose(log, -log.T, atol=0)
    assert torch.allclose(torch.linalg.matrix_exp(log), q, atol=1e-10)


def test_eigen_angle_variant_keeps_the_planes_and_angle_magnitudes():
    """The original's arccos drops each block's sign: here every plane turns the other way, R(1) = Q^T."""
    q = random_rotation(16, 1)
    w, angles = plane_decomposition(q)
    assert torch.allclose(w @ w.T, torch.eye(16, dtype=torch.float64), atol=1e-10)
    t = w.T @ q @ w  # block diagonal [[c, s], [-s, c]]
    for k, a in enumerate(angles.tolist()):
        i = 2 * k
        assert t[i, i].item() == pytest.approx(np.cos(a), abs=1e-9)
        assert t[i, i + 1].item() == pytest.approx(np.sin(a), abs=1e-9)
    r1 = fractional_rotation(q, 1.0, method="eigen-angle")
    assert torch.allclose(r1, q.T, atol=1e-9)
    assert torch.allclose(fractional_rotation(q, 0.4, method="eigen-angle"),
                          fractional_rotation(q.T, 0.4), atol=1e-9)
    with pytest.raises(ConfigError, match="method 'cayley'"):
        fractional_rotation(q, 0.4, method="cayley")


def test_unpermutation_is_a_permutation_bringing_big_entries_to_the_diagonal():
    r1 = random_rotation(20, 2)
    perm = unpermutation(r1)
    assert sorted(perm.tolist()) == list(range(20))
    p = r1[perm]
    assert torch.diagonal(p).sum() >= torch.diagonal(r1).sum()
    biggest = int(torch.argmax(r1.max(dim=1).values))
    assert perm[int(torch.argmax(r1[biggest]))] == biggest  # the largest row takes its largest column


# -- the experiment -----------------------------------------------------------------------------
def test_alpha_zero_is_bit_identical_to_the_plain_dissection(tmp_path):
    ds = colour_patches(n=24)
    rot = run_rotation(ds, tmp_path / "rot", alphas=[0, 1], seeds=2)
    plain = netdissect.dissect(colour_model(), ds, layers=["features"], out=tmp_path / "plain", progress=False,
                               quantile=patch_quantile(ds), batch_size=16, num_workers=0)
    d = rot.dissection
    for seed in (1, 2):
        name = rot.layer_name("features", seed, 0.0)
        assert name == "features"
        assert np.array_equal(d.iou(name).to_numpy(), plain.iou("features").to_numpy())
        assert np.array_equal(d.thresholds(name), plain.thresholds("features"))
        pd.testing.assert_frame_equal(d.tally(name), plain.tally("features"))
    # the planted model: 12 perfect detectors of 12 distinct colours
    zero = rot.table[(rot.table["alpha"] == 0) & (rot.table["convention"] == "top-label")]
    assert set(zero["total_unique"]) == {12} and set(zero["detectors"]) == {12}


def test_rotated_layer_equals_dissecting_the_rotated_model(tmp_path):
    """Both passes see the same rotation: the same as a model whose layer outputs R a."""
    ds = colour_patches(n=24)
    rot = run_rotation(ds, tmp_path / "rot", alphas=[0.6], seeds=[3])
    r = fractional_rotation(random_rotation(12, 3), 0.6).float()

    class Rotated(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = colour_model().module
            self.features = nn.Identity()

        def forward(self, x):
            self.inner.features.register_forward_hook(lambda m, i, o: self.features(
                (r @ o.reshape(o.shape[0], 12, -1)).reshape(o.shape)))
            return self.inner(x)

    model = LoadedModel(Rotated().eval(), IDENTITY, "tests:Rotated")
    ref = netdissect.dissect(model, ds, layers=["features"], out=tmp_path / "ref", progress=False,
                             quantile=patch_quantile(ds), batch_size=16, num_workers=0)
    got = rot.dissection.iou(rot.layer_name("features", 3, 0.6)).to_numpy()
    assert np.allclose(got, ref.iou("features").to_numpy(), atol=1e-12)


@pytest.mark.parametrize("cache", ["disk", "recompute"])
def test_one_forward_pass_serves_every_alpha(tmp_path, cache):
    ds = colour_patches(n=16)
    calls = {}
    for alphas in ([0, 1], [0, 0.25, 0.5, 0.75, 1]):
        loaded = colour_model()
        run_rotation(ds, tmp_path / f"{cache}-{len(alphas)}", model=loaded, alphas=alphas, seeds=2,
                     activation_cache=cache)
        calls[len(alphas)] = loaded.module.calls
    plain = colour_model()
    netdissect.dissect(plain, ds, layers=["features"], out=tmp_path / f"plain-{cache}", progress=False,
                       quantile=patch_quantile(ds), batch_size=16, num_workers=0, activation_cache=cache)
    assert calls[2] == calls[5] == plain.module.calls + 1  # + the one dry run that counts the units


def test_planted_detectors_lose_unique_concepts_as_alpha_grows(tmp_path):
    ds = colour_patches()
    rot = run_rotation(ds, tmp_path / "rot", alphas=[0, 0.5, 1], seeds=3, page=True)
    s = rot.summary("top-label").set_index("alpha")
    assert s.loc[0.0, "total_unique"] == 12 and s.loc[0.0, "total_unique_std"] == 0
    assert s.loc[1.0, "total_unique"] < s.loc[0.0, "total_unique"]
    assert s.loc[1.0, "total_unique"] <= s.loc[0.5, "total_unique"] <= 12
    # files: table, parameters, page with plots
    t = pd.read_csv(tmp_path / "rot" / "rotation.csv")
    assert list(t.columns) == ["layer", "alpha", "seed", "convention", "category", "unique", "units", "detectors",
                               "total_unique"]
    assert len(t) == 3 * 3 * 2  # alphas x seeds x conventions, one category
    params = json.loads((tmp_path / "rot" / "rotation.json").read_text())
    assert params["seeds"] == [1, 2, 3] and params["method"] == "expm"
    page = tmp_path / "rot" / "rotation" / "index.html"
    assert "Random rotation of the basis" in page.read_text()
    assert (tmp_path / "rot" / "rotation" / "rotation-0.png").stat().st_size > 1000
    again = Rotation.load(tmp_path / "rot")  # read back
    pd.testing.assert_frame_equal(again.table, rot.table)


def test_unpermute_keeps_the_counts(tmp_path):
    ds = colour_patches(n=24)
    a = run_rotation(ds, tmp_path / "a", alphas=[0, 1], seeds=[1])
    b = run_rotation(ds, tmp_path / "b", alphas=[0, 1], seeds=[1], unpermute=True)
    cols = ["alpha", "convention", "unique", "units", "detectors"]
    pd.testing.assert_frame_equal(a.table[cols], b.table[cols])
    assert b.layer_name("features", 1, 0.0) != "features"  # P R(0) = P: a derived layer


def test_bad_arguments_name_the_value(tmp_path):
    ds = colour_patches(n=8)
    with pytest.raises(ConfigError, match="alphas"):
        run_rotation(ds, tmp_path / "x", alphas=[0.5, -1])
    with pytest.raises(ConfigError, match="seeds"):
        run_rotation(ds, tmp_path / "x", seeds=0)
    with pytest.raises(ConfigError, match="eigen"):
        run_rotation(ds, tmp_path / "x", method="schur")


def test_cli_experiment_rotation(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["experiment", "rotation", "--model", f"module:{__name__}:ColourUnits", "--data", "synthetic:n=6",
                 "--layers", "features", "--alphas", "0", "1", "--seeds", "1", "--out", str(out),
                 "--no-progress", "--no-report", "--workers", "0", "--batch-size", "6"])
    assert code == 0
    text = capsys.readouterr().out
    assert "alpha" in text and "rotation.csv" in text
    assert Rotation.load(out).params["alphas"] == [0.0, 1.0]
