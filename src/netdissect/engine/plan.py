"""Planning a run before its first batch: layer shapes, the run's key, where pass 2 reads activations, the lock."""

from __future__ import annotations

import hashlib
import json
import platform
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from ..hooks import Trace
from .cache import cache_fits
from .distributed import Dist, RankFailed


def probe_layers(module: nn.Module, x: Any, layers: list[str]) -> dict[str, tuple[int, tuple[int, int]]]:
    """Each layer's (units, (h, w)) from one full forward pass of ``x``.

    The whole network runs, so a layer that fires twice is caught here,
    before any data is read.

    Raises
    ------
    CaptureError
        A layer ran twice or did not run.
    LayerError
        A layer's output has no grid.
    """
    with Trace(module, layers) as trace:
        acts = trace.run(x, stop_early=False)
    return {name: (int(acts[name].shape[1]), (int(acts[name].shape[2]), int(acts[name].shape[3])))
            for name in layers}


def run_key(identity: dict[str, Any]) -> str:
    """sha256 (hex) of the identity's canonical JSON."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def use_disk_cache(mode: str, bytes_needed: int, directory, limit_gb: float, *, labels_from_output: bool) -> bool:
    """Whether pass 2 reads a disk cache (True) or runs the model again (False).

    ``mode`` is "disk", "recompute" or "auto" (the cache when it fits under
    ``limit_gb`` and half the free disk).  A source whose labels come from the
    model's output (a generator) must run the model anyway: never a cache.
    """
    if labels_from_output or mode == "recompute":
        return False
    if mode == "disk":
        return True
    return cache_fits(bytes_needed, directory, limit_gb)


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape results (read from package metadata: no imports)."""
    from importlib import metadata

    from .. import __version__

    out = {"netdissect": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for name in ("numpy", "pandas", "torchvision"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    out["platform"] = platform.platform()
    return out


def resolve_device(text: str) -> torch.device:
    """The torch device named by ``text`` ("cpu", "cuda", "cuda:1", "mps"...), checked to exist.

    Raises
    ------
    ConfigError
        For a name torch does not know, or a CUDA device this machine does not have.
    """
    from ..errors import ConfigError

    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {text!r} is not a torch device; use cpu, cuda or cuda:N (e.g. cuda:0)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {text!r} was asked for, but PyTorch sees no CUDA device here "
                              "(torch.cuda.is_available() is False); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {text!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"numbered 0..{torch.cuda.device_count() - 1}")
    elif device.type not in ("cpu", "mps", "xpu"):
        raise ConfigError(f"device {text!r}: netdissect runs on cpu or cuda (or mps/xpu), not {device.type!r}")
    return device


def check_run_dir(path) -> None:
    """Refuse a run directory that exists but is not a folder.

    Raises
    ------
    ConfigError
        Naming the path.
    """
    from pathlib import Path

    from ..errors import ConfigError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {str(p)!r} is an existing file, not a folder; give a new or existing folder "
                          "for the run directory")


@contextmanager
def hold_run_dir(path, *, wait: bool = False, dist: Dist | None = None) -> Iterator[None]:
    """Hold the run directory's lock (``RUN_DIR/.lock``) inside the block: one run writes into a folder at a time.

    In a multi-process run only rank 0 takes the lock, before any rank
    touches the folder; every rank then learns whether it got it, so that
    all of them raise (instead of waiting for rank 0 in a collective) when
    the folder is in use.  With ``wait``, rank 0 waits for the folder while
    the other ranks wait for rank 0 (at most the process group's timeout).

    Parameters
    ----------
    path : str or Path
        The run directory (created when missing; removed again on leaving
        when it stayed empty).
    wait : bool
        Wait for another process using the folder to finish, instead of raising.
    dist : Dist, optional
        This process's rank (one process when None).

    Raises
    ------
    RunInUseError
        On every rank, naming the process using the folder.
    RankFailed
        On the other ranks, when rank 0 could not take the lock for another reason.
    """
    from ..errors import RunInUseError
    from ..results import lock

    dist = dist or Dist()
    failure: BaseException | None = None
    if dist.is_main:
        try:
            lock.acquire(path, wait=wait)
        except Exception as exc:  # noqa: BLE001 -- told to the other ranks, then raised
            failure = exc
    if dist.world > 1:
        told = dist.broadcast(None if failure is None else (isinstance(failure, RunInUseError), str(failure)), 0)
        if told is not None and failure is None:
            busy, message = told
            raise RunInUseError(message) if busy else RankFailed(
                f"rank 0 could not lock the run directory {path}: {message}")
    if failure is not None:
        raise failure
    try:
        yield
    finally:
        if dist.is_main:
            lock.release(path)
