"""`netdissect describe` on the command line: into a fresh folder and beside a dissection (report included)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "labeling"))
from words_helpers import WORDS, PlantedImageText, colour_probe  # noqa: E402

import netdissect  # noqa: E402
from netdissect.cli import main  # noqa: E402
from netdissect.imagetext import register_image_text  # noqa: E402

MODEL = "module:words_helpers:colour_units"


@register_image_text("planted_test")
def _planted(rest, *, weights, options):
    return PlantedImageText()


@pytest.fixture(scope="module")
def broden(tmp_path_factory):
    from netdissect.data.broden import write_broden

    ds, _ = colour_probe(per_concept=20)
    return write_broden(ds, tmp_path_factory.mktemp("probe") / "colours", image_format="png")


def describe(broden, out, *extra):
    return main(["describe", "--model", MODEL, "--layers", "features", "fc", "--probe", str(broden),
                 "--image-text", "planted_test", "--out", str(out), "--workers", "0", "--no-progress", *extra])


def test_describe_into_a_fresh_folder(broden, tmp_path, capsys):
    assert describe(broden, tmp_path / "run", "--concepts", f"broden:{broden}", "--similarity", "wpmi") == 0
    out = capsys.readouterr().out
    assert "Words for 8 units (wpmi over 4 words" in out and "words-wpmi" in out
    result = netdissect.Description.load(tmp_path / "run")
    assert list(result.labels["label"]) == WORDS * 2
    assert list(result.labels["concept"][:4]) == [f"{w}-c" for w in WORDS]


def test_describe_beside_a_dissection_rewrites_its_report(broden, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["dissect", "--model", MODEL, "--layers", "features", "--data", str(broden), "--out", str(out),
                 "--quantile", "0.2", "--workers", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert describe(broden, out, "--layers", "features", "--top", "3") == 0
    printed = capsys.readouterr().out
    assert "Agreement with the IoU labels" in printed and "Report:" in printed
    index = (out / "report" / "index.html").read_text()
    assert "Words and IoU labels" in index and "words-soft_wpmi" in index and "100%" in index
    gallery = next((out / "report").glob("layer-*.html")).read_text()
    assert 'class="words"' in gallery and "yellow, " in gallery


def test_bad_similarity_and_concepts_are_one_line_errors(broden, tmp_path, capsys):
    assert describe(broden, tmp_path / "a", "--similarity", "softwpmi") == 2
    assert "soft_wpmi" in capsys.readouterr().err
    assert describe(broden, tmp_path / "b", "--concepts", "nothing-like-this") == 2
    err = capsys.readouterr().err
    assert err.startswith("netdissect describe: error: concepts 'nothing-like-this' is not a vocabulary")
