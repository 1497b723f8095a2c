"""How a model wants its input: size, normalisation, interpolation."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")


@dataclass(frozen=True)
class Preprocess:
    """Turns uint8 RGB images into the model's input.

    ``size`` is ``(H, W)`` when the model needs one input size (a ViT), else
    None: convolutional networks take the data set's own size so pixels and
    labels stay aligned.  Dissection never crops; a needed size is reached by
    resizing the whole image with ``interpolation``.  ``mean``/``std`` apply to
    values scaled to [0, 1], in ``channel_order``.  ``crop_size`` and
    ``resize_size`` record the model's own evaluation recipe (for
    classification), and are not used by dissection.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    size: tuple[int, int] | None = None
    interpolation: str = "bilinear"
    channel_order: str = "RGB"
    crop_size: int = 224
    resize_size: int = 256

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation {self.interpolation!r} is not one of {INTERPOLATIONS}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ConfigError(f"channel_order {self.channel_order!r} must be 'RGB' or 'BGR'")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise ConfigError(f"mean {self.mean} and std {self.std} need three values each, std non-zero")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 3, H, W) uint8 RGB -> (N, 3, H', W') float normalised."""
        x = images.float().div_(255.0)
        if self.channel_order == "BGR":
            x = x.flip(1)
        if self.size is not None and tuple(x.shape[-2:]) != tuple(self.size):
            mode = self.interpolation
            kwargs = {"align_corners": False, "antialias": True} if mode in ("bilinear", "bicubic") else {}
            x = F.interpolate(x, size=tuple(self.size), mode=mode, **kwargs)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)

    def to_json(self) -> dict:
        """The fields as a JSON-ready dict (``size`` as a list, or None)."""
        d = asdict(self)
        d["size"] = list(self.size) if self.size else None
        return d
