"""Network Dissection as a composition of the engine's parts.

Two passes over a source (Bau et al. 2017, section 3; Bau et al. 2020 for
segmenter and generator sources):

1. every requested layer is traced in one forward pass per batch; each
   layer's :class:`~netdissect.stats.group.ThresholdStats` gets its exact
   per-unit top quantile and top images, and the activations may go to the
   float32 disk cache;
2. with the thresholds fixed, each layer's
   :class:`~netdissect.stats.group.IoUStats` tallies IoU against the concept
   labels (stored, or made by a segmenter), from the cache or a second forward.

The IoU labeler then labels every unit and the run directory is written
(rank 0 of a multi-process run).  Everything is resumable: state is keyed by
the content of the model, the data and the options.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from . import __version__
from .config import DissectConfig
from .data.protocol import ConceptDataset
from .dissection import Dissection
from .engine.cache import ActivationCache
from .engine.checkpoint import DONE, Checkpoint
from .engine.distributed import Dist, RankFailed, default_device
from .engine.passes import Engine, Pass
from .engine.plan import (
    check_run_dir,
    hold_run_dir,
    probe_layers,
    resolve_device,
    run_key,
    use_disk_cache,
    versions,
)
from .engine.sources import ConceptSource, GeneratorSource, SegmentedSource, Source, open_images
from .errors import ConfigError, DatasetError, close_matches
from .labeling.base import LayerResult
from .labeling.iou import IoULabeler
from .lwta.layer import needs_ids, sample_ids, winner_rule
from .models import LoadedGenerator, LoadedModel, Preprocess, load_generator, load_model, state_hash
from .results.rundir import RunInfo, write_run
from .stats import LabelCounts
from .stats.group import IoUStats, StatGroup, ThresholdStats
from .storage import disk_full_as_error, tensor_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DerivedLayer:
    """A layer computed from a traced one, dissected as a layer of its own in the same two passes.

    Used by the rotation experiment (Bau et al. 2017, section 3.2; METHODS
    A1): each rotated basis ``R a(:, y, x)`` of a layer is one derived layer,
    so one forward pass per batch serves every rotation, and the threshold
    pass and the IoU pass apply the same transform to the same activations.

    Attributes
    ----------
    layer : str
        The traced layer it is computed from (must be in ``layers``).
    transform : callable
        ``transform(acts) -> acts'``: (B, U, h, w) float32 -> (B, U', h, w)
        float32 on the same device; a pure function of its input.
    identity : dict
        JSON-able description of the transform (it enters the run's content
        key, so a changed transform never reuses old results).
    units : int, optional
        U' (default: U of ``layer``).
    """

    layer: str
    transform: Callable[[torch.Tensor], torch.Tensor] = field(compare=False)
    identity: dict[str, Any] = field(default_factory=dict)
    units: int | None = None


def dissect(
    model: "str | nn.Module | LoadedModel | None" = None,
    data: "str | Path | ConceptDataset | Source | None" = None,
    *,
    layers: list[str],
    out: str | Path | None = None,
    config: DissectConfig | None = None,
    preprocess: Preprocess | None = None,
    weights: str | Path | None = None,
    segmenter: Any = None,
    generator: "str | LoadedGenerator | None" = None,
    samples: int | None = None,
    progress: bool = True,
    wait: bool = False,
    derived: Mapping[str, DerivedLayer] | None = None,
    **options: Any,
) -> Dissection:
    """Dissect ``layers`` of a model (or a generator) and label every unit with a concept.

    Parameters
    ----------
    model : str, torch.nn.Module or LoadedModel
        A spec (``"torchvision:resnet18"``), a loaded model, or a module (then
        ``preprocess`` says how to feed it; ImageNet normalisation by
        default).  Leave out with ``generator``.
    data : str, Path, ConceptDataset or Source
        A Broden folder, a registered name (``"synthetic"``), a data set
        object; with ``segmenter`` also a folder of plain photos.
    layers : list of str
        Layer names (``netdissect layers MODEL``).
    out : str or Path, optional
        The run directory (a temporary folder when None).  A finished run
        with the same arguments is returned as is; an interrupted one resumes.
    config : DissectConfig, optional
        Options; keyword ``options`` (``quantile=``, ``batch_size=``,
        ``protocol=``...) override it.
    preprocess : Preprocess, optional
        Input preprocessing of a plain module.
    weights : str or Path, optional
        A checkpoint to load into the model (or generator).
    segmenter : str or Segmenter, optional
        Makes the concept labels from the images (``"color"``,
        ``"torchvision:deeplabv3_resnet50"``...; Bau et al. 2020).
    generator : str or LoadedGenerator, optional
        Dissect a generator's layers on its own samples (GAN dissection); needs
        ``segmenter``; the PNAS 2020 protocol is the default.
    samples : int, optional
        Generator samples (default 1000); latents from ``seed``.
    progress : bool
        Show progress bars.
    wait : bool
        When another process is writing into ``out`` (it holds
        ``out/.lock``), wait for it to finish instead of raising
        :class:`~netdissect.errors.RunInUseError`.
    derived : mapping of str to DerivedLayer, optional
        More layers computed from traced ones (e.g. rotated bases), each
        thresholded, tallied and written under its own name like a layer.

    Returns
    -------
    Dissection
        The loaded result.

    Raises
    ------
    ConfigError
        For unknown or inconsistent options.
    ModelError, LayerError, DatasetError
        For a model, layer or data set that cannot be used.
    RunInUseError
        When another process is writing into ``out`` (and ``wait`` is false).
    DiskFullError
        When the disk fills up; what was finished is kept, and the same call
        resumes once space is freed.
    """
    config = _merge_options(config or DissectConfig(), options)
    if generator is not None:
        if model is not None or data is not None:
            raise ConfigError("dissect(generator=...) dissects the generator on its own samples: "
                              "give neither model nor data")
        if "protocol" not in options and (config.protocol == "netdissect"):
            config = replace(config, protocol="pnas2020")
        gen = generator if isinstance(generator, LoadedGenerator) else load_generator(generator, weights=weights)
        module, spec, weights_name = gen.module, gen.spec, gen.weights
        seg = _segmenter(segmenter, None, required="a generator's samples need a segmenter (e.g. segmenter='color')")
        source: Source = GeneratorSource(gen, seg, samples if samples is not None else 1000, seed=config.seed)
        preprocess_json: dict[str, Any] = {"generator": True, "latent_shape": list(gen.latent_shape),
                                           "output_range": list(gen.output_range)}
        if config.quantile_size is None:
            config = replace(config, quantile_size=source.label_size)
    else:
        if model is None or data is None:
            raise ConfigError("dissect() needs a model and data (or generator= and segmenter=)")
        if samples is not None:
            raise ConfigError("samples= is for generator dissection; with data, every image is used")
        loaded = as_loaded(model, weights, preprocess)
        module, spec, weights_name = loaded.module, loaded.spec, loaded.weights
        source = _source(data, segmenter, loaded.preprocess)
        preprocess_json = loaded.preprocess.to_json()
    run_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="netdissect-"))
    check_run_dir(run_dir)
    with hold_run_dir(run_dir, wait=wait, dist=Dist.current()):  # one run at a time writes into run_dir
        return _Dissect(module, spec, weights_name, preprocess_json, source, list(layers), config, run_dir,
                        progress, derived).execute()


def _merge_options(config: DissectConfig, options: dict[str, Any]) -> DissectConfig:
    known = {f.name for f in fields(DissectConfig)}
    for name in options:
        if name not in known:
            hint = close_matches(name, known)
            raise ConfigError(f"unknown option {name!r}" + (f"; {hint}" if hint else "")
                              + f" (options: {', '.join(sorted(known))})")
    return replace(config, **options)


def as_loaded(model, weights=None, preprocess: Preprocess | None = None) -> LoadedModel:
    """A :class:`LoadedModel` in eval mode from a spec, a LoadedModel or a plain module.

    Parameters
    ----------
    model : str, LoadedModel or torch.nn.Module
        A model spec, a loaded model, or a module (fed with ``preprocess``,
        ImageNet normalisation by default).
    weights : str or Path, optional
        A checkpoint to load into it.
    preprocess : Preprocess, optional
        Replaces the model's input preprocessing.

    Returns
    -------
    LoadedModel
        The model.

    Raises
    ------
    ConfigError
        For another kind of ``model``.
    ModelError
        When the spec or weights cannot be loaded.
    """
    if isinstance(model, str):
        loaded = load_model(model, weights=weights)
    elif isinstance(model, LoadedModel):
        loaded = model
    elif isinstance(model, nn.Module):
        loaded = LoadedModel(model, preprocess or Preprocess(),
                             f"python:{type(model).__module__}.{type(model).__qualname__}")
        if weights is not None:
            from .models import load_weights

            load_weights(model, weights)
            loaded.weights = str(weights)
    else:
        raise ConfigError("model must be a spec string, a LoadedModel or a torch.nn.Module, "
                          f"got {type(model).__name__}")
    if preprocess is not None:
        loaded.preprocess = preprocess
    loaded.module.eval()
    return loaded


def _segmenter(segmenter, dataset, *, required: str | None = None):
    if segmenter is None:
        if required:
            raise ConfigError(required)
        return None
    from .segment import load_segmenter

    return load_segmenter(segmenter, dataset=dataset)


def _source(data, segmenter, preprocess: Preprocess) -> Source:
    from .data import open_dataset

    if isinstance(data, Source):
        if segmenter is not None:
            raise ConfigError("give segmenter= or a ready Source as data, not both")
        return data
    if segmenter is None:
        return ConceptSource(open_dataset(data), preprocess)
    images = open_images(data)
    return SegmentedSource(images, _segmenter(segmenter, images), preprocess)


class _Dissect:
    """One dissection run: plan, two engine passes, labels, run directory."""

    def __init__(self, module: nn.Module, spec: str, weights: str | None, preprocess_json: dict[str, Any],
                 source: Source, layer_names: list[str], config: DissectConfig, run_dir: Path, progress: bool,
                 derived: Mapping[str, DerivedLayer] | None = None):
        if len(set(layer_names)) != len(layer_names):
            raise ConfigError(f"layers {layer_names} name a layer twice")
        self.derived = dict(derived or {})
        for name, d in self.derived.items():
            if name in layer_names:
                raise ConfigError(f"derived layer {name!r} has the name of a traced layer")
            if d.layer not in layer_names:
                raise ConfigError(f"derived layer {name!r} is computed from {d.layer!r}, which is not in "
                                  f"layers {layer_names}")
        self.dist = Dist.current()
        self.config = replace(config, device=config.device or default_device()).resolved()
        self.device = resolve_device(self.config.device)
        self.module = module.to(self.device)
        self.source, self.layer_names, self.run_dir, self.progress = source, layer_names, run_dir, progress
        self.n = len(source)
        if self.n == 0:
            raise DatasetError(f"data set {source.spec()!r} has no images")
        self.concepts = source.concepts
        self.spec, self.weights, self.preprocess_json = spec, weights, preprocess_json
        self.started = time.time()

    def info(self) -> RunInfo:
        info = RunInfo(
            key="", netdissect=__version__, model=self.spec, weights=self.weights,
            weights_sha256=state_hash(self.module), preprocess=self.preprocess_json, layers=self.layer_names,
            data=self.source.spec(), data_fingerprint=self.source.fingerprint(), images=self.n,
            options=self.config.result_key(), source=self.source.info(), config=self.config.to_json(),
            label_size=list(self.source.label_size), image_size=list(self.source.image_size),
            processes=self.dist.world, versions=versions(),
            started=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
        )
        if self.derived:  # only then: the key of a plain run does not change
            info.options["derived"] = {name: {"layer": d.layer, **d.identity} for name, d in self.derived.items()}
        rule = winner_rule(self.module)
        if rule is not None:  # stochastic LWTA layers (DISCOVER): how both passes see the same winners
            info.options["lwta"] = rule
        info.key = run_key(info.identity())
        return info

    def execute(self) -> Dissection:
        info = self.info()
        labeler = IoULabeler(self.config.iou_threshold)
        done = Dissection.load_if_complete(self.run_dir, info.key, labeler.threshold)
        ckpt = Checkpoint(self.run_dir, info.key, dist=self.dist, interval=self.config.checkpoint_seconds)
        if self.dist.all_true(done is not None):
            log.info("results for these arguments are already complete in %s", self.run_dir)
            if self.dist.is_main:
                ActivationCache.remove_leftovers(ckpt.directory)  # of a run killed after writing its results
            return done
        # every layer is checked before anything in the run directory changes
        traced = probe_layers(self.module, self.source.probe_input(self.device), self.layer_names)
        shapes = {**traced, **{name: (d.units or traced[d.layer][0], traced[d.layer][1])
                               for name, d in self.derived.items()}}
        ckpt.prepare()
        cache = ActivationCache(ckpt.directory, {n: (u, *g) for n, (u, g) in traced.items()},
                                prefix="acts" if self.dist.world == 1 else f"acts-r{self.dist.rank}")
        shard = self.dist.shard(self.n, self.config.batch_size)
        use_disk = use_disk_cache(self.config.activation_cache, cache.total_bytes(len(shard)),
                                  ckpt.directory, self.config.cache_limit_gb,
                                  labels_from_output=self.source.labels_from_output)
        engine = Engine(self.source, self.module, self.layer_names, device=self.device, checkpoint=ckpt,
                        cache=cache if use_disk else None, batch_size=self.config.batch_size,
                        num_workers=self.config.num_workers, dist=self.dist, progress=self.progress,
                        batch_context=self._batch_context())
        first = self._threshold_pass(shapes)
        self._restore(ckpt, engine, first, use_disk)
        engine.run(Pass("thresholds", first, self._update_thresholds(first), activations=(
            "cache-write" if use_disk else "forward"), description="pass 1/2: thresholds"))
        second = self._iou_pass(first, shapes)
        engine.run(Pass("iou", second, self._update_iou(second), labels=True,
                        activations="cache-read" if use_disk else "forward", description="pass 2/2: IoU"))
        info.activation_cache = "disk" if use_disk else "recompute"
        results = self._results(first, second, shapes)
        failure: BaseException | None = None
        if self.dist.is_main:
            info.seconds = round(time.time() - self.started, 3)
            try:
                with disk_full_as_error("the results into", self.run_dir, _results_bytes(results),
                                        "both passes are saved in the checkpoint: free some space and run the same "
                                        "command again to write the results"):
                    write_run(self.run_dir, info, self.concepts, results, self.source.image_id, labeler)
            except BaseException as exc:  # raised below, once the other ranks know (instead of a barrier)
                failure = exc
        cache.delete()
        told = self.dist.gather(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        if told[0] is not None:
            raise RankFailed(f"rank 0 could not write the results ({told[0]}); the state of every rank is saved: "
                             "fix the cause and run the same command again")
        return Dissection.load(self.run_dir)

    def _batch_context(self):
        """Per-image seeded sampling for sampling LWTA layers (same winners in both passes), else None."""
        if not needs_ids(self.module):
            return None
        module = self.module
        return lambda batch: sample_ids(module, batch.indices)

    # -- passes ---------------------------------------------------------------------
    def _threshold_pass(self, shapes) -> StatGroup:
        c = self.config
        groups = {}
        for name, (units, grid) in shapes.items():
            size = c.quantile_size if c.quantile_on == "upsampled" else None
            per_image = size[0] * size[1] if size else grid[0] * grid[1]
            groups[name] = ThresholdStats(units, c.quantile, self.n * per_image, quantile_size=size,
                                          top_images=c.top_images, max_values=c.max_quantile_values, seed=c.seed,
                                          device=self.device)
        return StatGroup(groups)

    def _restore(self, ckpt: Checkpoint, engine: Engine, first: StatGroup, use_disk: bool) -> None:
        """Load the checkpoint, or start afresh when it does not match (other cache choice, short cache)."""
        if not self.dist.all_true(ckpt.load()):  # ranks resume together or start afresh together
            ckpt.reset()
            ckpt.extra["use_disk"] = use_disk
            return
        progress = ckpt.progress("thresholds")
        stale = ckpt.extra.get("use_disk") != use_disk and ckpt.progress("iou") != DONE
        if use_disk and not stale and progress is not None:
            needed = engine.images_done(engine.batch_count if progress < 0 else progress)
            if engine.cache.images_stored() < needed and ckpt.progress("iou") != DONE:
                log.warning("activation cache %s is shorter than its checkpoint; starting again", ckpt.directory)
                stale = True
        if not self.dist.all_true(not stale):
            ckpt.reset()
        ckpt.extra["use_disk"] = use_disk

    def _layer_acts(self, acts: dict[str, torch.Tensor]):
        """Yield (name, activations) of every traced layer, then of every derived layer (one at a time)."""
        yield from acts.items()
        for name, d in self.derived.items():
            yield name, d.transform(acts[d.layer])

    def _update_thresholds(self, group: StatGroup):
        def update(batch, acts, labels):
            for name, a in self._layer_acts(acts):
                group[name].update(a, batch.indices)

        return update

    def _iou_pass(self, first: StatGroup, shapes) -> StatGroup:
        category_of = torch.from_numpy(self.concepts.category_index())
        members: dict[str, Any] = {"counts": LabelCounts(self.concepts.max_number + 1, device=self.device)}
        for name, (_, grid) in shapes.items():
            members[name] = IoUStats(first[name].thresholds(), category_of, len(self.concepts.categories),
                                     self.source.label_size, first[name].top.indices, grid,
                                     denominator=self.config.denominator, device=self.device)
        return StatGroup(members)

    def _update_iou(self, group: StatGroup):
        counts = group["counts"]

        def update(batch, acts, labels):
            pixel, image = labels
            counts.update(pixel, image)
            for name, a in self._layer_acts(acts):
                group[name].update(a, pixel, image, batch.indices)

        return update

    # -- results ----------------------------------------------------------------------
    def _results(self, first: StatGroup, second: StatGroup, shapes) -> dict[str, LayerResult]:
        truth = second["counts"].truth
        out = {}
        for name, (units, grid) in shapes.items():
            t, s = first[name], second[name]
            out[name] = LayerResult(
                name=name, units=units, grid=grid, thresholds=t.thresholds(),
                threshold_method=t.quantile.describe(), iou=s.tally.iou(truth),
                intersect=s.tally.intersect.cpu().numpy(), denominator_pixels=s.tally.denominator_pixels(),
                mask_pixels=s.tally.mask_pixels.cpu().numpy(), truth=truth.cpu().numpy(),
                top_indices=t.top.indices.cpu().numpy(), top_scores=t.top.scores.cpu().numpy(),
                top_maps=s.maps.maps.cpu().numpy(),
            )
        return out


def _results_bytes(results: dict[str, LayerResult]) -> int:
    """About the bytes the run directory's files of ``results`` take (arrays, and the text of each tally.csv)."""
    total = 0
    for r in results.values():
        total += tensor_bytes([r.iou, r.thresholds, r.intersect, r.denominator_pixels, r.mask_pixels, r.truth,
                               r.top_indices, r.top_scores, r.top_maps])
        total += r.iou.shape[0] * (64 + 5 * 24 * r.denominator_pixels.shape[1])  # tally.csv: 5 numbers a category
    return total + (64 << 10)
