"""The run directory's lock (issue 8, kind 8): one process writes into a run directory at a time; a second one
is refused naming the first (pid, command line), or waits with wait=True; the lock dies with its process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import netdissect
from netdissect.cli import main
from netdissect.data.synthetic import SyntheticConcepts
from netdissect.engine.distributed import Dist
from netdissect.engine.plan import hold_run_dir
from netdissect.errors import RunInUseError
from netdissect.models import Preprocess
from netdissect.results import lock

PY = sys.executable
HOLD = """
import sys, time
from netdissect.results import lock
lock.acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def holder(run_dir, seconds: float) -> subprocess.Popen:
    """Another process that holds the lock of ``run_dir`` for ``seconds``."""
    proc = subprocess.Popen([PY, "-c", HOLD, str(run_dir), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.stdout.close()


def tiny_dissect(out, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    return netdissect.dissect(model, SyntheticConcepts(n=6, size=32), layers=["1"], out=out, preprocess=Preprocess(),
                              progress=False, num_workers=0, batch_size=3, **kw)


def test_a_second_process_is_refused_naming_the_first_and_kill_9_frees_the_folder(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = holder(run_dir, 60)
    try:
        with pytest.raises(RunInUseError) as info:
            lock.acquire(run_dir)
        message = str(info.value)
        assert str(run_dir) in message and f"process {proc.pid}" in message, message
        assert f"python -c {run_dir}" in message and "--wait" in message, message
        assert not lock.holds(run_dir)
        proc.send_signal(signal.SIGKILL)  # no chance to clean up: the operating system frees the lock
        proc.wait()
        lock.acquire(run_dir)  # at once, no waiting
        assert lock.holds(run_dir) and f'"pid": {os.getpid()}' in (run_dir / ".lock").read_text()
        lock.release(run_dir)
        assert not (run_dir / ".lock").exists() and run_dir.is_dir()  # an existing folder stays
    finally:
        stop(proc)


def test_wait_waits_for_the_holder_to_finish(tmp_path, caplog):
    proc = holder(tmp_path, 1.5)
    try:
        with caplog.at_level("WARNING"):
            lock.acquire(tmp_path, wait=True, poll=0.05)
        assert proc.poll() is not None  # the holder had exited
        assert f"in use by process {proc.pid}" in caplog.text and "waiting for it to finish" in caplog.text
        lock.release(tmp_path)
    finally:
        stop(proc)


def test_the_lock_is_counted_in_one_process_and_removes_the_folder_it_made_when_empty(tmp_path):
    run_dir = tmp_path / "new" / "run"
    lock.acquire(run_dir)
    lock.acquire(run_dir)  # the command line holds it, dissect() takes it again
    lock.release(run_dir)
    assert lock.holds(run_dir) and (run_dir / ".lock").is_file()
    lock.release(run_dir)
    assert not lock.holds(run_dir)
    assert not (tmp_path / "new").exists()  # the run failed before writing anything: nothing left behind


def test_dissect_refuses_a_folder_in_use_or_waits_for_it(tmp_path):
    out = tmp_path / "run"
    proc = holder(out, 60)
    try:
        with pytest.raises(RunInUseError, match=f"in use by process {proc.pid}"):
            tiny_dissect(out)
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written
    finally:
        stop(proc)
    proc = holder(out, 1.5)
    try:
        result = tiny_dissect(out, wait=True)
        assert proc.poll() is not None and result.layers == ["1"]
        assert not (out / ".lock").exists()
    finally:
        stop(proc)


def test_report_takes_the_same_lock(tmp_path, capsys):
    out = tmp_path / "run"
    tiny_dissect(out)
    proc = holder(out, 60)
    try:
        assert main(["report", str(out), "--no-images", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by process {proc.pid}" in err[0], err
        assert not (out / "report").exists()
    finally:
        stop(proc)
    assert main(["report", str(out), "--no-images", "--no-progress"]) == 0
    assert (out / "report" / "index.html").is_file() and not (out / ".lock").exists()


@dataclass(frozen=True)
class Told(Dist):
    """A rank of a pretend multi-process run: ``broadcast`` from rank 0 gives ``told``."""

    told: object = None

    def broadcast(self, obj, src):
        return obj if self.rank == src else self.told


def test_in_a_multi_process_run_rank_0_alone_takes_the_lock_and_every_rank_learns_the_outcome(tmp_path):
    run_dir = tmp_path / "run"
    with hold_run_dir(run_dir, dist=Told(1, 2, None)):  # rank 0 got it: rank 1 goes on, without locking
        assert not lock.holds(run_dir) and not run_dir.exists()
    with pytest.raises(RunInUseError, match="in use by process 7"):
        with hold_run_dir(run_dir, dist=Told(1, 2, (True, "run directory x is in use by process 7"))):
            pass
    with hold_run_dir(run_dir, dist=Told(0, 2)):
        assert lock.holds(run_dir)
    assert not lock.holds(run_dir)
    proc = holder(run_dir, 60)
    try:
        told = []

        class Rank0(Dist):
            def broadcast(self, obj, src):
                told.append(obj)
                return obj

        with pytest.raises(RunInUseError):
            with hold_run_dir(run_dir, dist=Rank0(0, 2)):
                pass
        assert told and told[0][0] is True and f"process {proc.pid}" in told[0][1]  # rank 0 told the others
    finally:
        stop(proc)
