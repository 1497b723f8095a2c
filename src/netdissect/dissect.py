"""The dissection pipeline: data -> activations -> thresholds -> IoU -> labels.

Two passes over the data:

1. every requested layer is captured in one forward pass per batch; each
   layer's per-unit top-k (exact thresholds) and top images are updated, and
   its activations go to a float32 disk cache (or are recomputed later);
2. with the thresholds fixed, the IoU tally runs over the cached (or
   recomputed) activations and the labels.

State is checkpointed under ``RUN_DIR/.cache/<key>/`` where the key hashes
everything that affects the statistics (model weights, layers, data,
options, version), so an interrupted run resumes and a changed run never
reuses stale state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .capture import Capture, resolve_layers
from .config import DissectConfig
from .data import open_dataset
from .data.loader import Batch, batches
from .data.protocol import ConceptDataset
from .errors import CaptureError, ConfigError, DatasetError, close_matches
from .models import LoadedModel, Preprocess, load_model, state_hash
from .result import Dissection, LayerResult, write_run
from .stats import IoUTally, LabelCounts, TopImages, TopKQuantile, TopMaps, float32_below, upsample

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


def dissect(
    model: "str | nn.Module | LoadedModel",
    data: "str | Path | ConceptDataset",
    *,
    layers: list[str],
    out: str | Path | None = None,
    config: DissectConfig | None = None,
    preprocess: Preprocess | None = None,
    weights: str | Path | None = None,
    progress: bool = True,
    **options: Any,
) -> Dissection:
    """Dissect ``layers`` of ``model`` on the concept data set ``data``.

    model: a spec (``"torchvision:resnet18"``), a :class:`LoadedModel`, or an
    ``nn.Module`` (then ``preprocess`` says how to feed it; ImageNet
    normalisation by default).  data: a Broden folder, a registered name
    (``"synthetic"``), or a data set object.  Options (``quantile=``,
    ``batch_size=``, ``protocol=``, ...) override ``config``; see
    :class:`DissectConfig`.  Results are written to ``out`` (a temporary
    folder when None) and returned as a :class:`Dissection`.
    """
    config = _merge_options(config or DissectConfig(), options)
    loaded = _as_loaded(model, weights, preprocess)
    dataset = open_dataset(data)
    run_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="netdissect-"))
    run = _Run(loaded, dataset, list(layers), config, run_dir, progress)
    return run.execute()


def _merge_options(config: DissectConfig, options: dict[str, Any]) -> DissectConfig:
    known = {f.name for f in fields(DissectConfig)}
    for name in options:
        if name not in known:
            hint = close_matches(name, known)
            raise ConfigError(f"unknown option {name!r}" + (f"; {hint}" if hint else "") + f" (options: {', '.join(sorted(known))})")
    return replace(config, **options)


def _as_loaded(model, weights, preprocess) -> LoadedModel:
    if isinstance(model, str):
        loaded = load_model(model, weights=weights)
    elif isinstance(model, LoadedModel):
        loaded = model
    elif isinstance(model, nn.Module):
        loaded = LoadedModel(model, preprocess or Preprocess(), f"python:{type(model).__module__}.{type(model).__qualname__}")
        if weights is not None:
            from .models import load_weights

            load_weights(model, weights)
            loaded.weights = str(weights)
    else:
        raise ConfigError(f"model must be a spec string, a LoadedModel or a torch.nn.Module, got {type(model).__name__}")
    if preprocess is not None:
        loaded.preprocess = preprocess
    loaded.module.eval()
    return loaded


@dataclass
class _Layer:
    """Per-layer statistics and activation cache of one run."""

    name: str
    units: int
    grid: tuple[int, int]
    quantile: TopKQuantile
    top: TopImages
    cache_path: Path | None = None
    cache_bytes: int = 0
    tally: IoUTally | None = None
    maps: TopMaps | None = None
    thresholds: np.ndarray | None = None
    _file: Any = field(default=None, repr=False)

    @property
    def image_bytes(self) -> int:
        return self.units * self.grid[0] * self.grid[1] * 4


class _Run:
    def __init__(self, loaded: LoadedModel, dataset: ConceptDataset, layer_names: list[str],
                 config: DissectConfig, run_dir: Path, progress: bool):
        self.loaded, self.dataset, self.progress = loaded, dataset, progress
        self.config = config.resolved()
        self.device = torch.device(self.config.device)
        self.model = loaded.module.to(self.device)
        resolve_layers(self.model, layer_names)  # fail fast on unknown names
        if len(set(layer_names)) != len(layer_names):
            raise ConfigError(f"layers {layer_names} name a layer twice")
        self.layer_names = layer_names
        self.run_dir = run_dir
        self.n = len(dataset)
        if self.n == 0:
            raise DatasetError(f"data set {dataset.spec()!r} has no images")
        self.concepts = dataset.concepts
        self.num_labels = self.concepts.max_number + 1
        self.category_of = torch.from_numpy(self.concepts.category_index())
        self.known_labels = torch.zeros(self.num_labels, dtype=torch.bool)  # label 0 ("none") and the table's
        self.known_labels[[0, *self.concepts.numbers()]] = True
        self.batch_count = -(-self.n // self.config.batch_size)
        self.started = time.time()

    # -- identity ---------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        return {
            "netdissect": __version__,
            "model": self.loaded.spec,
            "weights": self.loaded.weights,
            "weights_sha256": state_hash(self.model),
            "preprocess": self.loaded.preprocess.to_json(),
            "layers": self.layer_names,
            "data": self.dataset.spec(),
            "data_fingerprint": self.dataset.fingerprint(),
            "images": self.n,
            "options": self.config.result_key(),
        }

    # -- main -------------------------------------------------------------------
    def execute(self) -> Dissection:
        ident = self.identity()
        self.key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
        self.ident = ident
        done = Dissection.load_if_complete(self.run_dir, self.key, self.config.iou_threshold)
        if done is not None:
            log.info("results for these arguments are already complete in %s", self.run_dir)
            return done
        self.cache_dir = self.run_dir / ".cache" / self.key[:20]
        self._drop_stale_caches()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.layers = self._probe_layers()
        self.use_disk = self._choose_cache()
        state = self._load_state()
        with _interrupt_as_keyboard(), Capture(self.model, self.layer_names) as self.capture:
            if state["phase"] == "pass1":
                self._pass1(state)
                state = {"phase": "pass2", "batches": 0}
            self._fix_thresholds()
            self._make_tallies(state)
            if state["phase"] == "pass2":
                self._pass2(state)
        return self._finish()

    def _drop_stale_caches(self) -> None:
        root = self.run_dir / ".cache"
        if root.is_dir():
            for child in root.iterdir():
                if child.name != self.key[:20]:
                    log.info("removing cache of a run with other arguments: %s", child)
                    shutil.rmtree(child, ignore_errors=True)

    def _probe_layers(self) -> dict[str, _Layer]:
        ih, iw = self.dataset.image_size
        x = self.loaded.preprocess(torch.zeros(1, 3, ih, iw, dtype=torch.uint8)).to(self.device)
        acts = self.capture_once(x)
        layers = {}
        for name in self.layer_names:
            _, units, h, w = acts[name].shape
            layers[name] = _Layer(name, units, (h, w), *self._fresh_stats(units, (h, w)))
        return layers

    def _fresh_stats(self, units: int, grid: tuple[int, int]) -> tuple[TopKQuantile, TopImages]:
        c = self.config
        per_image = c.quantile_size[0] * c.quantile_size[1] if c.quantile_on == "upsampled" else grid[0] * grid[1]
        quantile = TopKQuantile(units, c.quantile, self.n * per_image, max_values=c.max_quantile_values,
                                seed=c.seed, device=self.device)
        return quantile, TopImages(units, c.top_images, device=self.device)

    def capture_once(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with Capture(self.model, self.layer_names) as cap:
            return cap.run(x, stop_early=False)  # a full pass catches layers that fire twice

    def _choose_cache(self) -> bool:
        need = sum(l.image_bytes for l in self.layers.values()) * self.n
        if self.config.activation_cache == "recompute":
            return False
        if self.config.activation_cache == "disk":
            return True
        free = shutil.disk_usage(self.cache_dir).free
        return need <= min(self.config.cache_limit_gb * 2**30, free // 2)

    # -- checkpoints ----------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        """Restore a checkpoint of this key, or start afresh: {"phase": ..., "batches": ...}."""
        path = self.cache_dir / STATE_FILE
        for layer in self.layers.values():
            layer.cache_path = self.cache_dir / f"acts-{_safe(layer.name)}.f32" if self.use_disk else None
        state = None
        if path.is_file():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                log.warning("ignoring unreadable checkpoint %s (%s)", path, exc)
        done = state is not None and state.get("phase") == "done"
        if state is None or state.get("key") != self.key or (state.get("use_disk") != self.use_disk and not done):
            return self._start_afresh()
        for name, layer in self.layers.items():
            saved = state["layers"][name]
            layer.quantile.load_state_dict(saved["quantile"])
            layer.top.load_state_dict(saved["top"])
            layer.cache_bytes = int(saved["cache_bytes"])
            short = layer.cache_path is not None and (
                not layer.cache_path.is_file() or layer.cache_path.stat().st_size < layer.cache_bytes)
            if short and not done:
                log.warning("activation cache %s is shorter than its checkpoint; starting again", layer.cache_path)
                return self._start_afresh()
        if state["phase"] == "pass1":
            self._truncate_caches(None)
        self._saved_pass2 = state.get("pass2")
        log.info("resuming %s at batch %d", state["phase"], state["batches"])
        return {"phase": state["phase"], "batches": int(state["batches"])}

    def _start_afresh(self) -> dict[str, Any]:
        for layer in self.layers.values():
            layer.quantile, layer.top = self._fresh_stats(layer.units, layer.grid)
        self._saved_pass2 = None
        self._truncate_caches(0)
        return {"phase": "pass1", "batches": 0}

    def _truncate_caches(self, size: int | None) -> None:
        for layer in self.layers.values():
            if size is not None:
                layer.cache_bytes = size
            if layer.cache_path is not None:
                with open(layer.cache_path, "ab") as f:
                    f.truncate(layer.cache_bytes)

    def _save_state(self, phase: str, batch_count: int) -> None:
        for layer in self.layers.values():
            if layer._file is not None:
                layer._file.flush()
        state = {
            "key": self.key,
            "use_disk": self.use_disk,
            "phase": phase,
            "batches": batch_count,
            "layers": {
                name: {"quantile": l.quantile.state_dict(), "top": l.top.state_dict(), "cache_bytes": l.cache_bytes}
                for name, l in self.layers.items()
            },
        }
        if phase in ("pass2", "done"):
            state["pass2"] = {
                "counts": self.counts.state_dict(),
                "layers": {n: {"tally": l.tally.state_dict(), "maps": l.maps.state_dict()} for n, l in self.layers.items()},
            }
        path = self.cache_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    @contextmanager
    def _checkpointing(self, phase: str, state: dict[str, Any]) -> Iterator[callable]:
        last = [time.time()]

        def tick(batch_count: int) -> None:
            state["batches"] = batch_count
            if time.time() - last[0] >= self.config.checkpoint_seconds:
                self._save_state(phase, batch_count)
                last[0] = time.time()

        try:
            yield tick
        except KeyboardInterrupt:
            self._save_state(phase, state["batches"])
            log.warning("interrupted: state saved in %s; run the same command again to resume", self.cache_dir)
            raise
        finally:
            for layer in self.layers.values():
                if layer._file is not None:
                    layer._file.close()
                    layer._file = None

    # -- pass 1 -------------------------------------------------------------------
    def _loader(self, start_batch: int, labels_only: bool):
        b = self.config.batch_size
        indices = range(start_batch * b, self.n)
        return batches(
            self.dataset, indices, batch_size=b, num_workers=self.config.num_workers,
            labels_only=labels_only, pin_memory=self.device.type == "cuda",
        )

    def _forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = self.loaded.preprocess(batch.images.to(self.device, non_blocking=True))
        acts = self.capture.run(x)
        out = {}
        for name in self.layer_names:
            a = acts[name].float()
            if not torch.isfinite(a).all():
                bad = (~torch.isfinite(a)).flatten(1).any(1).nonzero().flatten().tolist()
                ids = [self.dataset.image_id(int(batch.indices[i])) for i in bad[:5]]
                raise CaptureError(
                    f"layer {name!r} produced NaN or infinite activations on images {ids}; "
                    "check the model's weights and the input normalisation"
                )
            out[name] = a
        return out

    def _pass1(self, state: dict[str, Any]) -> None:
        total = self.batch_count
        start = state["batches"]
        c = self.config
        for layer in self.layers.values():
            if layer.cache_path is not None:
                layer._file = open(layer.cache_path, "ab")
        with self._checkpointing("pass1", state) as tick:
            bar = tqdm(self._loader(start, False), total=total, initial=start, disable=not self.progress,
                       desc="pass 1/2: thresholds", unit="batch")
            for count, batch in enumerate(bar, start + 1):
                acts = self._forward(batch)
                for name, a in acts.items():
                    layer = self.layers[name]
                    if c.quantile_on == "raw":
                        layer.quantile.update(a.transpose(0, 1).reshape(layer.units, -1))
                    else:
                        for part in a.split(max(1, 4096 // layer.units), dim=0):
                            up = upsample(part, c.quantile_size)
                            layer.quantile.update(up.transpose(0, 1).reshape(layer.units, -1))
                    layer.top.update(a.amax(dim=(2, 3)), batch.indices)
                    if layer._file is not None:
                        data = a.cpu().numpy().tobytes()
                        layer._file.write(data)
                        layer.cache_bytes += len(data)
                tick(count)
            bar.close()
        self._save_state("pass1", total)

    def _fix_thresholds(self) -> None:
        for layer in self.layers.values():
            layer.thresholds = layer.quantile.quantiles()

    # -- pass 2 -------------------------------------------------------------------
    def _make_tallies(self, state: dict[str, Any]) -> None:
        self.counts = LabelCounts(self.num_labels, device=self.device)
        c = self.config
        saved = self._saved_pass2 if state["batches"] or state["phase"] == "done" else None
        for name, layer in self.layers.items():
            t32 = torch.from_numpy(float32_below(layer.thresholds)).to(self.device)
            layer.tally = IoUTally(t32, self.category_of, len(self.concepts.categories),
                                   self.dataset.label_size, denominator=c.denominator)
            layer.maps = TopMaps(layer.top.indices, layer.grid)
            if saved:
                layer.tally.load_state_dict(saved["layers"][name]["tally"])
                layer.maps.load_state_dict(saved["layers"][name]["maps"])
        if saved:
            self.counts.load_state_dict(saved["counts"])

    def _cached_acts(self, batch: Batch, files: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = {}
        first, b = int(batch.indices[0]), len(batch.indices)
        for name, layer in self.layers.items():
            f = files[name]
            f.seek(first * layer.image_bytes)
            buf = np.empty((b, layer.units, *layer.grid), dtype=np.float32)
            if f.readinto(memoryview(buf).cast("B")) != buf.nbytes:
                raise DatasetError(f"activation cache {layer.cache_path} is truncated; delete {self.cache_dir} and run again")
            out[name] = torch.from_numpy(buf).to(self.device, non_blocking=True)
        return out

    def _check_labels(self, batch: Batch) -> None:
        for tensor, kind in ((batch.pixel_labels, "pixel"), (batch.image_labels, "image-level")):
            if tensor.numel() == 0:
                continue
            bad = (tensor < 0) | (tensor >= self.num_labels)
            bad |= ~self.known_labels[tensor.clamp(0, self.num_labels - 1)]
            if bad.any():
                row = int(bad.flatten(1).any(1).nonzero()[0])
                code = int(tensor[row][bad[row]][0])
                raise DatasetError(
                    f"image {self.dataset.image_id(int(batch.indices[row]))!r} has {kind} label {code}, "
                    f"which is not in the concept table (label numbers 1..{self.num_labels - 1})"
                )

    def _pass2(self, state: dict[str, Any]) -> None:
        total = self.batch_count
        start = state["batches"]
        files = {n: open(l.cache_path, "rb") for n, l in self.layers.items()} if self.use_disk else None
        try:
            with self._checkpointing("pass2", state) as tick:
                bar = tqdm(self._loader(start, self.use_disk), total=total, initial=start, disable=not self.progress,
                           desc="pass 2/2: IoU", unit="batch")
                for count, batch in enumerate(bar, start + 1):
                    self._check_labels(batch)
                    acts = self._cached_acts(batch, files) if self.use_disk else self._forward(batch)
                    pixel = batch.pixel_labels.to(self.device, non_blocking=True)
                    image = batch.image_labels.to(self.device, non_blocking=True)
                    self.counts.update(pixel, image)
                    for name, a in acts.items():
                        layer = self.layers[name]
                        layer.tally.update(a, pixel, image)
                        layer.maps.update(a, batch.indices)
                    tick(count)
                bar.close()
        finally:
            if files:
                for f in files.values():
                    f.close()
        self._save_state("done", total)  # kept: results can be re-derived (another IoU cut-off) from it

    # -- results ------------------------------------------------------------------
    def _finish(self) -> Dissection:
        results = {}
        truth = self.counts.truth
        for name, layer in self.layers.items():
            results[name] = LayerResult(
                name=name,
                units=layer.units,
                grid=layer.grid,
                thresholds=layer.thresholds,
                threshold_method=layer.quantile.describe(),
                iou=layer.tally.iou(truth),
                intersect=layer.tally.intersect.cpu().numpy(),
                denominator_pixels=layer.tally.denominator_pixels(),
                mask_pixels=layer.tally.mask_pixels.cpu().numpy(),
                truth=truth.cpu().numpy(),
                top_indices=layer.top.indices.cpu().numpy(),
                top_scores=layer.top.scores.cpu().numpy(),
                top_maps=layer.maps.maps.cpu().numpy(),
            )
        config_json = {
            "key": self.key,
            **self.ident,
            "config": self.config.to_json(),
            "activation_cache": "disk" if self.use_disk else "recompute",
            "label_size": list(self.dataset.label_size),
            "image_size": list(self.dataset.image_size),
            "versions": _versions(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
            "seconds": round(time.time() - self.started, 3),
        }
        write_run(self.run_dir, config_json, self.concepts, results, self.dataset, self.config.iou_threshold)
        for layer in self.layers.values():  # the activation cache has served its purpose
            if layer.cache_path is not None and layer.cache_path.exists():
                layer.cache_path.unlink()
        return Dissection.load(self.run_dir)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)


def _versions() -> dict[str, str]:
    import platform

    import numpy
    import pandas

    out = {"netdissect": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": numpy.__version__, "pandas": pandas.__version__, "platform": platform.platform()}
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return out


@contextmanager
def _interrupt_as_keyboard():
    """Within the block, SIGTERM (a plain `kill`) interrupts like Ctrl-C, so state is saved."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
