"""Experiment pages under RUN/experiments/ are linked from the run's report."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import torch
from helpers import IDENTITY
from torch import nn

import netdissect
from netdissect.cli.experiment_ablation import default_out, link_page
from netdissect.errors import ConfigError
from netdissect.models import LoadedModel
from netdissect.report import write_report
from netdissect.report.links import BEGIN, END, experiment_pages, link_experiments, run_of_page


@pytest.fixture()
def run(tmp_path):
    torch.manual_seed(0)
    model = LoadedModel(nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU()).eval(), IDENTITY, "tests:tiny")
    out = tmp_path / "run"
    netdissect.dissect(model, "synthetic:n=8,size=32", layers=["0"], out=out, progress=False, num_workers=0,
                       top_images=2)
    return out


def page(path: Path, title: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<!DOCTYPE html><html><head><title>{title}</title></head><body>x</body></html>")
    return path


def hrefs(html_file: Path) -> list[Path]:
    block = html_file.read_text()
    block = block[block.index(BEGIN):block.index(END)]
    return [(html_file.parent / h).resolve() for h in re.findall(r'href="([^"]+)"', block)]


def test_report_lists_experiment_pages_and_is_refreshed_in_place(run):
    index = write_report(run, images=False)
    text = index.read_text()
    assert BEGIN + END in text and 'id="experiments"' not in text  # no pages yet: an empty slot
    assert link_experiments(run) is None and not (run / "experiments" / "index.html").exists()

    ablation = page(run / "experiments" / "ablation-0" / "index.html", "Unit ablation &lt;0&gt;")
    one = page(run / "experiments" / "explain" / "goldfish.html", "goldfish")
    two = page(run / "experiments" / "explain" / "clock.html", "clock")
    listing = link_experiments(run)  # after the report was made: its section is filled in place
    assert [p["name"] for p in experiment_pages(run)] == ["ablation-0", "explain/clock", "explain/goldfish"]
    assert hrefs(index) == [ablation.resolve(), two.resolve(), one.resolve()]
    assert "Unit ablation &lt;0&gt;" in index.read_text()  # the title stays escaped
    assert listing == run / "experiments" / "index.html"
    assert hrefs(listing) == [ablation.resolve(), two.resolve(), one.resolve()]
    assert (run / "report" / "index.html").resolve().as_posix() in {
        (listing.parent / h).resolve().as_posix() for h in re.findall(r'href="([^"]+)"', listing.read_text())}

    index = write_report(run, images=False)  # a rebuilt report lists them too
    assert hrefs(index) == [ablation.resolve(), two.resolve(), one.resolve()]
    assert index.read_text().count(BEGIN) == 1


def test_pages_are_assigned_to_their_run_and_cli_defaults(tmp_path, capsys):
    run = tmp_path / "run"  # a run directory is known by its config.json
    run.mkdir()
    (run / "config.json").write_text("{}")
    inside = page(run / "experiments" / "adv" / "index.html", "attack")
    assert run_of_page(inside) == run.resolve()
    assert run_of_page(page(tmp_path / "elsewhere" / "experiments" / "x" / "index.html", "x")) is None

    args = argparse.Namespace(out=None, run=run)
    assert default_out(args, "ablation-0") == run / "experiments" / "ablation-0"
    assert default_out(argparse.Namespace(out=tmp_path / "o", run=None), "x") == tmp_path / "o"
    with pytest.raises(ConfigError, match="--out"):
        default_out(argparse.Namespace(out=None, run=None), "x")

    link_page(inside)
    assert "Linked from" in capsys.readouterr().out and (run / "experiments" / "index.html").is_file()
    link_page(tmp_path / "elsewhere" / "page.html", run)
    assert "Not linked" in capsys.readouterr().out
