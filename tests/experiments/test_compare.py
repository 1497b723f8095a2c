"""Comparing runs and checkpoint series (Bau et al. 2017, section 4; METHODS A3, A4) on known answers."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from helpers import IDENTITY, RedDetector, red_model, square_concepts

import netdissect
from netdissect.cli import main
from netdissect.errors import ConfigError
from netdissect.experiments import checkpoint_series, compare
from netdissect.experiments.series import CheckpointSeries, expand_weights, step_of
from netdissect.models import LoadedModel


def share_q(ds, label: int, layer: int) -> float:
    """A top fraction whose threshold falls just below the pixels of ``label``."""
    hit = (ds.pixel_labels[:, layer] == label).sum()
    return float((hit - 0.5) / (ds.pixel_labels[:, 0].size - 1))


def blue_model() -> LoadedModel:
    """Unit 1 reads the blue channel: it fires exactly on the sky (blue 128)."""
    m = RedDetector()
    with torch.no_grad():
        m.features.weight[0, 0] = 0.0
        m.features.weight[0, 2] = 1.0
    return LoadedModel(m.eval(), IDENTITY, "tests:BlueDetector")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    ds = square_concepts()
    base = tmp_path_factory.mktemp("cmp")
    kw = dict(layers=["features"], progress=False, num_workers=0, batch_size=6)
    red = netdissect.dissect(red_model(), ds, out=base / "red", quantile=share_q(ds, 1, 0), **kw)
    blue = netdissect.dissect(blue_model(), ds, out=base / "blue", quantile=share_q(ds, 2, 1), **kw)
    return red, blue, base


def test_gained_and_lost_concepts(two_runs):
    red, blue, base = two_runs
    cmp = compare([red.run_dir, blue.run_dir])
    assert cmp.names == ["red", "blue"]
    ch = cmp.changes
    top = ch[(ch["convention"] == "top-label") & (ch["layer"] == "features")]
    assert set(zip(top["change"], top["concept"])) == {("gained", "sky"), ("lost", "square")}
    assert set(top["before"]) == {"red"} and set(top["after"]) == {"blue"}
    everything = ch[(ch["convention"] == "top-label") & (ch["layer"] == "(all layers)")]
    assert set(zip(everything["change"], everything["concept"])) == {("gained", "sky"), ("lost", "square")}
    back = cmp.changes_between("blue", "red")
    back = back[(back["convention"] == "top-label") & (back["layer"] == "features")]
    assert set(zip(back["change"], back["concept"])) == {("gained", "square"), ("lost", "sky")}
    assert cmp.concepts("red", "features") == {("object", "square")}


def test_counts_match_each_runs_summary_under_both_conventions(two_runs):
    red, blue, _ = two_runs
    cmp = compare([red, blue], names=["A", "B"])
    u = cmp.unique.set_index(["run", "convention", "category"])["unique"]
    for name, r in (("A", red), ("B", blue)):
        for convention in ("per-category", "top-label"):
            for cat, n in r.unique_detectors("features", convention).items():
                assert u[(name, convention, cat)] == n
    d = cmp.detectors.set_index("run")
    assert d.loc["A", "detectors"] == 1 and d.loc["A", "share"] == 0.5 and d.loc["A", "units"] == 2
    assert len(cmp.best_iou) == 4 and cmp.best_iou["iou"].max() == 1.0


def test_compare_writes_page_and_tables(two_runs, tmp_path):
    red, blue, _ = two_runs
    compare([red.run_dir, blue.run_dir], out=tmp_path / "cmp")
    page = (tmp_path / "cmp" / "index.html").read_text()
    assert "Concepts gained and lost" in page and "sky" in page
    for name in ("unique.csv", "detectors.csv", "changes.csv", "plots/unique.png", "plots/share-iou.png"):
        assert (tmp_path / "cmp" / name).is_file(), name
    assert len(pd.read_csv(tmp_path / "cmp" / "changes.csv")) > 0


def test_dissection_compare_and_cli(two_runs, tmp_path, capsys):
    red, blue, _ = two_runs
    cmp = red.compare(blue, names=["r", "b"])
    assert cmp.names == ["r", "b"]
    assert main(["compare", str(red.run_dir), str(blue.run_dir), "--out", str(tmp_path / "c")]) == 0
    assert "gained" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="names"):
        compare([red, blue], names=["same", "same"])


def test_step_parsing_and_globs(tmp_path):
    assert step_of("runs/ckpt_001200.pt") == 1200 and step_of("iter-3-step_40.pth") == 40
    with pytest.raises(ConfigError, match="no training step"):
        step_of("final.pt")
    for step in (100, 2, 30):
        (tmp_path / f"ckpt_{step}.pt").write_bytes(b"")
    assert [p.name for p in expand_weights(str(tmp_path / "ckpt_*.pt"))] == ["ckpt_2.pt", "ckpt_30.pt",
                                                                            "ckpt_100.pt"]
    with pytest.raises(ConfigError, match="matches no file"):
        expand_weights(str(tmp_path / "nope_*.pt"))


def save_checkpoints(folder, steps):
    """Checkpoint k: the red unit scaled by 0 (step 1: no detector) or 1."""
    for step in steps:
        m = RedDetector()
        if step == steps[0]:
            with torch.no_grad():
                m.features.weight.zero_()
        torch.save(m.state_dict(), folder / f"ckpt_{step}.pt")


def test_checkpoint_glob_dissects_each_checkpoint(tmp_path):
    ds = square_concepts()
    save_checkpoints(tmp_path, [1, 10, 100])
    series = checkpoint_series(red_model, ds, weights=str(tmp_path / "ckpt_*.pt"), layers=["features"],
                               out=tmp_path / "series", progress=False, quantile=share_q(ds, 1, 0),
                               num_workers=0, batch_size=6)
    assert series.steps == [1, 10, 100]
    for step in (1, 10, 100):
        assert (tmp_path / "series" / f"ckpt_{step}" / "summary.json").is_file()
    t = series.table[(series.table["convention"] == "top-label") & (series.table["category"] == "object")]
    assert dict(zip(t["step"], t["unique"])) == {1: 0, 10: 1, 100: 1}
    assert (tmp_path / "series" / "series" / "index.html").is_file()
    # resumable: finished sub-runs are reused, not redone
    stamp = (tmp_path / "series" / "ckpt_10" / "summary.json").stat().st_mtime_ns
    again = checkpoint_series(red_model, ds, weights=str(tmp_path / "ckpt_*.pt"), layers=["features"],
                              out=tmp_path / "series", progress=False, quantile=share_q(ds, 1, 0),
                              num_workers=0, batch_size=6)
    assert (tmp_path / "series" / "ckpt_10" / "summary.json").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(again.table, CheckpointSeries(tmp_path / "series").table)


def test_cli_dissect_with_a_weights_glob(tmp_path, capsys):
    save_checkpoints(tmp_path, [5, 50])
    code = main(["dissect", "--model", "module:helpers:RedDetector", "--weights", str(tmp_path / "ckpt_*.pt"),
                 "--layers", "features", "--data", "synthetic:n=4", "--out", str(tmp_path / "s"), "--no-progress",
                 "--no-report", "--workers", "0"])
    assert code == 0
    assert "training step" in capsys.readouterr().out
    assert CheckpointSeries(tmp_path / "s").steps == [5, 50]
    assert (tmp_path / "s" / "ckpt_50" / "summary.json").is_file()
