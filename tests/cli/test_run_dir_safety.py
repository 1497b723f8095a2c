"""A run directory under stress, through the command line as real processes (issue 8): two runs started on
one --out, a finished run directory that a later failing run must leave as it was, and kill -9 at random
moments of a run."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

PY = sys.executable
ARGS = ["dissect", "--model", "torchvision:resnet18", "--layers", "layer4", "--data", "synthetic:n=48",
        "--batch-size", "4", "--workers", "0", "--no-progress"]
FILES = ("tally.csv", "thresholds.npy", "iou.npy")  # compared byte for byte
ARCHIVES = ("top_images.npz", "counts.npz")  # compared array by array (zip entries carry timestamps)


def cli(*args, **kw):
    return subprocess.run([PY, "-m", "netdissect", *args], capture_output=True, text=True, timeout=600, **kw)


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "netdissect", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def assert_one_clear_line(stderr: str, returncode: int, *culprits: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert returncode == 2, stderr
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    for c in culprits:
        assert c in lines[0], lines[0]


def assert_same_results(a: Path, b: Path, layer: str = "layer4") -> None:
    for name in FILES:
        assert (a / "layers" / layer / name).read_bytes() == (b / "layers" / layer / name).read_bytes(), name
    for name in ARCHIVES:
        with np.load(a / "layers" / layer / name) as x, np.load(b / "layers" / layer / name) as y:
            assert sorted(x.files) == sorted(y.files)
            for key in x.files:
                assert np.array_equal(x[key], y[key]), f"{name}[{key}]"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The run, alone and uninterrupted."""
    out = tmp_path_factory.mktemp("reference") / "run"
    done = cli(*ARGS, "--no-report", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()[1][-3000:]}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_two_runs_into_one_folder(tmp_path, reference):
    """The second of two identical runs, and a run of other layers, stop at once naming the first; --wait waits
    for it; the first one's results are those of a run alone, and nobody deleted its cache."""
    run_dir = tmp_path / "run"
    first = start(*ARGS, "--no-report", "--out", str(run_dir))
    procs = [first]
    try:
        wait_for(lambda: list(run_dir.glob(".cache/*/acts-*.f32")), first, "the first run began pass 1")
        same = start(*ARGS, "--no-report", "--out", str(run_dir))
        other = start(*[a if a != "layer4" else "layer3" for a in ARGS], "--no-report", "--out", str(run_dir))
        waits = start(*ARGS, "--no-report", "--out", str(run_dir), "--wait")
        procs += [same, other, waits]
        for proc in (same, other):
            _, err = proc.communicate(timeout=300)
            assert_one_clear_line(err, proc.returncode, str(run_dir), f"in use by process {first.pid}",
                                  "netdissect dissect --model torchvision:resnet18 --layers layer4", "--wait")
        assert first.poll() is None  # they stopped while the first one was running
        assert f'"pid": {first.pid}' in _read(run_dir / ".lock")
        assert list(run_dir.glob(".cache/*/acts-*.f32"))  # the first run's cache is still there
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
        out, err = waits.communicate(timeout=300)
        assert waits.returncode == 0, err
        assert f"in use by process {first.pid}" in err and "waiting for it to finish" in err
        assert "Best units" in out
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert_same_results(reference, run_dir)
    assert not (run_dir / ".lock").exists() and not list(run_dir.glob(".cache/*/acts-*"))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


# -- a finished run directory survives later runs that fail ---------------------------------------

TINY = """
import torch
from torch import nn

def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1))
"""
TINY_ARGS = ["dissect", "--model", "module:tinymodel:tiny", "--batch-size", "3", "--workers", "0", "--no-progress"]


def tiny(root: Path, *args: str):
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
    return subprocess.run([PY, "-m", "netdissect", *TINY_ARGS, *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=root)


def test_a_finished_run_directory_stays_intact_when_a_later_run_into_it_fails(tmp_path):
    from helpers import square_concepts

    from netdissect.data.broden import write_broden

    (tmp_path / "tinymodel.py").write_text(TINY)
    good = write_broden(square_concepts(n=6, size=32), tmp_path / "good", image_format="png")
    run_dir = tmp_path / "finished"
    done = tiny(tmp_path, "--layers", "2", "--data", str(good), "--out", str(run_dir))
    assert done.returncode == 0, done.stderr
    before = snapshot(run_dir)
    assert any(name.startswith(".cache/") for name in before) and "report/index.html" in before

    # a layer that does not exist: refused before anything in the folder changes (its checkpoint too)
    bad_layer = tiny(tmp_path, "--layers", "2", "9", "--data", str(good), "--out", str(run_dir))
    assert_one_clear_line(bad_layer.stderr, bad_layer.returncode, "'9'")
    assert snapshot(run_dir) == before

    # an unreadable image, found in pass 1 of a run with other data
    broken = write_broden(square_concepts(n=6, size=32, seed=1), tmp_path / "broken", image_format="png")
    image = next((broken / "images").rglob("*.png"))
    image.write_bytes(b"not a png")
    bad_data = tiny(tmp_path, "--layers", "2", "--data", str(broken), "--out", str(run_dir))
    assert_one_clear_line(bad_data.stderr, bad_data.returncode, str(image))
    after = snapshot(run_dir)
    assert {k: v for k, v in after.items() if not k.startswith(".cache/")} == {
        k: v for k, v in before.items() if not k.startswith(".cache/")}
    again = tiny(tmp_path, "--layers", "2", "--data", str(good), "--out", str(run_dir), "--no-report", "-v")
    assert again.returncode == 0 and "already complete" in again.stderr, again.stderr
    assert not (run_dir / ".lock").exists()


# -- kill -9 at random moments ----------------------------------------------------------------------


def _passes(run_dir: Path) -> dict:
    """Batches done per pass in the run's checkpoint (-1: done); {} while there is none."""
    import torch

    for state in run_dir.glob(".cache/*/state.pt"):
        try:
            saved = torch.load(state, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 -- being replaced right now: look again
            return {}
        return {name: int(p["batches"]) for name, p in saved.get("passes", {}).items()}
    return {}


def _kill_when(proc: subprocess.Popen, moment, what: str, delay: float) -> str:
    """SIGKILL ``proc`` ``delay`` seconds after ``moment()`` is first true, once it is checked to hold still."""
    wait_for(moment, proc, what)
    time.sleep(delay)
    proc.send_signal(signal.SIGSTOP)  # frozen: check that the moment is still the one asked for, then kill
    try:
        assert moment(), f"the run went past {what} within {delay:.2f} s"
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return err


def test_kill_9_in_pass_1_pass_2_and_the_report_then_the_same_command_gives_identical_results(tmp_path, reference):
    """SIGKILL leaves no chance to save: each run resumes from the last checkpoint the one before wrote."""
    rng = random.Random()
    run_dir = tmp_path / "run"
    args = [*ARGS, "--out", str(run_dir), "--checkpoint-seconds", "0", "-v"]

    def in_pass_1():
        return _passes(run_dir).get("thresholds", 0) >= 1 and not (run_dir / "summary.json").exists()

    def in_pass_2():
        return _passes(run_dir).get("iou", 0) >= 1 and not (run_dir / "summary.json").exists()

    first = start(*args)
    _kill_when(first, in_pass_1, "pass 1", rng.uniform(0, 0.5))
    assert f'"pid": {first.pid}' in _read(run_dir / ".lock")  # left by the killed run; the next one takes it over

    second = start(*args)
    err = _kill_when(second, in_pass_2, "pass 2", rng.uniform(0, 0.05))
    assert "resuming thresholds at batch" in err

    third = start(*args)
    leftover = run_dir / f".report.tmp-{third.pid}"
    strips = leftover / "strips" / "layer4"
    err = _kill_when(third, lambda: len(list(strips.glob("*.jpg"))) >= 5 and leftover.is_dir(), "the report",
                     rng.uniform(0, 0.5))
    assert "resuming iou at batch" in err
    assert (run_dir / "summary.json").is_file() and leftover.is_dir()

    last = subprocess.run([PY, "-m", "netdissect", *args], capture_output=True, text=True, timeout=600)
    assert last.returncode == 0, last.stderr
    assert "already complete" in last.stderr
    assert_same_results(reference, run_dir)
    report = run_dir / "report"
    assert (report / "index.html").is_file() and len(list((report / "strips" / "layer4").glob("u*.jpg"))) == 512
    assert not list(run_dir.glob(".report.*")) and not (run_dir / ".lock").exists()
    assert not list(run_dir.glob(".cache/*/acts-*")) and not list(run_dir.glob(".cache/*/*.tmp"))
