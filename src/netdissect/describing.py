"""Describing units in words with an image-text model: CLIP-Dissect as a composition of the engine's parts.

CLIP-Dissect (Oikarinen & Weng, ICLR 2023), as DISCOVER (Panousis et al.,
NeurIPS 2023) uses it:

1. one engine pass over the probe images (any images: no concept labels)
   keeps each image's per-unit summary activation of every layer
   (:class:`~netdissect.stats.summary.UnitSummary`: spatial mean or max, a
   transformer's class token, a linear layer's output) and the image-text
   model's embedding of the same uint8 images;
2. the words are embedded once; P = normalised image embeddings @ normalised
   word embeddings.T (N x M);
3. a similarity function (:mod:`netdissect.labeling.similarity`, SoftWPMI by
   default) scores every unit against every word, in chunks of words; each
   unit keeps its best ``top`` words;
4. rank 0 writes the label table ``labels/<method>.csv`` and what made it
   (``labels/<method>.json``) into the run directory, beside a dissection's
   IoU labels when the folder holds one.

The pass checkpoints and resumes like a dissection (``RUN_DIR/.describe/``,
keyed by the content of the model, layers, probe, pooling and image-text
model); describing again with another similarity function or vocabulary
reuses the finished pass.  A finished table with the same content key is
returned as it is.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .data.protocol import ConceptTable, Sample
from .engine.checkpoint import Checkpoint
from .engine.distributed import Dist, RankFailed, default_device
from .engine.passes import Engine, Pass
from .engine.plan import check_run_dir, hold_run_dir, resolve_device, run_key, versions
from .engine.sources import ConceptSource, Source, open_images
from .errors import ConfigError, DatasetError
from .hooks import Trace
from .labeling.similarity import get_similarity
from .labeling.words import Vocabulary, concept_activations, load_vocabulary, word_table
from .lwta.layer import needs_ids, sample_ids, winner_rule
from .models import Preprocess, state_hash
from .paths import encode_name
from .pipeline import as_loaded
from .results.description import KIND, Description
from .results.rundir import LABELS_DIR, atomic_json, write_labels
from .stats.group import StatGroup
from .stats.summary import POOLS, TOKENS, UnitSummary, summarize
from .storage import disk_full_as_error

log = logging.getLogger(__name__)

#: CLIP-Dissect's image-text model (users' machines download its weights)
DEFAULT_IMAGE_TEXT = "open_clip:ViT-B-16:openai"
#: where the engine pass keeps its resumable state, inside the run directory
STATE_DIR = ".describe"
#: words embedded per call of the text encoder
TEXT_BATCH = 1000


class ImagesOnly:
    """A data set's images without its labels: a probe set for describing units.

    Parameters
    ----------
    dataset : ConceptDataset
        Any data set (a Broden folder, photos, the synthetic set...).
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self.image_size = tuple(dataset.image_size)
        self.label_size = tuple(dataset.label_size)
        self.concepts = ConceptTable([], ())

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        import numpy as np

        return Sample(self.dataset[index].image, np.zeros((0, *self.label_size), np.int32), np.zeros(0, np.int64))

    def load_labels(self, index: int) -> Sample:
        """An empty label sample."""
        import numpy as np

        return Sample(None, np.zeros((0, *self.label_size), np.int32), np.zeros(0, np.int64))

    def image_id(self, index: int) -> str:
        """The data set's id of image ``index``."""
        return self.dataset.image_id(index)

    def fingerprint(self) -> str:
        """The data set's content key."""
        return self.dataset.fingerprint()

    def spec(self) -> str:
        """The data set's spec."""
        return self.dataset.spec()


def describe(
    model: Any,
    probe: Any,
    *,
    layers: list[str],
    concepts: Any = None,
    similarity: str = "soft_wpmi",
    image_text: Any = DEFAULT_IMAGE_TEXT,
    pool: str = "mean",
    tokens: str = "cls",
    out: str | Path | None = None,
    method: str | None = None,
    top: int = 5,
    similarity_params: dict[str, Any] | None = None,
    preprocess: Preprocess | None = None,
    weights: str | Path | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    device: str | None = None,
    progress: bool = True,
    wait: bool = False,
    checkpoint_seconds: float = 60.0,
    budget: int | None = None,
) -> Description:
    """Describe every unit of ``layers`` with words (CLIP-Dissect, Oikarinen & Weng 2023).

    Parameters
    ----------
    model : str, torch.nn.Module or LoadedModel
        The network whose units are described (as :func:`netdissect.dissect`).
    probe : str, Path, ConceptDataset or Source
        The probe images: a folder of photos, a Broden folder or data spec
        (``"synthetic:n=500"``), a data set object; labels are not used.
    layers : list of str
        Layers: feature maps (B, U, H, W), transformer tokens (B, T, D) or
        linear outputs (B, U).
    concepts : str, sequence of str or Vocabulary, optional
        The words (see :func:`netdissect.labeling.words.load_vocabulary`):
        ``"wordfreq"`` (20,000 common English words), ``"imagenet"``,
        ``"classes:FILE"``, ``"broden:DIR"`` or a data spec, a word file, a
        list; default: a closed-vocabulary model's own words, else
        ``"wordfreq"``.
    similarity : str
        ``soft_wpmi`` (default), ``wpmi``, ``cos``, ``cos3``,
        ``rank_reorder`` (:func:`netdissect.labeling.similarity.list_similarities`).
    image_text : str or ImageTextModel
        A spec for :func:`netdissect.imagetext.load_image_text`
        (``open_clip:ViT-B-16:openai`` by default, CLIP-Dissect's model;
        ``classifier:efficientnet_lite2``, ``synthetic_clip``...) or a model.
    pool : str
        Feature maps: "mean" (spatial mean, default) or "max".
    tokens : str
        Token outputs: "cls" (default) or "mean".
    out : str or Path, optional
        The run directory (a temporary folder when None); may hold a
        dissection, whose IoU labels the words then sit beside.
    method : str, optional
        The label table's name (default ``words-<similarity>``); give
        another to keep tables of several vocabularies side by side.
    top : int
        Words kept per unit (best first).
    similarity_params : dict, optional
        Overrides of the similarity function's defaults (``top_k``, ``a``...).
    preprocess : Preprocess, optional
        Input preprocessing of a plain module.
    weights : str or Path, optional
        A checkpoint to load into the model.
    batch_size, num_workers : int
        Images per batch; data loading processes (default: half the CPUs, 1..8).
    device : str, optional
        Torch device (default: cuda when available; under torchrun cuda:LOCAL_RANK).
    progress : bool
        Show progress bars.
    wait : bool
        Wait for another process writing into ``out`` instead of raising
        :class:`~netdissect.errors.RunInUseError`.
    checkpoint_seconds : float
        Seconds between saves of the pass's state.
    budget : int, optional
        Working memory of the similarity step in float32 values (default N
        x (U + M) per layer, at least 2**24 = 64 MiB).

    Returns
    -------
    Description
        The label table and what made it.

    Raises
    ------
    ConfigError
        For unknown options, a similarity, vocabulary or image-text spec that
        cannot be used, or words a closed-vocabulary model does not know.
    ModelError, LayerError, DatasetError
        For a model, layer or probe that cannot be used.
    RunInUseError
        When another process is writing into ``out`` (and ``wait`` is false).
    """
    from .imagetext import load_image_text

    if pool not in POOLS:
        raise ConfigError(f"pool {pool!r} is not one of {POOLS}")
    if tokens not in TOKENS:
        raise ConfigError(f"tokens {tokens!r} is not one of {TOKENS}")
    if int(top) < 1:
        raise ConfigError(f"top must be at least 1 word per unit, got {top}")
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    layers = list(layers)
    if not layers or len(set(layers)) != len(layers):
        raise ConfigError(f"layers {layers} must name at least one layer, each once")
    sim = get_similarity(similarity, **(similarity_params or {}))
    dist = Dist.current()
    dev = resolve_device(device or default_device())
    loaded = as_loaded(model, weights, preprocess)
    module = loaded.module.to(dev).eval()
    it = load_image_text(image_text).to(dev)
    vocab = load_vocabulary(concepts, it)
    source = probe if isinstance(probe, Source) else ConceptSource(ImagesOnly(open_images(probe)), loaded.preprocess)
    n = len(source)
    if n == 0:
        raise DatasetError(f"probe {source.spec()!r} has no images")
    if num_workers is None:
        num_workers = min(8, max(1, (os.cpu_count() or 2) // 2))
    run = _Describe(module, loaded, it, vocab, sim, source, layers, pool, tokens, dev, dist, int(batch_size),
                    int(num_workers), progress, float(checkpoint_seconds), budget, int(top),
                    method or f"words-{sim.name}")
    run_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="netdissect-describe-"))
    check_run_dir(run_dir)
    with hold_run_dir(run_dir, wait=wait, dist=dist):
        return run.execute(run_dir)


class _Describe:
    """One describe run: plan, one engine pass, similarities, the label table."""

    def __init__(self, module, loaded, image_text, vocab: Vocabulary, sim, source: Source, layers: list[str],
                 pool: str, tokens: str, device: torch.device, dist: Dist, batch_size: int, num_workers: int,
                 progress: bool, checkpoint_seconds: float, budget: int | None, top: int, method: str):
        self.module, self.loaded, self.image_text, self.vocab, self.sim = module, loaded, image_text, vocab, sim
        self.source, self.layers, self.pool, self.tokens, self.device = source, layers, pool, tokens, device
        self.dist, self.batch_size, self.num_workers, self.progress = dist, batch_size, num_workers, progress
        self.checkpoint_seconds, self.budget, self.top, self.method = checkpoint_seconds, budget, top, method
        self.started = time.time()

    # -- plan --------------------------------------------------------------------------
    def units(self) -> dict[str, int]:
        """Each layer's units, from one full forward pass of a black image (raw outputs)."""
        with Trace(self.module, self.layers, grid=False) as trace:
            acts = trace.run(self.source.probe_input(self.device), stop_early=False)
        return {name: int(summarize(acts[name], self.pool, self.tokens).shape[1]) for name in self.layers}

    def embedding_size(self) -> int:
        """D of the image-text model's image embeddings."""
        black = torch.zeros(1, 3, *self.source.image_size, dtype=torch.uint8, device=self.device)
        with torch.no_grad():
            e = self.image_text.encode_images(black)
        if e.dim() != 2 or e.shape[0] != 1:
            raise ConfigError(f"image-text model {self._it_spec()!r} returned image embeddings of shape "
                              f"{tuple(e.shape)} for one image; expected (1, D)")
        return int(e.shape[1])

    def _it_spec(self) -> str:
        spec = getattr(self.image_text, "spec", None)
        return spec() if callable(spec) else str(spec or type(self.image_text).__name__)

    def _it_fingerprint(self) -> str:
        fp = getattr(self.image_text, "fingerprint", None)
        return fp() if callable(fp) else self._it_spec()

    def identity(self, units: dict[str, int]) -> dict[str, Any]:
        """What the engine pass's state depends on (its content key)."""
        return {
            "describe": 1, "netdissect": __version__, "model": self.loaded.spec, "weights": self.loaded.weights,
            "weights_sha256": state_hash(self.module), "preprocess": self.loaded.preprocess.to_json(),
            "layers": self.layers, "units": units, "pool": self.pool, "tokens": self.tokens,
            "data": self.source.spec(), "data_fingerprint": self.source.fingerprint(), "images": len(self.source),
            "image_text": self._it_spec(), "image_text_fingerprint": self._it_fingerprint(),
            "batch_size": self.batch_size, "device": self.device.type,
            **({"lwta": rule} if (rule := winner_rule(self.module)) is not None else {}),
        }

    # -- run -----------------------------------------------------------------------------
    def execute(self, run_dir: Path) -> Description:
        units = self.units()
        identity = self.identity(units)
        pass_key = run_key(identity)
        label_identity = {**identity, "similarity": self.sim.name, "params": self.sim.params,
                          "vocabulary": self.vocab.fingerprint(), "top": self.top, "method": self.method}
        key = run_key(label_identity)
        done = Description.load_if_complete(run_dir, self.method, key)
        if self.dist.all_true(done is not None):
            log.info("word labels %r for these arguments are already complete in %s", self.method, run_dir)
            return done
        dim = self.embedding_size()
        text = self.text_embeddings()  # before the pass: a word the model cannot embed fails at once
        if text.dim() != 2 or text.shape != (len(self.vocab), dim):
            raise ConfigError(f"image-text model {self._it_spec()!r} embeds {len(self.vocab)} words as "
                              f"{tuple(text.shape)} but images as (N, {dim})")
        ckpt = Checkpoint(run_dir / STATE_DIR, pass_key, dist=self.dist, interval=self.checkpoint_seconds)
        ckpt.prepare()
        if not self.dist.all_true(ckpt.load()):
            ckpt.reset()
        n = len(self.source)
        summaries = StatGroup({name: UnitSummary(n, u, pool=self.pool, tokens=self.tokens, device=self.device)
                               for name, u in units.items()})
        images = UnitSummary(n, dim, device=self.device)
        group = StatGroup({"layers": summaries, "images": images})
        engine = Engine(self.source, self.module, self.layers, device=self.device, checkpoint=ckpt,
                        batch_size=self.batch_size, num_workers=self.num_workers, dist=self.dist,
                        progress=self.progress, grid=False,
                        batch_context=(lambda batch: sample_ids(self.module, batch.indices))
                        if needs_ids(self.module) else None)
        engine.run(Pass("summaries", group, self._update(summaries, images),
                        description="describe: unit summaries and image embeddings"))
        failure: BaseException | None = None
        if self.dist.is_main:
            try:
                self._write(run_dir, summaries, images, text, label_identity, key)
            except BaseException as exc:  # raised below, once the other ranks know
                failure = exc
        told = self.dist.gather(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        if told[0] is not None:
            raise RankFailed(f"rank 0 could not write the word labels ({told[0]}); run the same command again")
        return Description.load(run_dir, self.method)

    def _update(self, summaries: StatGroup, images: UnitSummary):
        encode = self.image_text.encode_images

        def update(batch, acts, labels):
            for name in self.layers:
                summaries[name].update(acts[name], batch.indices)
            with torch.no_grad():
                images.update(encode(batch.images.to(self.device, non_blocking=True)).float(), batch.indices)

        return update

    def text_embeddings(self) -> torch.Tensor:
        """(M, D) embeddings of the vocabulary's words, in batches of :data:`TEXT_BATCH`."""
        words = self.vocab.words
        parts = []
        with torch.no_grad():
            for start in range(0, len(words), TEXT_BATCH):
                parts.append(self.image_text.encode_text(words[start:start + TEXT_BATCH]).float().to(self.device))
        return torch.cat(parts)

    def _write(self, run_dir: Path, summaries: StatGroup, images: UnitSummary, text: torch.Tensor,
               identity: dict[str, Any], key: str) -> None:
        import pandas as pd

        started = time.time()
        p = concept_activations(images.result(), text)  # (N, M)
        tables = []
        for name in self.layers:
            q = summaries[name].result()
            scores, indices = self.sim.top(p, q, self.top, budget=self.budget)
            tables.append(word_table(name, scores.cpu().numpy(), indices.cpu().numpy(), self.vocab))
        table = pd.concat(tables, ignore_index=True)
        info = {
            "kind": KIND, "key": key, "method": self.method, "similarity": self.sim.name,
            "params": self.sim.params, "vocabulary": self.vocab.spec, "vocabulary_fingerprint": identity["vocabulary"],
            "words": len(self.vocab), "top": self.top, "image_text": identity["image_text"],
            "image_text_fingerprint": identity["image_text_fingerprint"], "model": identity["model"],
            "weights": identity["weights"], "weights_sha256": identity["weights_sha256"],
            "preprocess": identity["preprocess"], "layers": self.layers, "units": identity["units"],
            "pool": self.pool, "tokens": self.tokens, "data": identity["data"],
            "data_fingerprint": identity["data_fingerprint"], "images": identity["images"],
            "source": self.source.info(), "batch_size": self.batch_size, "device": str(self.device),
            "netdissect": __version__, "versions": versions(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
            "seconds": round(time.time() - self.started, 3), "similarity_seconds": round(time.time() - started, 3),
        }
        labels = run_dir / LABELS_DIR
        size = 200 * len(table) * max(1, self.top) + (64 << 10)
        with disk_full_as_error("the word labels into", labels, size,
                                "the engine pass is saved: free some space and run the same command again"):
            labels.mkdir(parents=True, exist_ok=True)
            meta = labels / f"{encode_name(self.method)}.json"
            meta.unlink(missing_ok=True)  # the table is complete only once its JSON is written
            write_labels(run_dir, self.method, table)
            atomic_json(meta, _json_safe(info))


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj
