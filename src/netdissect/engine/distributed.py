"""Multi-process runs on ``torch.distributed``.

Launch with ``torchrun --nproc-per-node N -m netdissect dissect ...`` or call
the Python API inside an initialised process group.  Each rank takes a
contiguous shard of the data; at the end of a pass every statistic is merged
across ranks through its ``merge`` contract (exact top-k: gather and
re-select), in rank order, so that every rank holds the same result; rank 0
alone writes the run directory.  Every statistic here merges exactly (integer
sums, exact top-k, ties broken by image index) and sampled statistics are
seeded by absolute image index, so results never depend on the number of
ranks.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from ..stats.base import Statistic


@dataclass(frozen=True)
class Dist:
    """This process's place in a run: ``rank`` of ``world`` processes (0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "Dist":
        """The initialised process group's rank and size, or a single process."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes results)."""
        return self.rank == 0

    def shard(self, n: int) -> range:
        """This rank's contiguous share of ``range(n)`` (sizes differ by at most one)."""
        return range(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    def barrier(self) -> None:
        """Wait for every rank (no-op in one process)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def all_true(self, flag: bool) -> bool:
        """True when ``flag`` is true on every rank."""
        return all(self.gather(bool(flag)))

    def merge(self, stat: Statistic) -> None:
        """Replace ``stat`` on every rank by the merge of all ranks' ``stat``, in rank order.

        Parameters
        ----------
        stat : Statistic
            Any statistic or group; its ``state_dict`` must be picklable.
        """
        if self.world == 1:
            return
        states = self.gather(stat.state_dict())
        merged = copy.deepcopy(stat)
        merged.load_state_dict(states[0])
        for state in states[1:]:
            other = copy.deepcopy(stat)
            other.load_state_dict(state)
            merged.merge(other)
        stat.load_state_dict(merged.state_dict())


def init_from_env(timeout_s: float = 1800.0) -> Dist:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    With ``WORLD_SIZE`` > 1 and no group initialised yet, initialise one
    (NCCL when CUDA is available, else gloo) from ``MASTER_ADDR`` /
    ``MASTER_PORT``.  Returns the resulting :class:`Dist`.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return Dist.current()


def default_device() -> str:
    """``cuda:LOCAL_RANK`` when CUDA is available (each rank its own GPU), else ``cpu``."""
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"
