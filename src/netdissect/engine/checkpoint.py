"""Resumable state of a run, keyed by content.

State lives under ``RUN_DIR/.cache/<key[:20]>/``, where the key hashes
everything that affects the statistics (model weights, layers, data
fingerprint, options, version): a run with other arguments never reuses it,
and drops it as stale.  One file per process (``state.pt``, or
``state-r<rank>-of-<world>.pt`` in a multi-process run) holds, for each pass,
the batches done and the state of its statistic group, written atomically
(temporary file, then rename), so the last good checkpoint survives a crash
while writing.  A run resumes only with the number of processes that saved
it (the shards would not match); with another number it starts afresh.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..stats.base import Statistic
from ..storage import disk_full_as_error, tensor_bytes
from .distributed import Dist

log = logging.getLogger(__name__)

#: batches-done value of a finished pass
DONE = -1


class Checkpoint:
    """The saved progress of one process of a run.

    Parameters
    ----------
    run_dir : Path
        The run directory.
    key : str
        The run's content key (hex).
    dist : Dist
        This process's rank and the number of processes.
    interval : float
        Seconds between periodic saves (:meth:`tick`).
    """

    def __init__(self, run_dir: Path, key: str, *, dist: Dist | None = None, interval: float = 60.0):
        self.key = key
        self.dist = dist if dist is not None else Dist()
        self.directory = Path(run_dir) / ".cache" / key[:20]
        name = "state.pt" if self.dist.world == 1 else f"state-r{self.dist.rank}-of-{self.dist.world}.pt"
        self.path = self.directory / name
        self.interval = float(interval)
        self.saved: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}
        self._groups: dict[str, Statistic] = {}
        self._batches: dict[str, int] = {}
        self._last = time.time()

    # -- files -------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the folder; on rank 0, remove caches of runs with other keys.

        Raises
        ------
        ConfigError
            On every rank, when the ranks of a multi-process run disagree on
            the key (other weights, data or options in some process).
        """
        keys = self.dist.gather(self.key)
        if len(set(keys)) > 1:
            raise ConfigError(
                "the processes of this multi-process run were given different models, data or options (run keys "
                + ", ".join(f"rank {r}: {k[:12]}" for r, k in enumerate(keys))
                + "); give every rank the same ones (a randomly initialised model needs the same seed in every rank)")
        root = self.directory.parent
        if self.dist.is_main and root.is_dir():
            for child in root.iterdir():
                if child.name != self.directory.name:
                    log.info("removing cache of a run with other arguments: %s", child)
                    shutil.rmtree(child, ignore_errors=True)
        self.dist.barrier()
        self.directory.mkdir(parents=True, exist_ok=True)

    def load(self) -> bool:
        """Read this process's checkpoint; False when there is none with this key (start afresh)."""
        self.saved = {}
        if not self.path.is_file():
            self._note_other_worlds()
            return False
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file means: start again
            log.warning("ignoring unreadable checkpoint %s (%s)", self.path, exc)
            return False
        if not isinstance(state, dict) or state.get("key") != self.key:
            return False
        self.saved = state
        self.extra = dict(state.get("extra", {}))
        return True

    def _note_other_worlds(self) -> None:
        """Warn (on rank 0) when the folder holds state of this run saved with another number of processes."""
        if not self.dist.is_main or not self.directory.is_dir():
            return
        others = sorted(p.name for p in self.directory.glob("state*.pt") if p.name != self.path.name)
        if others:
            log.warning("%s holds state saved by a run with another number of processes (%s); a run resumes "
                        "only with the same number of processes, so this one (%d) starts afresh",
                        self.directory, ", ".join(others), self.dist.world)

    def reset(self) -> None:
        """Forget what was loaded: the run starts afresh."""
        self.saved, self.extra = {}, {}
        self._groups, self._batches = {}, {}

    # -- passes ------------------------------------------------------------------
    def restore(self, name: str, group: Statistic) -> int:
        """Load pass ``name``'s saved state into ``group``; returns its batches done (0, or :data:`DONE`)."""
        self._groups[name] = group
        passes = self.saved.get("passes", {})
        if name not in passes:
            self._batches[name] = 0
            return 0
        group.load_state_dict(passes[name]["group"])
        self._batches[name] = int(passes[name]["batches"])
        return self._batches[name]

    def progress(self, name: str) -> int | None:
        """Saved batches done of pass ``name`` (:data:`DONE` when finished), None when never saved."""
        passes = self.saved.get("passes", {})
        return int(passes[name]["batches"]) if name in passes else None

    def record(self, name: str, group: Statistic, batches: int) -> None:
        """Note pass ``name``'s progress (written by the next :meth:`save`)."""
        self._groups[name] = group
        self._batches[name] = int(batches)

    def tick(self, name: str, batches: int, before_save=None) -> None:
        """Record progress and save when ``interval`` seconds have passed since the last save."""
        self._batches[name] = int(batches)
        if time.time() - self._last >= self.interval:
            if before_save is not None:
                before_save()
            self.save()

    def save(self) -> None:
        """Write every recorded pass atomically.

        The state goes to a temporary file beside the checkpoint, is synced
        to disk and renamed over it; a write that fails (a full disk, an
        interrupt) removes the temporary file and leaves the last good
        checkpoint as it was.

        Raises
        ------
        DiskFullError
            When the disk is full, naming the file and the space it needs and
            the space free (the last good checkpoint is kept: free some space
            and run the same command again to resume).
        """
        state = {
            "key": self.key,
            "world": self.dist.world,
            "extra": self.extra,
            "passes": {name: {"batches": self._batches[name], "group": group.state_dict()}
                       for name, group in self._groups.items()},
        }
        tmp = self.path.with_suffix(".tmp")
        kept = ("the last good checkpoint is kept: free some space (or give another --out) and run the same "
                "command again to resume")
        with disk_full_as_error("the checkpoint", self.path, tensor_bytes(state) + (64 << 10), kept):
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                with open(tmp, "wb") as f:  # torch.save to a path hides ENOSPC in a RuntimeError
                    torch.save(state, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                tmp.unlink(missing_ok=True)  # before the free space is measured
                raise
        self.saved = state
        self._last = time.time()
