"""One generic streaming pass: source -> model -> statistic group.

Every analysis is a sequence of :class:`Pass` es run by an :class:`Engine`:
the engine draws batches from its source (this process's shard of it), runs
the model once per batch with every needed layer traced (or edited), or reads
the layers from the activation cache, asks the source for the batch's concept
labels when the pass needs them, and hands all of it to the pass's
``update``, which feeds the pass's statistic group.  The engine saves the
group's state periodically and on interruption, resumes a pass where it
stopped, and at the end of a pass merges the group across processes.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import CaptureError, ConfigError
from ..hooks import Trace
from ..stats.base import Statistic
from .cache import ActivationCache
from .checkpoint import DONE, Checkpoint
from .distributed import Dist, RankFailed
from .memory import tuned_allocator
from .sources import Batch, Source

log = logging.getLogger(__name__)

#: where a pass takes its activations from
ACTIVATIONS = ("forward", "cache-write", "cache-read")

Labels = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Pass:
    """One pass over the data.

    Attributes
    ----------
    name : str
        Unique within a run (it names the pass's checkpoint entry).
    group : Statistic
        Everything the pass accumulates (usually a
        :class:`~netdissect.stats.group.StatGroup`); merged across processes
        at the end.
    update : callable
        ``update(batch, acts, labels)``: ``acts`` maps layer name to (B, U,
        h, w) float32 (the raw outputs under ``Engine(grid=False)``); ``labels`` is (pixel_labels, image_labels) on the
        device when ``labels`` is set, else None.
    labels : bool
        Whether the pass needs concept labels.
    activations : str
        "forward" (run the model), "cache-write" (run it and store the
        layers in the activation cache) or "cache-read" (read them back
        instead of running the model).
    description : str
        Progress-bar text.
    """

    name: str
    group: Statistic
    update: Callable[[Batch, dict[str, torch.Tensor], Labels | None], None]
    labels: bool = False
    activations: str = "forward"
    description: str = ""

    def __post_init__(self):
        if self.activations not in ACTIVATIONS:
            raise ConfigError(f"pass activations {self.activations!r} is not one of {ACTIVATIONS}")


def check_finite(name: str, acts: torch.Tensor, batch: Batch, source: Source) -> None:
    """Raise when a layer produced NaN or infinite values, naming the images.

    Raises
    ------
    CaptureError
        With the first image ids affected.
    """
    if not torch.isfinite(acts).all():
        bad = (~torch.isfinite(acts)).flatten(1).any(1).nonzero().flatten().tolist()
        ids = [source.image_id(int(batch.indices[i])) for i in bad[:5]]
        raise CaptureError(
            f"layer {name!r} produced NaN or infinite activations on images {ids}; "
            "check the model's weights and the input normalisation"
        )


class Engine:
    """Runs passes of one model over one source.

    Parameters
    ----------
    source : Source
        Inputs and labels.
    module : torch.nn.Module
        The model (on ``device``, in eval mode).
    layers : list of str
        Layers every pass receives.
    device : torch.device
        Where the model and the statistics run.
    checkpoint : Checkpoint
        Where progress is saved.
    cache : ActivationCache, optional
        The activation cache, for passes that write or read it.
    batch_size, num_workers : int
        Batching and loader processes.
    dist : Dist
        This process's rank (the data is sharded by rank).
    edit : mapping, optional
        Edits applied in every forward pass (see :class:`netdissect.hooks.Trace`).
    progress : bool
        Show progress bars (rank 0 only).
    grid : bool
        Hand passes the layers as (B, U, h, w) grids (tokens become grids, the
        class token dropped; the default); False: the raw outputs, any shape
        (token outputs with their class token, (B, U) linear outputs).
    batch_context : callable, optional
        ``batch_context(batch)`` returns a context manager that each forward
        pass runs inside (e.g. :func:`netdissect.lwta.sample_ids`, so that a
        stochastic layer samples per image, whatever the batch).
    """

    def __init__(self, source: Source, module: nn.Module, layers: list[str], *, device: torch.device,
                 checkpoint: Checkpoint, cache: ActivationCache | None = None, batch_size: int = 32,
                 num_workers: int = 0, dist: Dist | None = None, edit: Mapping[str, Any] | None = None,
                 progress: bool = True, grid: bool = True,
                 batch_context: Callable[[Batch], Any] | None = None):
        self.source, self.module, self.layers = source, module, list(layers)
        self.device = torch.device(device)
        self.checkpoint, self.cache = checkpoint, cache
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.dist, self.edit, self.progress = dist if dist is not None else Dist(), dict(edit or {}), progress
        self.grid = bool(grid)
        self.batch_context = batch_context
        self.shard = self.dist.shard(len(source), self.batch_size)  # whole batches: the same batches as one process

    @property
    def batch_count(self) -> int:
        """Batches in this process's shard."""
        return math.ceil(len(self.shard) / self.batch_size)

    def images_done(self, batches: int) -> int:
        """Images of the shard covered by its first ``batches`` batches."""
        return min(len(self.shard), max(batches, 0) * self.batch_size)

    def run(self, p: Pass) -> None:
        """Run pass ``p`` to the end (resuming from the checkpoint), then merge its group across processes.

        In a multi-process run, a rank that stops inside the pass (interrupted
        or failing) tells the others at the end of the pass; they save their
        state and stop as well, so that no rank waits for it in the merge.

        Raises
        ------
        KeyboardInterrupt
            After saving the state, when interrupted (Ctrl-C or SIGTERM), or
            when another rank was.
        RankFailed
            After saving the state, when another rank failed inside the pass.
        """
        start = self.checkpoint.restore(p.name, p.group)
        if self._done_somewhere(p, start):
            return
        if start > 0:
            log.info("resuming %s at batch %d of %d", p.name, start, self.batch_count)
        if p.activations != "forward" and self.cache is None:
            raise ConfigError(f"pass {p.name!r} uses the activation cache, but the run has none")
        need_output = p.labels and self.source.labels_from_output
        if p.activations == "cache-read" and need_output:
            raise ConfigError(f"pass {p.name!r}: this source labels the model's output, so it cannot read a cache")
        flush = self.cache.flush if p.activations == "cache-write" else None
        count = start
        stopped: BaseException | None = None
        try:
            if p.activations == "cache-write":
                self.cache.truncate(self.images_done(start), planned=len(self.shard))
            indices = range(self.shard.start + self.images_done(start), self.shard.stop)
            loader = self.source.batches(indices, batch_size=self.batch_size, num_workers=self.num_workers,
                                         images=p.activations != "cache-read", pin_memory=self.device.type == "cuda")
            with tuned_allocator(), _Interrupts() as interrupts, \
                    Trace(self.module, self.layers, edit=self.edit, grid=self.grid) as trace:
                bar = tqdm(loader, total=self.batch_count, initial=start, unit="batch",
                           desc=p.description or p.name, disable=not (self.progress and self.dist.is_main))
                for count, batch in enumerate(bar, start + 1):
                    with interrupts.deferred():  # a batch is folded in whole or not at all
                        if p.activations == "cache-read":
                            first = int(batch.indices[0]) - self.shard.start
                            acts = self.cache.read(first, len(batch.indices), self.device)
                        else:
                            acts = self._forward(trace, batch, need_output)
                            if p.activations == "cache-write":
                                self.cache.append(acts)
                        labels = self.source.labels(batch, trace.output, self.device) if p.labels else None
                        p.update(batch, acts, labels)
                        self.checkpoint.tick(p.name, count, before_save=flush)
                bar.close()
            if flush is not None:
                self.cache.close()  # writes out the last appended batches: a full disk is an error of the pass
        except KeyboardInterrupt as exc:
            stopped = exc
            if flush is not None:
                flush()
            self.checkpoint.save()
            log.warning("interrupted: state saved in %s; run the same command again to resume",
                        self.checkpoint.directory)
            raise
        except BaseException as exc:
            stopped = exc
            raise
        finally:
            if self.cache is not None:
                try:
                    self.cache.close()
                except OSError:  # the pass failed already (a full disk): keep its own error
                    if stopped is None:
                        raise
            if stopped is not None:
                self._tell_others(p, stopped)
        self._check_others(p)
        self.dist.merge(p.group)
        self.checkpoint.record(p.name, p.group, DONE)
        self.checkpoint.save()

    # -- agreement between ranks (no-ops in one process) --------------------------------
    def _done_somewhere(self, p: Pass, start: int) -> bool:
        """True when pass ``p`` is finished; then ``p.group`` holds its merged result on every rank.

        A rank killed after the end-of-pass merge but before saving resumes
        mid-pass while the others saved the pass as done: it takes the
        merged result from the first rank that has it (the merge needed this
        rank's whole shard, so the result is complete).
        """
        starts = self.dist.gather(start)
        if all(s == DONE for s in starts):
            return True
        if DONE not in starts:
            return False
        src = starts.index(DONE)
        state = self.dist.broadcast(p.group.state_dict() if start == DONE else None, src)
        if start != DONE:
            log.info("pass %s: taking the merged result saved by rank %d", p.name, src)
            p.group.load_state_dict(state)
            self.checkpoint.record(p.name, p.group, DONE)
            self.checkpoint.save()
        return True

    def _tell_others(self, p: Pass, exc: BaseException) -> None:
        """Report this rank's failure in pass ``p`` to the others, which wait for it at the end of the pass."""
        if self.dist.world == 1:
            return
        status = (self.dist.rank, isinstance(exc, KeyboardInterrupt), f"{type(exc).__name__}: {exc}")
        try:
            self.dist.gather(status)
        except Exception as err:  # noqa: BLE001 -- another rank is gone: raise this rank's own error
            log.warning("rank %d could not tell the other ranks that it stopped: %s", self.dist.rank, err)

    def _check_others(self, p: Pass) -> None:
        """After this rank's share of pass ``p``: stop (state saved) when another rank stopped in the pass.

        Raises
        ------
        KeyboardInterrupt
            When another rank was interrupted.
        RankFailed
            When another rank failed.
        """
        if self.dist.world == 1:
            return
        failed = [s for s in self.dist.gather(None) if s is not None]
        if not failed:
            return
        self.checkpoint.save()
        rank, interrupted, message = failed[0]
        log.warning("rank %d stopped in pass %s (%s): state of rank %d saved in %s; run the same command "
                    "again to resume", rank, p.name, message, self.dist.rank, self.checkpoint.directory)
        if interrupted:
            raise KeyboardInterrupt(f"rank {rank} was interrupted")
        raise RankFailed(f"rank {rank} failed in pass {p.name!r} ({message}); the state of rank "
                         f"{self.dist.rank} is saved: fix the cause and run the same command again to resume")

    def _forward(self, trace: Trace, batch: Batch, need_output: bool) -> dict[str, torch.Tensor]:
        x = self.source.model_input(batch, self.device)
        if self.batch_context is None:
            raw = trace.run(x, stop_early=not need_output)
        else:
            with self.batch_context(batch):
                raw = trace.run(x, stop_early=not need_output)
        acts = {}
        for name in self.layers:
            a = raw[name].float()
            check_finite(name, a, batch, self.source)
            acts[name] = a
        return acts


class _Interrupts:
    """Ctrl-C and SIGTERM (a plain ``kill``) raise KeyboardInterrupt, but never inside :meth:`deferred`.

    An interrupt that arrives while a batch is being folded in is raised when
    the batch is complete, so a saved state never holds part of a batch.
    """

    def __init__(self):
        self._critical = False
        self._pending: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame):
        if self._critical:
            self._pending = signum
            return
        raise KeyboardInterrupt(f"signal {signum}")

    def __enter__(self) -> "_Interrupts":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    @contextmanager
    def deferred(self):
        """Hold interrupts inside the block; raise a held one at its end."""
        self._critical = True
        try:
            yield
        finally:
            self._critical = False
        if self._pending is not None:
            signum, self._pending = self._pending, None
            raise KeyboardInterrupt(f"signal {signum}")
