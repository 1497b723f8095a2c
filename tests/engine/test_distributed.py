"""Multi-process runs (torch.distributed, gloo on CPU): 1, 2 and 3 processes give bit-identical run
directories, an interrupted multi-process run resumes, and ``torchrun`` runs the command line.

Each process count is spawned twice (a first run of every case, then a second run that resumes the
interrupted ones), and every case runs inside the same processes, so the whole file takes well under
a minute on two cores.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import netdissect
from netdissect.cli import main
from netdissect.data.synthetic import SyntheticConcepts
from netdissect.engine.distributed import Dist
from netdissect.errors import ConfigError
from netdissect.models import Preprocess

BATCH = 4
LAYERS = ["1", "2"]  # a ReLU (many exact ties at zero) and a conv
FILES = ("tally.csv", "thresholds.npy", "iou.npy")  # compared byte for byte
ARCHIVES = ("top_images.npz", "counts.npz")  # compared array by array (zip entries carry timestamps)
INIT_FAILED = "joining the process group failed:"
TIMEOUT = timedelta(seconds=60)  # a collective that waits longer fails the test instead of hanging it

# case -> (images, options).  13 and 25 images in batches of 4 give uneven shards whose last batch is
# partial (13 images on 3 ranks: 4, 4, 5); 5 images are 2 batches, so one of 3 ranks holds none.
CASES = {
    "disk-13": (13, {"activation_cache": "disk"}),
    "recompute-25": (25, {"activation_cache": "recompute"}),
    "pnas-13": (13, {"protocol": "pnas2020", "activation_cache": "disk"}),
    "two-batches-5": (5, {"activation_cache": "recompute"}),
    # thresholds from a seeded subsample (past max_quantile_values): seeded by image index, so the same
    "sampled-13": (13, {"activation_cache": "disk", "max_quantile_values": 64}),
}

# interrupted case -> (images, options, first-run stops).  A stop (ranks, nth) makes each of these ranks
# raise KeyboardInterrupt at the nth access of the last image of its shard (1: in pass 1, 2: in pass 2);
# ranks "all" or (0,) for rank 0 only.  The second spawn runs every case again, to the end.
RESUMED = {
    "pass1-disk-13": (13, {"activation_cache": "disk"}, [("all", 1)]),
    "pass2-recompute-25": (25, {"activation_cache": "recompute"}, [("all", 2)]),
    # the other ranks finish the pass, see that rank 0 stopped, save their state and stop too
    "rank0-only-disk-13": (13, {"activation_cache": "disk"}, [((0,), 1)]),
    # rank 1 is "killed" after the merge of pass 1 but before saving it: it keeps its pass-1 state of
    # the first run while the others saved pass 1 as done (and part of pass 2)
    "killed-after-merge-disk-13": (13, {"activation_cache": "disk"}, [("all", 1), ("all", 2)]),
}


def tiny_net() -> nn.Module:
    """A random conv net, the same in every process; float arithmetic that depends on the batch size."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net.eval()


class StopAt:
    """Wraps a data set; raises ``error`` (KeyboardInterrupt) at the ``nth`` access (image or labels) of image
    ``index``."""

    def __init__(self, ds, index: int | None = None, nth: int = 1, error: type = KeyboardInterrupt):
        self.ds, self.index, self.nth, self.error, self.seen, self.calls = ds, index, nth, error, 0, 0
        self.concepts, self.image_size, self.label_size = ds.concepts, ds.image_size, ds.label_size

    def __len__(self):
        return len(self.ds)

    def _tick(self, i):
        self.calls += 1
        if i == self.index:
            self.seen += 1
            if self.seen == self.nth:
                raise self.error(f"test stop at image {i}")

    def __getitem__(self, i):
        self._tick(i)
        return self.ds[i]

    def load_labels(self, i):
        self._tick(i)
        return self.ds.load_labels(i)

    def image_id(self, i):
        return self.ds.image_id(i)

    def fingerprint(self):
        return self.ds.fingerprint()

    def spec(self):
        return self.ds.spec()


def dissect(n, out, options, *, data=None, model=None, **kw):
    data = data if data is not None else SyntheticConcepts(n=n, size=64)
    return netdissect.dissect(model if model is not None else tiny_net(), data, layers=LAYERS, out=out,
                              preprocess=Preprocess(), progress=False, num_workers=0, batch_size=BATCH,
                              **options, **kw)


# -- the processes -------------------------------------------------------------------------------


def _worker(rank: int, world: int, port: int, root: str, phase: str) -> None:
    torch.set_num_threads(1)  # 2 or 3 processes on 2 cores
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=TIMEOUT)
    except Exception as exc:  # e.g. another program took the port meanwhile
        raise RuntimeError(f"{INIT_FAILED} {exc}") from exc
    root_dir = Path(root)
    report: dict = {}
    try:
        me = Dist.current()
        assert (me.rank, me.world) == (rank, world)
        if phase == "first":
            for name, (n, options) in CASES.items():
                dissect(n, root_dir / name, options)
            for name, (n, options, stops) in RESUMED.items():
                report[name] = _interrupted_runs(me, root_dir / name, n, options, stops)
            # rank 0 fails in pass 1: the others finish the pass, save their state and raise RankFailed
            stop = me.shard(13, BATCH)[-1] if rank == 0 else None
            try:
                dissect(13, root_dir / "fails", {}, data=StopAt(SyntheticConcepts(n=13, size=64), stop, error=OSError))
            except Exception as exc:  # noqa: BLE001
                report["fails"] = f"{type(exc).__name__}: {exc}"
            # ranks given different weights refuse to run, every one of them (none waits for the others)
            model = tiny_net()
            with torch.no_grad():
                model[0].bias.add_(rank)
            try:
                dissect(5, root_dir / "disagree", {}, model=model)
            except ConfigError as exc:
                report["disagree"] = str(exc)
        else:
            for name, (n, options, _) in RESUMED.items():
                data = StopAt(SyntheticConcepts(n=n, size=64))
                dissect(n, root_dir / name, options, data=data, checkpoint_seconds=0)
                report[name] = {"images read": data.calls}
    finally:
        (root_dir / f"report-{phase}-r{rank}.json").write_text(json.dumps(report))
        dist.destroy_process_group()


def _interrupted_runs(me: Dist, out: Path, n: int, options: dict, stops) -> list:
    """Run a case once per stop, each interrupted; return what each run raised and the state files it left."""
    shard = me.shard(n, BATCH)
    runs = []
    for i, (ranks, nth) in enumerate(stops):
        stop = shard[-1] if len(shard) and (ranks == "all" or me.rank in ranks) else None
        raised = None
        try:
            dissect(n, out, options, data=StopAt(SyntheticConcepts(n=n, size=64), stop, nth), checkpoint_seconds=0)
        except KeyboardInterrupt as exc:
            raised = f"KeyboardInterrupt: {exc}"
        dist.barrier()
        runs.append({"raised": raised, "states": sorted(p.name for p in out.glob(".cache/*/state*.pt"))})
        if out.name.startswith("killed-after-merge") and me.rank == 1:
            (state,) = out.glob(f".cache/*/state-r1-of-{me.world}.pt")
            if i == 0:
                shutil.copy(state, state.with_suffix(".first"))
            else:
                os.replace(state.with_suffix(".first"), state)
    return runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(world: int, root: Path, phase: str) -> list[dict]:
    """Run ``phase`` in ``world`` processes; return each rank's report."""
    for attempt in range(3):
        try:
            mp.spawn(_worker, args=(world, free_port(), str(root), phase), nprocs=world)
            break
        except mp.ProcessRaisedException as exc:  # another program took the port meanwhile: try another
            if INIT_FAILED not in str(exc) or attempt == 2:
                raise
    return [json.loads((root / f"report-{phase}-r{r}.json").read_text()) for r in range(world)]


@contextmanager
def one_thread():
    """One intra-op thread, as in the spawned processes (and torchrun's): CPU kernels may round differently
    with other thread counts, so bit-identity across process counts needs the same threads per process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Every case in this process, without a process group."""
    root = tmp_path_factory.mktemp("one-process")
    with one_thread():
        for name, (n, options) in CASES.items():
            dissect(n, root / name, options)
        for name, (n, options, _) in RESUMED.items():
            dissect(n, root / name, options)
    return root


@pytest.fixture(scope="module", params=[2, 3], ids=lambda w: f"{w}-processes")
def runs(request, tmp_path_factory):
    world = request.param
    root = tmp_path_factory.mktemp(f"{world}-processes")
    first = spawn(world, root, "first")
    second = spawn(world, root, "resume")
    return world, root, first, second


def assert_same_run(a: Path, b: Path) -> None:
    for layer in LAYERS:
        for name in FILES:
            assert (a / "layers" / layer / name).read_bytes() == (b / "layers" / layer / name).read_bytes(), (
                f"layer {layer}: {name} differs")
        for name in ARCHIVES:
            with np.load(a / "layers" / layer / name) as x, np.load(b / "layers" / layer / name) as y:
                assert sorted(x.files) == sorted(y.files)
                for key in x.files:
                    assert x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key]), (
                        f"layer {layer}: {name}[{key}] differs")


# -- tests ---------------------------------------------------------------------------------------


def test_shards_are_whole_batches_with_at_most_one_more_per_rank():
    for n in (0, 1, 5, 13, 25, 64):
        for world in (1, 2, 3, 4, 7):
            shards = [Dist(r, world).shard(n, BATCH) for r in range(world)]
            assert [i for s in shards for i in s] == list(range(n))
            batches = [-(-len(s) // BATCH) for s in shards]
            assert max(batches) - min(batches) <= 1
            assert all(len(s) % BATCH == 0 for s in shards[:-1])  # only the last rank has a partial batch
    assert Dist(0, 2).shard(13, 4) == range(8) and Dist(1, 2).shard(13, 4) == range(8, 13)
    assert [len(Dist(r, 3).shard(5, 4)) for r in range(3)] == [0, 4, 1]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_processes_give_bit_identical_results(runs, reference, case):
    world, root, _, _ = runs
    assert_same_run(reference / case, root / case)
    config = json.loads((root / case / "config.json").read_text())
    assert config["processes"] == world
    summary = json.loads((root / case / "summary.json").read_text())
    method = {layer["threshold_method"]["method"] for layer in summary["layers"].values()}
    assert method == ({"sampled-topk"} if case.startswith("sampled") else {"exact-topk"})
    # every rank removed its activation cache; rank r kept its own state file
    assert not list((root / case).glob(".cache/*/acts*"))
    assert sorted(p.name for p in (root / case).glob(".cache/*/state*.pt")) == [
        f"state-r{r}-of-{world}.pt" for r in range(world)]


@pytest.mark.slow
@pytest.mark.parametrize("case", RESUMED)
def test_interrupted_run_resumes_with_bit_identical_results(runs, reference, case):
    world, root, first, second = runs
    n = RESUMED[case][0]
    for rank in range(world):
        for run in first[rank][case]:
            # every rank stopped (the ones not interrupted at the end of the pass) with its state saved
            assert run["raised"] and run["raised"].startswith("KeyboardInterrupt"), (rank, run)
            assert run["states"] == [f"state-r{r}-of-{world}.pt" for r in range(world)]
    assert_same_run(reference / case, root / case)
    read = sum(second[rank][case]["images read"] for rank in range(world))
    if case.startswith("pass1"):  # resumed inside pass 1: fewer images read than a fresh run's 2 n
        assert n < read < 2 * n
    elif case.startswith("pass2"):  # resumed inside pass 2 (recomputed): pass 1 not read again
        assert 0 < read < n
    else:  # rank 1 finished pass 1 (rank0-only), or takes it merged from rank 0 (killed-after-merge):
        # it reads only its labels for pass 2
        assert second[1][case]["images read"] == len(Dist(1, world).shard(n, BATCH))
    if case.startswith("rank0-only"):
        assert "test stop" in first[0][case][0]["raised"]
        assert all("rank 0 was interrupted" in first[r][case][0]["raised"] for r in range(1, world))


@pytest.mark.slow
def test_a_rank_failing_stops_every_rank_instead_of_hanging(runs):
    world, _, first, _ = runs
    assert first[0]["fails"].startswith("OSError: test stop at image")
    for rank in range(1, world):
        assert first[rank]["fails"].startswith("RankFailed: rank 0 failed in pass 'thresholds' (OSError: test stop")


@pytest.mark.slow
def test_ranks_given_different_models_refuse_to_run(runs):
    world, _, first, _ = runs
    for rank in range(world):
        assert "were given different models, data or options" in first[rank]["disagree"]


@pytest.mark.slow
def test_torchrun_command_line_equals_one_process(tmp_path, capsys, monkeypatch):
    common = ["--model", "torchvision:resnet18", "--layers", "layer3", "layer4", "--data", "synthetic:n=23,size=64",
              "--batch-size", "4", "--workers", "0", "--no-progress", "--no-report"]
    for _ in range(3):  # torchrun's workers run with OMP_NUM_THREADS=1; this process with its own threads
        two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                              "--master-port", str(free_port()), "-m", "netdissect", "dissect", *common,
                              "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300, check=False)
        if two.returncode == 0 or "EADDRINUSE" not in two.stderr:
            break
    with one_thread():
        assert main(["dissect", *common, "--out", str(tmp_path / "one")]) == 0
    one = capsys.readouterr()
    assert two.returncode == 0, two.stderr[-3000:]
    for layer in ("layer3", "layer4"):
        a = (tmp_path / "one" / "layers" / layer / "tally.csv").read_bytes()
        assert a == (tmp_path / "two" / "layers" / layer / "tally.csv").read_bytes()
    assert json.loads((tmp_path / "two" / "config.json").read_text())["processes"] == 2
    # rank 0 alone prints the summary, the same one as one process
    assert two.stdout.count("Best units") == 1 and one.out.count("Best units") == 1
    assert two.stdout.replace(str(tmp_path / "two"), "RUN") == one.out.replace(str(tmp_path / "one"), "RUN")
