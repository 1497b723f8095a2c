"""The image-text model protocol: images and words in one embedding space.

CLIP-Dissect (Oikarinen & Weng, ICLR 2023), as used by DISCOVER (Panousis et
al., NeurIPS 2023), describes a unit with the word whose image-text
similarity over the probe images best matches the unit's activations.  It
needs only two things from an image-text model, given here as a protocol:

- ``encode_images(images)``: (N, 3, H, W) uint8 RGB -> (N, D) embeddings
  (the model applies its own preprocessing);
- ``encode_text(words)``: M strings -> (M, D) embeddings.

The concept-activation matrix is then ``P = normalise(encode_images) @
normalise(encode_text).T`` (N x M).  Implementations: open_clip and Hugging
Face CLIP/SigLIP models, closed-vocabulary classifiers (class probabilities
against one-hot names) and the small model this project trains on its
synthetic concept scenes.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class ImageTextModel(Protocol):
    """What describing units needs from an image-text model.

    Attributes
    ----------
    vocabulary : list of str or None
        The words it can embed, for a closed-vocabulary model (its class
        names); None when any text can be embedded.
    """

    vocabulary: list[str] | None

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Embed images.

        Parameters
        ----------
        images : torch.Tensor
            (N, 3, H, W) uint8 RGB, any size (the model resizes as it needs).

        Returns
        -------
        torch.Tensor
            (N, D) float32 embeddings (not necessarily normalised).
        """

    def encode_text(self, words: Sequence[str]) -> torch.Tensor:
        """Embed words or phrases.

        Parameters
        ----------
        words : sequence of str
            M texts (the bare word is the prompt, as in CLIP-Dissect).

        Returns
        -------
        torch.Tensor
            (M, D) float32 embeddings.

        Raises
        ------
        ConfigError
            For a closed-vocabulary model, a word outside its vocabulary.
        """

    def to(self, device: torch.device | str) -> "ImageTextModel":
        """Move to ``device`` and return self."""

    def spec(self) -> str:
        """A string that :func:`netdissect.imagetext.load_image_text` opens again."""

    def fingerprint(self) -> str:
        """A content key: equal keys mean the same embeddings."""


def encode_text_batches(words: Sequence[str], batch_size: int,
                        encode: Callable[[list[str]], torch.Tensor], device) -> torch.Tensor:
    """Embed ``words`` ``batch_size`` at a time with ``encode`` (a list of M texts -> (M, D)).

    Parameters
    ----------
    words : sequence of str
        The texts.
    batch_size : int
        Texts per call of ``encode``.
    encode : callable
        One batch of texts -> (M, D) embeddings.
    device : torch.device or str
        Where the (0, D) result of no words is made.

    Returns
    -------
    torch.Tensor
        (len(words), D) float32; (0, D) for no words (D from embedding one empty text).

    Raises
    ------
    ConfigError
        When ``words`` is one string instead of a sequence.
    """
    from ..errors import ConfigError

    if isinstance(words, str):
        raise ConfigError("encode_text takes a sequence of strings, not one string")
    words = [str(w) for w in words]
    if not words:
        return torch.zeros(0, encode([""]).shape[1], device=device)
    return torch.cat([encode(words[i:i + batch_size]).float() for i in range(0, len(words), batch_size)])
