"""Planning a run before its first batch: layer shapes, the run's key, where pass 2 reads activations."""

from __future__ import annotations

import hashlib
import json
import platform
from typing import Any

import torch
from torch import nn

from ..hooks import Trace
from .cache import cache_fits


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
