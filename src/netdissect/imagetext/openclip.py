"""open_clip models as image-text models: ``open_clip:ARCH[:PRETRAINED]``.

``open_clip:ViT-B-16:openai`` is CLIP-Dissect's default model.  open_clip
downloads the weights on first use (into its cache); a local checkpoint can be
given with ``weights=FILE``.  Images are preprocessed on tensors the way the
model's own evaluation transform does (resize, centre crop, normalise with
its mean and std); words are tokenized with the model's tokenizer (the
OpenAI BPE vocabulary ships inside open_clip, so CLIP tokenizers work
offline).  Needs ``pip install 'netdissect[text]'``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..errors import ConfigError, ModelError, close_matches
from .base import encode_text_batches
from .transforms import ImageTransform

INSTALL = "pip install 'netdissect[text]'"


def _import_open_clip():
    try:
        import open_clip
    except ImportError:
        raise ModelError(f"open_clip image-text models need the open_clip_torch package: {INSTALL}") from None
    return open_clip


def open_clip_transform(model) -> ImageTransform:
    """The evaluation preprocessing of an open_clip model, as an :class:`ImageTransform`.

    Parameters
    ----------
    model : open_clip.CLIP
        A model made by ``open_clip.create_model*``.

    Returns
    -------
    ImageTransform
        Resize (``shortest``: the shorter side, then a centre crop;
        ``squash``; ``longest``: pad to a square), the model's mean and std.
    """
    visual = model.visual
    cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
    size = cfg.get("size", getattr(visual, "image_size", 224))
    size = (size, size) if isinstance(size, int) else tuple(size)
    mean = tuple(cfg.get("mean", getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)))
    std = tuple(cfg.get("std", getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)))
    interpolation = cfg.get("interpolation", "bicubic")
    interpolation = interpolation if interpolation in ("bicubic", "bilinear", "nearest") else "bicubic"
    mode = cfg.get("resize_mode", "shortest")
    if mode == "shortest" and size[0] == size[1]:
        return ImageTransform(size[0], size, mean, std, interpolation, "shortest")
    if mode == "longest" and size[0] == size[1]:
        return ImageTransform(size[0], size, mean, std, interpolation, "longest", int(cfg.get("fill_color", 0)))
    return ImageTransform(size, None, mean, std, interpolation, "squash")


class OpenClipImageText:
    """An open_clip model behind the :class:`~netdissect.imagetext.base.ImageTextModel` protocol.

    Parameters
    ----------
    model : torch.nn.Module
        An open_clip model (``encode_image``, ``encode_text``).
    tokenizer : callable
        ``tokenizer(list_of_str) -> (M, L) LongTensor`` (``open_clip.get_tokenizer``).
    transform : ImageTransform, optional
        Image preprocessing (default: :func:`open_clip_transform` of ``model``).
    spec : str, optional
        The spec that opens it again.
    text_batch_size : int
        Words embedded per forward pass.
    """

    vocabulary = None

    def __init__(self, model: torch.nn.Module, tokenizer: Callable, transform: ImageTransform | None = None, *,
                 spec: str | None = None, text_batch_size: int = 256):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.transform = transform or open_clip_transform(model)
        self._spec = spec or f"open_clip:{type(model).__name__}"
        self.text_batch_size = int(text_batch_size)
        self._fingerprint: str | None = None

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 RGB -> (N, D) float32 image embeddings, on the model's device."""
        x = self.transform(images.to(self.device))
        dtype = next(self.model.parameters()).dtype
        return self.model.encode_image(x.to(dtype)).float()

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
                                   lambda batch: self.model.encode_text(self.tokenizer(batch).to(self.device)),
                                   self.device)

    def to(self, device) -> "OpenClipImageText":
        """Move to ``device``; returns self."""
        self.model.to(device)
        return self

    def spec(self) -> str:
        """The spec it was opened with."""
        return self._spec

    def fingerprint(self) -> str:
        """sha256 over the weights and the preprocessing (the tokenizer is fixed by the architecture)."""
        if self._fingerprint is None:
            from ..models.weights import state_hash

            h = hashlib.sha256(f"open_clip-image-text-1|{self.transform.key()}|".encode())
            h.update(state_hash(self.model).encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"OpenClipImageText({self._spec!r})"


def load_open_clip(arch: str, pretrained: str | None = None, *, weights=None) -> OpenClipImageText:
    """Open ``open_clip:ARCH[:PRETRAINED]``.

    Parameters
    ----------
    arch : str
        An open_clip architecture (``open_clip.list_models()``), e.g. ``ViT-B-16``.
    pretrained : str, optional
        A pretrained tag (``open_clip.list_pretrained_tags_by_model(arch)``),
        e.g. ``openai``; downloaded by open_clip.  None: random weights.
    weights : str, optional
        A local open_clip checkpoint, used instead of ``pretrained``.

    Returns
    -------
    OpenClipImageText
        The model, on the CPU in eval mode.

    Raises
    ------
    ConfigError
        For an unknown architecture or pretrained tag (with close matches).
    ModelError
        When open_clip is missing or the weights cannot be downloaded or read.
    """
    open_clip = _import_open_clip()
    if not arch:
        raise ConfigError("open_clip spec needs an architecture: open_clip:ARCH[:PRETRAINED], "
                          "e.g. open_clip:ViT-B-16:openai")
    models = open_clip.list_models()
    if arch not in models:
        hint = close_matches(arch, models)
        raise ConfigError(f"open_clip has no architecture {arch!r}" + (f"; {hint}" if hint else ""))
    if pretrained and weights is None:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if pretrained not in tags:
            hint = close_matches(pretrained, tags)
            raise ConfigError(f"open_clip architecture {arch!r} has no pretrained weights {pretrained!r}; "
                              f"choose one of {', '.join(tags) or '(none)'}" + (f"; {hint}" if hint else ""))
    if weights is not None:
        weights = Path(weights).expanduser().resolve()
        if not weights.is_file():
            raise ModelError(f"open_clip checkpoint {str(weights)!r} not found")
    source = str(weights) if weights is not None else pretrained
    try:
        model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=source)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelError(f"could not create open_clip model {arch!r} with weights {source!r} ({exc}); "
                         "download the checkpoint elsewhere and pass it with weights=FILE") from None
    try:
        tokenizer = open_clip.get_tokenizer(arch)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelError(f"could not load the tokenizer of open_clip model {arch!r} ({exc})") from None
    spec = f"open_clip:{arch}" + (f":{pretrained}" if pretrained else "")
    if weights is not None:
        spec += f"?weights={weights}"
    return OpenClipImageText(model, tokenizer, spec=spec)
