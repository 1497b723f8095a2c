"""Hugging Face CLIP and SigLIP models as image-text models: ``hf:MODEL_ID``.

``hf:openai/clip-vit-base-patch16`` or ``hf:google/siglip-base-patch16-224``
(downloaded by transformers into its cache), or ``hf:/path/to/folder`` (a
model saved with ``save_pretrained``).  Embeddings come from the model's
``get_image_features`` / ``get_text_features``.  Images are preprocessed on
tensors as the model's image processor does (resize, optional centre crop,
rescale, normalise); texts are tokenized with the model's tokenizer, padded
to the maximum length for SigLIP (as it was trained).  Needs ``pip install
'netdissect[text]'``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import torch

from ..errors import ConfigError, ModelError
from .base import encode_text_batches
from .transforms import ImageTransform

INSTALL = "pip install 'netdissect[text]'"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# PIL resampling codes used by image processors
_RESAMPLE = {0: "nearest", 1: "area", 2: "bilinear", 3: "bicubic", 4: "area", 5: "bicubic"}


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise ModelError(f"hf: image-text models need the transformers package: {INSTALL}") from None
    return transformers


def _get(obj: Any, key: str, default=None):
    """``obj[key]`` or ``obj.key`` (image processors keep sizes in dicts or SizeDict objects)."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    value = getattr(obj, key, default)
    return default if value is None else value


def _interpolation(resample) -> str:
    if resample is None:
        return "bicubic"
    name = getattr(resample, "name", None) or getattr(resample, "value", None)
    if isinstance(name, str):
        name = name.lower()
        for known in ("bicubic", "bilinear", "nearest"):
            if known in name:
                return known
        return "bicubic"
    try:
        return _RESAMPLE.get(int(resample), "bicubic")
    except (TypeError, ValueError):
        return "bicubic"


def transform_from_image_processor(processor) -> ImageTransform:
    """The :class:`ImageTransform` equivalent of a transformers image processor.

    Parameters
    ----------
    processor : transformers image processor
        E.g. ``CLIPImageProcessor`` (shorter side to 224, centre crop 224,
        bicubic, OpenAI mean/std) or ``SiglipImageProcessor`` (224 x 224,
        bicubic, mean = std = 0.5).

    Returns
    -------
    ImageTransform
        The same recipe on tensors.

    Raises
    ------
    ConfigError
        For a size the processor states in a way this does not know.
    """
    size = _get(processor, "size")
    interpolation = _interpolation(_get(processor, "resample"))
    mean = tuple(_get(processor, "image_mean", OPENAI_MEAN))
    std = tuple(_get(processor, "image_std", OPENAI_STD))
    if not _get(processor, "do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    crop = None
    if _get(processor, "do_center_crop", False):
        cs = _get(processor, "crop_size")
        crop = (int(_get(cs, "height")), int(_get(cs, "width"))) if _get(cs, "height") else int(cs)
    shortest = _get(size, "shortest_edge")
    if shortest:
        return ImageTransform(int(shortest), crop, mean, std, interpolation, "shortest")
    if _get(size, "height") and _get(size, "width"):
        return ImageTransform((int(_get(size, "height")), int(_get(size, "width"))), crop, mean, std, interpolation,
                              "squash")
    if isinstance(size, int):
        return ImageTransform(size, crop, mean, std, interpolation, "shortest")
    raise ConfigError(f"image processor {type(processor).__name__} has a size this package cannot read: {size!r}")


def _default_transform(model) -> ImageTransform:
    """A transform from the model's config alone (no image processor): CLIP or SigLIP recipe."""
    vision = getattr(model.config, "vision_config", None)
    side = int(getattr(vision, "image_size", 224))
    if "siglip" in str(getattr(model.config, "model_type", "")):
        return ImageTransform((side, side), None, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", "squash")
    return ImageTransform(side, side, OPENAI_MEAN, OPENAI_STD, "bicubic", "shortest")


def _features(out) -> torch.Tensor:
    """The embedding in a model output: a tensor (transformers 4) or its ``pooler_output`` (transformers 5)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ModelError(f"cannot read embeddings from a {type(out).__name__}")


class HFImageText:
    """A Hugging Face CLIP/SigLIP model behind the :class:`~netdissect.imagetext.base.ImageTextModel` protocol.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A model with ``get_image_features`` and ``get_text_features``
        (``CLIPModel``, ``SiglipModel``...).
    processor_or_tokenizer : transformers processor or tokenizer
        A processor (its ``tokenizer`` and ``image_processor`` are used) or a
        tokenizer alone.
    transform : ImageTransform, optional
        Image preprocessing; default: the processor's image processor, else
        the CLIP or SigLIP recipe at the config's image size.
    spec : str, optional
        The spec that opens it again.
    padding : str or bool, optional
        Tokenizer padding; default ``"max_length"`` for SigLIP (as trained),
        else ``True`` (longest in the batch).
    text_batch_size : int
        Texts embedded per forward pass.
    """

    vocabulary = None

    def __init__(self, model, processor_or_tokenizer, transform: ImageTransform | None = None, *,
                 spec: str | None = None, padding: str | bool | None = None, text_batch_size: int = 256):
        for method in ("get_image_features", "get_text_features"):
            if not callable(getattr(model, method, None)):
                raise ConfigError(f"{type(model).__name__} has no {method}(); hf: image-text models must be "
                                  "CLIP-like (CLIPModel, SiglipModel, ...)")
        self.model = model.eval()
        tokenizer = getattr(processor_or_tokenizer, "tokenizer", None)
        self.tokenizer = tokenizer if tokenizer is not None else processor_or_tokenizer
        if not callable(self.tokenizer):
            raise ConfigError(f"{type(processor_or_tokenizer).__name__} is neither a processor nor a tokenizer")
        image_processor = getattr(processor_or_tokenizer, "image_processor", None)
        if transform is None:
            transform = (transform_from_image_processor(image_processor) if image_processor is not None
                         else _default_transform(model))
        self.transform = transform
        self.model_type = str(getattr(model.config, "model_type", ""))
        self.padding = padding if padding is not None else ("max_length" if "siglip" in self.model_type else True)
        text_config = getattr(model.config, "text_config", None)
        self.max_length = int(getattr(text_config, "max_position_embeddings", 77))
        self._spec = spec or f"hf:{getattr(model.config, '_name_or_path', '') or type(model).__name__}"
        self.text_batch_size = int(text_batch_size)
        self._fingerprint: str | None = None

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 RGB -> (N, D) float32 image embeddings, on the model's device."""
        x = self.transform(images.to(self.device)).to(next(self.model.parameters()).dtype)
        return _features(self.model.get_image_features(pixel_values=x)).float()

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids (and attention mask, where the tokenizer makes one) of ``texts``, on the model's device.

        Parameters
        ----------
        texts : sequence of str
            The texts.

        Returns
        -------
        dict of str to torch.Tensor
            ``input_ids`` (M, L) and possibly ``attention_mask``.
        """
        enc = self.tokenizer(list(texts), padding=self.padding, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    @torch.no_grad()
    def encode_text(self, words: Sequence[str]) -> torch.Tensor:
        """M texts -> (M, D) float32 text embeddings, on the model's device.

        Parameters
        ----------
        words : sequence of str
            The texts (the bare word is the prompt).

        Returns
        -------
        torch.Tensor
            (M, D) float32.

        Raises
        ------
        ConfigError
            When ``words`` is one string instead of a sequence.
        """
        return encode_text_batches(words, self.text_batch_size,
                                   lambda batch: _features(self.model.get_text_features(**self.tokenize(batch))),
                                   self.device)

    def to(self, device) -> "HFImageText":
        """Move to ``device``; returns self."""
        self.model.to(device)
        return self

    def spec(self) -> str:
        """The spec it was opened with."""
        return self._spec

    def fingerprint(self) -> str:
        """sha256 over the weights, the preprocessing, the padding and the tokenizer's vocabulary size."""
        if self._fingerprint is None:
            from ..models.weights import state_hash

            vocab = len(self.tokenizer) if hasattr(self.tokenizer, "__len__") else -1
            h = hashlib.sha256(f"hf-image-text-1|{self.transform.key()}|{self.padding}|{self.max_length}|{vocab}|"
                               .encode())
            h.update(state_hash(self.model).encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"HFImageText({self._spec!r})"


def load_hf(model_id: str) -> HFImageText:
    """Open ``hf:MODEL_ID`` with ``AutoModel`` and ``AutoProcessor``.

    Parameters
    ----------
    model_id : str
        A Hugging Face hub id (``openai/clip-vit-base-patch16``) or a folder
        saved with ``save_pretrained``.

    Returns
    -------
    HFImageText
        The model, on the CPU in eval mode.

    Raises
    ------
    ConfigError
        For an empty id or a model that is not CLIP-like.
    ModelError
        When transformers is missing or the model cannot be downloaded or read.
    """
    transformers = _import_transformers()
    if not model_id:
        raise ConfigError("hf spec needs a model id: hf:MODEL_ID, e.g. hf:openai/clip-vit-base-patch16")
    try:
        model = transformers.AutoModel.from_pretrained(model_id)
        processor = transformers.AutoProcessor.from_pretrained(model_id)
    except (OSError, ValueError, ImportError) as exc:
        raise ModelError(f"could not load Hugging Face model {model_id!r} ({exc}); it is downloaded on first use "
                         "(a network connection is needed once), or give a folder saved with save_pretrained "
                         "as hf:/path/to/folder") from None
    return HFImageText(model, processor, spec=f"hf:{model_id}")
