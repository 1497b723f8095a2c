"""Running out of disk keeps finished work (issue 8, kind 7): a full disk while writing the checkpoint, the
activation cache, the results or the report gives one error naming the file and the space needed and free;
the last good checkpoint survives, and the same call resumes once space is freed, bit-identical to a run
that never stopped.  A full disk is simulated by fault injection (and /dev/full, the kernel's own ENOSPC)."""

from __future__ import annotations

import builtins
import errno
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import netdissect
import netdissect.engine.cache as cache_module
from netdissect import storage
from netdissect.cli import main
from netdissect.data.synthetic import SyntheticConcepts
from netdissect.engine.checkpoint import Checkpoint
from netdissect.errors import DiskFullError
from netdissect.models import Preprocess
from netdissect.report import write_report
from netdissect.stats import LabelCounts

LAYERS = ["1", "2"]
FILES = ("tally.csv", "thresholds.npy", "iou.npy")
ARCHIVES = ("top_images.npz", "counts.npz")  # compared array by array (zip entries carry timestamps)
FREE = 123_456_789  # what the disk "has free" in these tests
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def tiny_net() -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net.eval()


def run(out, **kw):
    return netdissect.dissect(tiny_net(), SyntheticConcepts(n=13, size=64), layers=LAYERS, out=out,
                              preprocess=Preprocess(), progress=False, num_workers=0, batch_size=4,
                              activation_cache="disk", checkpoint_seconds=0, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    run(out)
    return out


@pytest.fixture
def free_space(monkeypatch):
    monkeypatch.setattr(storage, "free_bytes", lambda path: FREE)


def assert_same_run(a, b):
    for layer in LAYERS:
        for name in FILES:
            assert (a / "layers" / layer / name).read_bytes() == (b / "layers" / layer / name).read_bytes(), name
        for name in ARCHIVES:
            with np.load(a / "layers" / layer / name) as x, np.load(b / "layers" / layer / name) as y:
                for key in x.files:
                    assert np.array_equal(x[key], y[key]), f"{name}[{key}]"


def assert_names_space(message: str, path) -> None:
    assert str(path) in message, message
    assert re.search(r"needs about \d+(\.\d)? (bytes|KiB|MiB|GiB)", message), message
    assert f"{storage.format_bytes(FREE)} are free" in message, message


def state_files(out):
    return sorted(p.name for p in out.glob(".cache/*/*") if p.name.startswith("state"))


# -- the checkpoint ------------------------------------------------------------------------------


def test_checkpoint_on_a_full_disk_keeps_the_last_good_one(tmp_path):
    """A real ENOSPC from the kernel (/dev/full): torch.save to a path would turn it into a RuntimeError."""
    ckpt = Checkpoint(tmp_path / "run", "ab" * 32, interval=0)
    ckpt.record("pass", LabelCounts(5), 3)
    ckpt.save()
    before = ckpt.path.read_bytes()
    os.symlink("/dev/full", ckpt.path.with_suffix(".tmp"))  # the next write of the temporary file: ENOSPC
    with pytest.raises(DiskFullError, match="disk full while writing the checkpoint") as info:
        ckpt.save()
    assert str(ckpt.path) in str(info.value) and "the last good checkpoint is kept" in str(info.value)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert ckpt.path.read_bytes() == before  # intact
    assert [p.name for p in ckpt.directory.iterdir()] == ["state.pt"]  # no .tmp left
    ckpt.save()  # space is back
    assert ckpt.load() and ckpt.progress("pass") == 3


def test_full_disk_while_checkpointing_in_pass_1_then_resume(tmp_path, reference, monkeypatch, free_space, caplog):
    out = tmp_path / "run"
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kw):
        calls.append(1)
        if len(calls) == 3:  # batches 1 and 2 are saved; the third write fills the disk half way
            f.write(b"\0" * 100)
            raise ENOSPC
        return real_save(obj, f, *args, **kw)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(DiskFullError) as info:
        run(out)
    (state,) = out.glob(".cache/*/state.pt")
    assert_names_space(str(info.value), state)
    assert "run the same command again to resume" in str(info.value)
    assert state_files(out) == ["state.pt"]  # no state.tmp
    saved = torch.load(state, weights_only=True)
    assert saved["passes"]["thresholds"]["batches"] == 2  # the last good checkpoint
    assert not (out / "summary.json").exists()

    monkeypatch.setattr(torch, "save", real_save)  # space freed
    with caplog.at_level("INFO", logger="netdissect"):
        run(out)
    assert "resuming thresholds at batch 2" in caplog.text
    assert_same_run(reference, out)


def test_full_disk_in_the_activation_cache_then_resume(tmp_path, reference, monkeypatch, free_space, caplog):
    out = tmp_path / "run"
    written = [0]

    class FullAfter:
        """A file whose disk fills during the third batch of layer '2' (4 images of 6 x 16 x 16 float32)."""

        def __init__(self, f):
            self.f = f

        def write(self, data):
            n = memoryview(data).nbytes
            if written[0] + n > 9 * 6 * 16 * 16 * 4:
                raise ENOSPC
            written[0] += n
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(path, mode="r", *args, **kw):
        f = builtins.open(path, mode, *args, **kw)
        return FullAfter(f) if "a" in mode and str(path).endswith("acts-2.f32") else f

    monkeypatch.setattr(cache_module, "open", fake_open, raising=False)
    with pytest.raises(DiskFullError) as info:
        run(out)
    (acts,) = out.glob(".cache/*/acts-2.f32")
    message = str(info.value)
    assert_names_space(message, acts)
    assert message.startswith("disk full while writing the activation cache")
    # the rest of the cache: 13 images of both layers, less what is on disk
    needed = 13 * (8 * 32 * 32 + 6 * 16 * 16) * 4 - sum(p.stat().st_size for p in out.glob(".cache/*/acts-*.f32"))
    assert f"needs about {storage.format_bytes(needed)}" in message
    assert state_files(out) == ["state.pt"]
    (state,) = out.glob(".cache/*/state.pt")
    assert torch.load(state, weights_only=True)["passes"]["thresholds"]["batches"] == 2

    monkeypatch.undo()
    with caplog.at_level("INFO", logger="netdissect"):
        run(out)
    assert "resuming thresholds at batch" in caplog.text
    assert_same_run(reference, out)


def test_full_disk_while_writing_the_results_then_resume(tmp_path, reference, monkeypatch, free_space):
    out = tmp_path / "run"
    real = np.save

    def save(file, *args, **kw):
        if str(file).endswith("iou.npy"):
            raise ENOSPC
        return real(file, *args, **kw)

    monkeypatch.setattr(np, "save", save)
    with pytest.raises(DiskFullError) as info:
        run(out)
    assert_names_space(str(info.value), out)
    assert "both passes are saved in the checkpoint" in str(info.value)
    monkeypatch.undo()
    images = SyntheticConcepts(n=13, size=64)
    read = []
    real_labels = images.load_labels
    images.load_labels = lambda i: read.append(i) or real_labels(i)
    netdissect.dissect(tiny_net(), images, layers=LAYERS, out=out, preprocess=Preprocess(), progress=False,
                       num_workers=0, batch_size=4, activation_cache="disk", checkpoint_seconds=0)
    assert read == []  # both passes came from the checkpoint
    assert_same_run(reference, out)


def test_cli_full_disk_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, free_space):
    (tmp_path / "tinymodel.py").write_text(
        "from torch import nn\n\ndef tiny():\n    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def save(obj, f, *args, **kw):
        raise ENOSPC

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    code = main(["dissect", "--model", "module:tinymodel:tiny", "--layers", "1", "--data", "synthetic:n=6,size=32",
                 "--out", str(out), "--workers", "0", "--batch-size", "3", "--no-progress", "--no-report"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    (state,) = out.glob(".cache/*")
    assert lines[0].startswith("netdissect dissect: error: disk full while writing the checkpoint")
    assert_names_space(lines[0], state / "state.pt")


# -- the report ----------------------------------------------------------------------------------


def test_full_disk_while_writing_the_report_keeps_the_old_one(reference, monkeypatch, free_space):
    import netdissect.report.html as html

    write_report(reference, images=False)
    before = (reference / "report" / "index.html").read_bytes()

    def pages(*args, **kw):
        raise ENOSPC

    monkeypatch.setattr(html, "_write_pages", pages)
    with pytest.raises(DiskFullError, match="disk full while writing the report into") as info:
        write_report(reference, images=False)
    assert "the previous report, if any, is kept" in str(info.value)
    assert (reference / "report" / "index.html").read_bytes() == before
    assert sorted(p.name for p in reference.iterdir() if "report" in p.name) == ["report"]  # no temporary folder


def test_report_clears_temporary_folders_of_killed_writers(reference):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        leftovers = [reference / f".report.tmp-{dead.pid}", reference / f".report.old-{dead.pid}"]
        busy = reference / f".report.tmp-{live.pid}"  # another writer, still at work
        for folder in (*leftovers, busy):
            (folder / "strips").mkdir(parents=True)
            (folder / "strips" / "u0001.jpg").write_bytes(b"half")
        index = write_report(reference, images=False)
        assert index.is_file()
        assert not any(p.exists() for p in leftovers)
        assert busy.is_dir()
    finally:
        live.kill()
        live.wait()
    write_report(reference, images=False)  # its writer is gone now
    assert not busy.exists()
