"""The command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from netdissect.cli import main

PY = sys.executable


def cli(*args, **kw):
    return subprocess.run([PY, "-m", "netdissect", *args], capture_output=True, text=True, timeout=600, **kw)


def test_layers_lists_names_and_shapes(capsys):
    assert main(["layers", "torchvision:resnet18"]) == 0
    out = capsys.readouterr().out
    assert "layer4" in out and "512x7x7" in out
    assert "layer1.0.relu" in out and "not dissectable" in out  # BasicBlock reuses its ReLU


def test_dissect_writes_run_directory_and_prints_summary(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["dissect", "--model", "torchvision:resnet18", "--layers", "layer3", "layer4",
                 "--data", "synthetic:n=24", "--out", str(out), "--batch-size", "8", "--workers", "0",
                 "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Best units" in printed and str(out) in printed
    for layer, units in (("layer3", 256), ("layer4", 512)):
        tally = pd.read_csv(out / "layers" / layer / "tally.csv")
        assert len(tally) == units and sorted(tally["unit"]) == list(range(1, units + 1))
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "torchvision:resnet18" and config["layers"] == ["layer3", "layer4"]
    assert config["config"]["batch_size"] == 8 and config["data"].startswith("synthetic:n=24")


@pytest.mark.parametrize("args,message", [
    (["--layers", "layer5"], "layer 'layer5' is not a module of ResNet; did you mean 'layer4'"),
    (["--layers", "fc"], "no spatial or token grid"),
    (["--layers", "layer4", "--quantile", "1.5"], "quantile must be in the open interval (0, 1), got 1.5"),
    (["--layers", "layer4", "--data", "/nonexistent/broden"], "neither an existing folder nor a known data set"),
    (["--layers", "layer4", "--weights", "/nonexistent.pt"], "weights file '/nonexistent.pt' does not exist"),
])
def test_bad_input_exits_with_a_clear_message(tmp_path, capsys, args, message):
    code = main(["dissect", "--model", "torchvision:resnet18", "--data", "synthetic:n=4", "--out",
                 str(tmp_path / "r"), "--workers", "0", "--no-progress", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_killed_run_resumes_with_identical_results(tmp_path):
    args = ["dissect", "--model", "torchvision:resnet18", "--layers", "layer4", "--data", "synthetic:n=48",
            "--batch-size", "8", "--workers", "0", "--no-progress"]
    ref = cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([PY, "-m", "netdissect", *args, "--out", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until a few batches are in the activation cache
        caches = list(run_dir.glob(".cache/*/acts-*.f32"))
        if caches and caches[0].stat().st_size >= 2 * 8 * 512 * 49 * 4:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    assert not (run_dir / "summary.json").exists()
    again = cli(*args, "--out", str(run_dir), "-v")
    assert again.returncode == 0, again.stderr
    assert "resuming thresholds at batch" in again.stderr
    ref_tally = (tmp_path / "ref" / "layers" / "layer4" / "tally.csv").read_text()
    assert (run_dir / "layers" / "layer4" / "tally.csv").read_text() == ref_tally


def test_data_synthetic_writes_broden_folder(tmp_path):
    from netdissect.data.broden import BrodenDataset

    assert main(["data", "synthetic", str(tmp_path / "syn"), "--n", "6", "--format", "png"]) == 0
    ds = BrodenDataset(tmp_path / "syn")
    assert len(ds) == 6 and "sky" in ds.concepts.names()


def test_report_after_the_data_folder_moved_warns_and_takes_data_from_elsewhere(tmp_path):
    from helpers import square_concepts

    from netdissect.data.broden import write_broden

    data = write_broden(square_concepts(n=6, size=32), tmp_path / "broden")
    run_dir = tmp_path / "run"
    done = cli("dissect", "--model", "torchvision:resnet18", "--layers", "layer1", "--data", str(data),
               "--out", str(run_dir), "--batch-size", "6", "--workers", "0", "--no-progress", "--no-report")
    assert done.returncode == 0, done.stderr
    moved = data.rename(tmp_path / "moved")
    report = run_dir / "report"

    plain = cli("report", str(run_dir), "--no-progress")
    assert plain.returncode == 0, plain.stderr
    assert "without images" in plain.stderr and str(data) in plain.stderr  # says why, naming the folder
    assert "--data DIR" in plain.stderr and "Traceback" not in plain.stderr
    assert (report / "index.html").is_file() and not (report / "strips").exists()

    again = cli("report", str(run_dir), "--no-progress", "--data", str(moved))
    assert again.returncode == 0, again.stderr
    assert "without images" not in again.stderr
    strips = list(report.glob("strips/*/u0001.jpg"))
    assert len(strips) == 1 and strips[0].stat().st_size > 0
    assert "Images unavailable" not in (report / "index.html").read_text()

    wrong = cli("report", str(run_dir), "--no-progress", "--data", str(tmp_path / "nowhere"))
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert str(tmp_path / "nowhere") in wrong.stderr
    assert len(list(report.glob("strips/*/u0001.jpg"))) == 1  # the good report is left as it was
