r"""Multi-process runs on ``torch.distributed``.

Launching
---------
From the command line, with ``torchrun`` (one process per GPU, or several
on CPU)::

    torchrun --nproc-per-node 4 -m netdissect dissect --model resnet18 --layers layer4 \
        --data broden1_224 --out runs/r18

(``python -m torch.distributed.run`` is the same launcher.)  The command
joins the process group that ``torchrun`` describes in the environment
(:func:`init_from_env`: NCCL when CUDA is available, else gloo); only rank 0
prints the summary and writes the HTML report.

From Python, initialise a process group in every process first, then call
the ordinary API with the same arguments on every rank::

    torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:29500",
                                         rank=rank, world_size=world)
    result = netdissect.dissect(model, data, layers=["layer4"], out="runs/r18")

Every rank returns the same :class:`~netdissect.dissection.Dissection`.

What each rank does
-------------------
- **Data**: each rank takes a contiguous shard of the data made of whole
  batches (:meth:`Dist.shard`), so every image goes through the model in the
  same batch as in a one-process run with the same batch size: results do
  not depend on the number of processes even for models whose float
  arithmetic depends on the batch composition.  Shards differ by at most one
  batch; only the last rank may hold a partial batch, and with more ranks
  than batches some ranks hold none.
- **Device**: ``cuda:LOCAL_RANK`` when CUDA is available (``torchrun`` sets
  ``LOCAL_RANK``; without it, the global rank modulo the number of GPUs),
  else the CPU (:func:`default_device`); ``device=`` / ``--device`` overrides
  it for every rank.  Statistics stay on that device.
- **Merging**: at the end of a pass every statistic is merged across ranks
  through its ``merge`` contract (integer sums; exact top-k: gather and
  re-select, ties broken by image index), in rank order, so that every rank
  holds the same result.  States travel as CPU tensors over a gloo group
  (a gloo subgroup when the default group is NCCL).  Every statistic merges
  exactly, so 1, 2 or N processes give bit-identical run directories (the
  sampled mode of :class:`~netdissect.stats.TopKQuantile`, past
  ``max_quantile_values``, is the one statistic that is not yet independent
  of the sharding) -- given the same floats from the model: on the CPU,
  compare runs with the same intra-op threads per process (``torchrun``
  gives each worker ``OMP_NUM_THREADS=1``; oneDNN convolutions can round
  differently with another thread count).
- **Writing**: rank 0 alone writes the run directory; the other ranks wait
  at a barrier and then load it.  The run directory must therefore be on a
  file system every rank sees (on several machines, a shared one).

Interruption and resuming
-------------------------
Each rank saves its own state (``state-r<rank>-of-<world>.pt`` in the run's
cache folder) periodically and when interrupted.  A rank that is interrupted
or fails inside a pass tells the others at the end of the pass: they save
their state and stop too (KeyboardInterrupt when a rank was interrupted,
:class:`RankFailed` otherwise), instead of waiting for it in the merge.  Run
the same command **with the same number of processes** to resume; with
another number of processes the run starts afresh (the saved shards would
not match).  When any rank has no usable state the ranks start afresh
together; a rank killed between the merge of a pass and its next save takes
the merged result from a rank that saved it.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from ..errors import NetDissectError
from ..stats.base import Statistic


class RankFailed(NetDissectError, RuntimeError):
    """Another rank of a multi-process run failed inside a pass (this rank's state is saved)."""


_CPU_GROUP: list[Any] = [None, None]  # [default group, the group object collectives use with it]


def _object_group():
    """The group for object collectives: None (the default group) when it is gloo, else a gloo subgroup.

    Created on first use; every rank reaches its first collective at the same
    point of a run, so every rank creates it together.
    """
    import torch.distributed as dist

    if dist.get_backend() == "gloo":
        return None  # holds no reference: a group kept alive past destroy_process_group aborts at exit
    default = dist.group.WORLD
    if _CPU_GROUP[0] is not default:
        _CPU_GROUP[:] = [default, dist.new_group(backend="gloo")]
    return _CPU_GROUP[1]


@dataclass(frozen=True)
class Dist:
    """A process's place in a run: ``rank`` of ``world`` processes (0 of 1 when not distributed)."""

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

    def shard(self, n: int, batch_size: int = 1) -> range:
        """The contiguous share of ``range(n)``, in whole batches of ``batch_size``.

        The ``ceil(n / batch_size)`` batches are split so that ranks hold
        numbers of batches differing by at most one; only the last rank's
        last batch can be partial, so every image falls in the same batch
        as in one process.

        Parameters
        ----------
        n : int
            Images in the data.
        batch_size : int
            Images per batch (1: shares of images differing by at most one).

        Returns
        -------
        range
            Data indices of this rank (empty when there are fewer batches than ranks).
        """
        batches = -(-n // batch_size)
        first = batches * self.rank // self.world
        last = batches * (self.rank + 1) // self.world
        return range(min(n, first * batch_size), min(n, last * batch_size))

    def barrier(self) -> None:
        """Wait for every rank (no-op in one process)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier(group=_object_group())

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, obj, group=_object_group())
        return out

    def broadcast(self, obj, src: int):
        """Rank ``src``'s ``obj`` (picklable) on every rank; the others' ``obj`` is ignored."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src, group=_object_group())
        return box[0]

    def all_true(self, flag: bool) -> bool:
        """True when ``flag`` is true on every rank."""
        return all(self.gather(bool(flag)))

    def merge(self, stat: Statistic) -> None:
        """Replace ``stat`` on every rank by the merge of all ranks' ``stat``, in rank order.

        Parameters
        ----------
        stat : Statistic
            Any statistic or group; its ``state_dict`` must be picklable
            (the statistics here give CPU tensors).
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
    ``MASTER_PORT``, ``RANK`` and ``WORLD_SIZE``; with NCCL, first select
    the ``LOCAL_RANK`` GPU.

    Parameters
    ----------
    timeout_s : float
        Seconds a collective may wait for the other ranks before failing.

    Returns
    -------
    Dist
        This process's rank and the number of processes (0 of 1 without ``torchrun``).
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
    """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``.

    Without ``LOCAL_RANK`` (a group initialised by hand), a rank of an
    initialised group uses GPU ``rank % device_count``; a single process ``cuda:0``.
    """
    if not torch.cuda.is_available():
        return "cpu"
    if "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return f"cuda:{Dist.current().rank % torch.cuda.device_count()}"
