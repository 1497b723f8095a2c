"""Sources: where a pass's inputs and concept labels come from.

A source yields batches of inputs with stable data set indices, feeds them to
the model, and gives the concept labels of each batch:

- :class:`ConceptSource`: stored concept data (a Broden folder, the synthetic
  set), labels read from disk (Bau et al. 2017);
- :class:`SegmentedSource`: any images plus a segmenter that makes the labels
  on the fly (Bau et al. 2020, PNAS: a segmentation model's masks stand in for
  human labels);
- :class:`GeneratorSource`: latents z drawn from (seed, index), the generator
  is the model (its layers are the ones dissected) and its output images are
  segmented (GAN dissection, Bau et al. 2019/2020).

Every source is also a concept data set (``__getitem__``, ``image_id``,
``concepts``...), so the report can draw its images and labels.
:func:`source_info` records how to rebuild a source; :func:`open_source`
rebuilds it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ..data.loader import batches as load_batches
from ..data.protocol import ConceptDataset, ConceptTable, Sample
from ..errors import ConfigError, DatasetError
from ..models import Preprocess


@dataclass
class Batch:
    """One batch of a pass.

    Attributes
    ----------
    indices : torch.Tensor
        (B,) int64 data set indices.
    images : torch.Tensor or None
        (B, 3, H, W) uint8 RGB (None when a pass needs no images).
    pixel_labels, image_labels : torch.Tensor or None
        (B, L, sh, sw) and (B, M) int64 stored labels (0 = none), or None.
    latents : torch.Tensor or None
        (B, ...) generator inputs.
    """

    indices: torch.Tensor
    images: torch.Tensor | None = None
    pixel_labels: torch.Tensor | None = None
    image_labels: torch.Tensor | None = None
    latents: torch.Tensor | None = None


class Source:
    """Base class: a concept data set that also feeds a model in batches.

    Subclasses set ``concepts``, ``image_size``, ``label_size`` and implement
    :meth:`batches`, :meth:`model_input`, :meth:`labels` and the data set
    methods.

    Attributes
    ----------
    kind : str
        "concepts", "segmented" or "generator".
    labels_from_output : bool
        True when labels are made from the model's output (a generator): a
        pass that needs labels must run the model.
    """

    kind = "source"
    labels_from_output = False
    concepts: ConceptTable
    image_size: tuple[int, int]
    label_size: tuple[int, int]

    def __len__(self) -> int:
        raise NotImplementedError

    def batches(self, indices: range, *, batch_size: int, num_workers: int = 0, images: bool = True,
                pin_memory: bool = False) -> Iterator[Batch]:
        """Batches over ``indices`` in order; ``images=False`` when only stored labels are needed."""
        raise NotImplementedError

    def model_input(self, batch: Batch, device: torch.device) -> torch.Tensor:
        """The model's input for ``batch``, on ``device``."""
        raise NotImplementedError

    def probe_input(self, device: torch.device) -> torch.Tensor:
        """A one-sample input for a dry run (black images; the first latent), on ``device``."""
        batch = Batch(torch.zeros(1, dtype=torch.int64), images=torch.zeros(1, 3, *self.image_size, dtype=torch.uint8))
        return self.model_input(batch, device)

    def labels(self, batch: Batch, output: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel_labels (B, L, sh, sw), image_labels (B, M)) int64 on ``device``; ``output`` is the model's."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """A JSON description from which :func:`open_source` rebuilds this source."""
        raise NotImplementedError


def _stored_batches(dataset: ConceptDataset, indices: range, batch_size: int, num_workers: int, images: bool,
                    pin_memory: bool) -> Iterator[Batch]:
    loader = load_batches(dataset, indices, batch_size=batch_size, num_workers=num_workers,
                          labels_only=not images, pin_memory=pin_memory)
    for b in loader:
        b.raise_error()
        yield Batch(b.indices, b.images, b.pixel_labels, b.image_labels)


class ConceptSource(Source):
    """Stored concept data: images and labels from a :class:`ConceptDataset`.

    Parameters
    ----------
    dataset : ConceptDataset
        A Broden folder, the synthetic set, arrays...
    preprocess : Preprocess
        How the model wants its input.
    """

    kind = "concepts"

    def __init__(self, dataset: ConceptDataset, preprocess: Preprocess):
        self.dataset = dataset
        self.preprocess = preprocess
        self.concepts = dataset.concepts
        self.image_size = tuple(dataset.image_size)
        self.label_size = tuple(dataset.label_size)
        self.num_labels = self.concepts.max_number + 1
        self._known = torch.zeros(self.num_labels, dtype=torch.bool)  # label 0 ("none") and the table's
        self._known[[0, *self.concepts.numbers()]] = True

    def check_labels(self, batch: Batch) -> None:
        """Raise when a batch holds a label number outside the concept table.

        Raises
        ------
        DatasetError
            Naming the image and the label number.
        """
        for tensor, kind in ((batch.pixel_labels, "pixel"), (batch.image_labels, "image-level")):
            if tensor is None or tensor.numel() == 0:
                continue
            bad = (tensor < 0) | (tensor >= self.num_labels)
            bad |= ~self._known[tensor.clamp(0, self.num_labels - 1)]
            if bad.any():
                row = int(bad.flatten(1).any(1).nonzero()[0])
                code = int(tensor[row][bad[row]][0])
                raise DatasetError(
                    f"image {self.dataset.image_id(int(batch.indices[row]))!r} has {kind} label {code}, "
                    f"which is not in the concept table (label numbers 1..{self.num_labels - 1})"
                )

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        return self.dataset[index]

    def load_labels(self, index: int) -> Sample:
        """Sample ``index`` without its image (labels only)."""
        return self.dataset.load_labels(index)

    def image_id(self, index: int) -> str:
        """A short, stable name of image ``index``."""
        return self.dataset.image_id(index)

    def fingerprint(self) -> str:
        """A content key of the images and labels this source yields."""
        return self.dataset.fingerprint()

    def spec(self) -> str:
        """The data spec recorded in the run (reopened by :func:`open_source` with :meth:`info`)."""
        return self.dataset.spec()

    def batches(self, indices, *, batch_size, num_workers=0, images=True, pin_memory=False):
        """Batches over ``indices`` in order (see :meth:`Source.batches`)."""
        return _stored_batches(self.dataset, indices, batch_size, num_workers, images, pin_memory)

    def model_input(self, batch, device):
        """The model's input for ``batch`` on ``device`` (see :meth:`Source.model_input`)."""
        return self.preprocess(batch.images.to(device, non_blocking=True))

    def labels(self, batch, output, device):
        """The batch's (pixel_labels, image_labels) on ``device`` (see :meth:`Source.labels`)."""
        self.check_labels(batch)
        return batch.pixel_labels.to(device, non_blocking=True), batch.image_labels.to(device, non_blocking=True)

    def info(self) -> dict[str, Any]:
        """How to rebuild this source (see :func:`open_source`)."""
        return {"kind": self.kind, "data": self.spec()}


class SegmentedSource(Source):
    """Images of any data set, labelled on the fly by a segmenter (PNAS 2020 protocol).

    Parameters
    ----------
    images : ConceptDataset
        Where the images come from (its own labels, if any, are ignored), e.g.
        :class:`netdissect.data.images.ImageFiles`.
    segmenter : netdissect.segment.Segmenter
        Makes the concept labels; its concept table is the run's.
    preprocess : Preprocess
        How the model wants its input.
    """

    kind = "segmented"

    def __init__(self, images: ConceptDataset, segmenter, preprocess: Preprocess):
        self.dataset = images
        self.segmenter = segmenter
        self.preprocess = preprocess
        self.concepts = segmenter.concepts
        self.image_size = tuple(images.image_size)
        self.label_size = tuple(segmenter.label_size(self.image_size))

    def __len__(self) -> int:
        return len(self.dataset)

    def _segment_one(self, image: np.ndarray, index: int) -> Sample:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
        device = _device_of(self.segmenter)
        seg = self.segmenter.segment(x.to(device), torch.tensor([index]).to(device))
        return Sample(image, seg.pixel_labels[0].cpu().numpy().astype(np.int32), seg.image_labels[0].cpu().numpy())

    def __getitem__(self, index: int) -> Sample:
        return self._segment_one(self.dataset[index].image, index)

    def load_labels(self, index: int) -> Sample:
        """Sample ``index`` without its image (labels only)."""
        s = self[index]
        return Sample(None, s.pixel_labels, s.image_labels)

    def image_id(self, index: int) -> str:
        """A short, stable name of image ``index``."""
        return self.dataset.image_id(index)

    def fingerprint(self) -> str:
        """A content key of the images and labels this source yields."""
        key = f"segmented|{self.dataset.fingerprint()}|{self.segmenter.fingerprint()}"
        return hashlib.sha256(key.encode()).hexdigest()

    def spec(self) -> str:
        """The data spec recorded in the run (reopened by :func:`open_source` with :meth:`info`)."""
        return self.dataset.spec()

    def batches(self, indices, *, batch_size, num_workers=0, images=True, pin_memory=False):
        """Batches over ``indices`` in order (see :meth:`Source.batches`)."""
        return _stored_batches(self.dataset, indices, batch_size, num_workers, True, pin_memory)

    def model_input(self, batch, device):
        """The model's input for ``batch`` on ``device`` (see :meth:`Source.model_input`)."""
        return self.preprocess(batch.images.to(device, non_blocking=True))

    def labels(self, batch, output, device):
        """The batch's (pixel_labels, image_labels) on ``device`` (see :meth:`Source.labels`)."""
        seg = self.segmenter.segment(batch.images.to(device, non_blocking=True), batch.indices.to(device))
        return seg.pixel_labels.to(device), seg.image_labels.to(device)

    def info(self) -> dict[str, Any]:
        """How to rebuild this source (see :func:`open_source`)."""
        return {"kind": self.kind, "data": self.spec(), "segmenter": self.segmenter.spec()}


def latent(seed: int, index: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The latent of sample ``index``: N(0, 1) of ``shape`` from a generator seeded by (seed, index).

    The same (seed, index) gives the same z in every process, on every rank:
    numpy's PCG64 seeded with the entropy ``[seed, index]`` (no two pairs share
    a stream, unlike a 32-bit seed).
    """
    rng = np.random.default_rng([int(seed), int(index)])
    return torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))


def to_uint8_images(output: torch.Tensor, output_range: tuple[float, float]) -> torch.Tensor:
    """Generator output (N, C, H, W) in ``output_range`` -> (N, 3, H, W) uint8 RGB (grey repeated)."""
    lo, hi = output_range
    x = ((output.detach().float() - lo) / (hi - lo)).clamp(0, 1).mul(255).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        raise ConfigError(f"a generator must output 1 or 3 channels to be segmented, got shape {tuple(output.shape)}")
    return x.contiguous()


class GeneratorSource(Source):
    """Samples of a generator, segmented into concepts (GAN dissection).

    Sample ``i`` is ``G(z_i)`` with ``z_i = latent(seed, i, latent_shape)``.
    The generator is the model whose layers are dissected; its input is z.

    Parameters
    ----------
    generator : netdissect.models.LoadedGenerator
        The generator module, its latent shape and output range.
    segmenter : netdissect.segment.Segmenter
        Labels the generated images.
    samples : int
        How many samples (the data set's length).
    seed : int
        Seed of the latents.
    """

    kind = "generator"
    labels_from_output = True

    def __init__(self, generator, segmenter, samples: int, seed: int = 0):
        if int(samples) < 1:
            raise ConfigError(f"samples must be a positive integer, got {samples}")
        self.generator = generator
        self.segmenter = segmenter
        self.n = int(samples)
        self.seed = int(seed)
        self.concepts = segmenter.concepts
        with torch.no_grad():
            probe = generator.module(self._latents(range(1)).to(_device_of(generator.module)))
        self.image_size = tuple(int(s) for s in probe.shape[-2:])
        self.label_size = tuple(segmenter.label_size(self.image_size))
        self._weights_hash: str | None = None

    def __len__(self) -> int:
        return self.n

    def _latents(self, indices) -> torch.Tensor:
        return torch.stack([latent(self.seed, i, self.generator.latent_shape) for i in indices])

    def image(self, index: int) -> np.ndarray:
        """Sample ``index`` as an (H, W, 3) uint8 RGB array (runs the generator)."""
        if not 0 <= int(index) < self.n:
            raise IndexError(f"sample {index} out of range for {self.n} samples")
        module = self.generator.module
        with torch.no_grad():
            out = module(self._latents([int(index)]).to(_device_of(module)))
        return to_uint8_images(out, self.generator.output_range)[0].permute(1, 2, 0).cpu().numpy()

    def __getitem__(self, index: int) -> Sample:
        image = self.image(index)
        x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0)
        device = _device_of(self.segmenter)
        seg = self.segmenter.segment(x.to(device), torch.tensor([int(index)]).to(device))
        return Sample(image, seg.pixel_labels[0].cpu().numpy().astype(np.int32), seg.image_labels[0].cpu().numpy())

    def load_labels(self, index: int) -> Sample:
        """Sample ``index`` without its image (labels only)."""
        s = self[index]
        return Sample(None, s.pixel_labels, s.image_labels)

    def image_id(self, index: int) -> str:
        """A short, stable name of image ``index``."""
        return f"seed{self.seed}/{int(index):06d}"

    def fingerprint(self) -> str:
        """A content key of the images and labels this source yields."""
        from ..models import state_hash

        if self._weights_hash is None:
            self._weights_hash = state_hash(self.generator.module)
        key = (f"generator|{self._weights_hash}|{self.generator.latent_shape}|{self.generator.output_range}|"
               f"n={self.n}|seed={self.seed}|{self.segmenter.fingerprint()}")
        return hashlib.sha256(key.encode()).hexdigest()

    def spec(self) -> str:
        """The data spec recorded in the run (reopened by :func:`open_source` with :meth:`info`)."""
        return f"generator:{self.generator.spec}?samples={self.n}&seed={self.seed}"

    def batches(self, indices, *, batch_size, num_workers=0, images=True, pin_memory=False):
        """Batches over ``indices`` in order (see :meth:`Source.batches`)."""
        indices = list(indices)
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            yield Batch(torch.tensor(chunk, dtype=torch.int64), latents=self._latents(chunk))

    def model_input(self, batch, device):
        """The model's input for ``batch`` on ``device`` (see :meth:`Source.model_input`)."""
        return batch.latents.to(device)

    def probe_input(self, device):
        """The first latent, for a dry run."""
        return self._latents(range(1)).to(device)

    def labels(self, batch, output, device):
        """The batch's (pixel_labels, image_labels) on ``device`` (see :meth:`Source.labels`)."""
        if output is None:
            raise ConfigError("a generator source labels the generator's output: the pass must run the whole model")
        images = to_uint8_images(output, self.generator.output_range)
        batch.images = images
        seg = self.segmenter.segment(images.to(device), batch.indices.to(device))
        return seg.pixel_labels.to(device), seg.image_labels.to(device)

    def info(self) -> dict[str, Any]:
        """How to rebuild this source (see :func:`open_source`)."""
        return {"kind": self.kind, "generator": self.generator.spec, "weights": self.generator.weights,
                "segmenter": self.segmenter.spec(), "samples": self.n, "seed": self.seed}


def _device_of(obj) -> torch.device:
    if isinstance(obj, nn.Module):
        p = next(obj.parameters(), None)
        return p.device if p is not None else torch.device("cpu")
    return torch.device(getattr(obj, "device", "cpu"))


def open_source(info: dict[str, Any], *, preprocess: Preprocess | None = None) -> Source:
    """Rebuild a source from :meth:`Source.info` (e.g. to draw a finished run's images).

    Raises
    ------
    DatasetError
        When the data, segmenter or generator cannot be opened again.
    """
    from ..data import open_dataset

    kind = info.get("kind", "concepts")
    preprocess = preprocess or Preprocess()
    if kind == "concepts":
        return ConceptSource(open_dataset(info["data"]), preprocess)
    from ..segment import load_segmenter

    if kind == "segmented":
        images = open_images(info["data"])
        return SegmentedSource(images, load_segmenter(info["segmenter"]), preprocess)
    if kind == "generator":
        from ..models import load_generator

        generator = load_generator(info["generator"], weights=info.get("weights"))
        return GeneratorSource(generator, load_segmenter(info["segmenter"]), info["samples"], info["seed"])
    raise DatasetError(f"unknown source kind {kind!r} in the run's config.json")


def open_images(spec, *, size: int | None = None) -> ConceptDataset:
    """Images for a segmenter: a data set object, a Broden folder or spec, or a folder of photos.

    A folder without ``index.csv`` is read as plain photos
    (:class:`netdissect.data.images.ImageFiles`, resized to ``size``,
    default 224).
    """
    from pathlib import Path

    from ..data import open_dataset
    from ..data.images import ImageFiles

    if not isinstance(spec, (str, Path)):
        return spec
    text = str(spec)
    base, _, query = text.partition("?")
    path = Path(base).expanduser()
    if path.is_dir() and not (path / "index.csv").is_file():
        options = dict(part.partition("=")[::2] for part in query.replace("&", ",").split(",") if part)
        unknown = sorted(set(options) - {"size"})
        if unknown:
            raise DatasetError(f"image folder spec {text!r}: unknown option(s) {', '.join(unknown)}; allowed: size")
        try:
            side = int(options.get("size", size or 224))
        except ValueError:
            raise DatasetError(f"image folder spec {text!r}: size must be an integer") from None
        return ImageFiles(path, size=side)
    return open_dataset(spec)
