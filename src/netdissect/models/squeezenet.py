"""SqueezeNet v1.1 with batch normalisation, as trained on Places365 (365 scene classes).

The architecture of the ``squeezenet_places365`` weights (a plain state dict
whose key names are those of the modules below):

- ``ConvBN(cin, cout, k, stride)``: Conv2d (kernel k, padding k // 2, with
  bias) -> BatchNorm2d (eps = 0) -> LeakyReLU(0.55);
- ``conv1`` = ConvBN(3, 64, 3, stride 2), then MaxPool2d(3, 2);
- ``Fire(cin, s, e)``: ``squeeze`` = ConvBN(cin, s, 1), then the channel
  concatenation of ``e1`` = ConvBN(s, e, 1) and ``e3`` = ConvBN(s, e, 3);
- ``fire2`` (64, 16, 64), ``fire3`` (128, 16, 64), MaxPool2d(3, 2),
  ``fire4`` (128, 32, 128), ``fire5`` (256, 32, 128), MaxPool2d(3, 2),
  ``fire6`` (256, 48, 192), ``fire7`` (384, 48, 192), ``fire8`` (384, 64, 256),
  ``fire9`` (512, 64, 256);
- ``conv10`` = Conv2d(512, 365, 1) -> LeakyReLU(0.55) -> mean over H, W: the logits.

Input: BGR, 0..255 minus the channel means (B 104.051, G 112.514, R 116.676),
divided by 255 (see :data:`PLACES365_PREPROCESS`).  For a 224 x 224 input the
fire2/3 maps are 55 x 55, fire4/5 27 x 27, fire6-9 and conv10 13 x 13.
"""

from __future__ import annotations

import torch
from torch import nn

from .preprocess import Preprocess

#: Places365 SqueezeNet input: BGR, (x - mean) / 255 with the Caffe channel means (values in 0..255).
PLACES365_MEAN_BGR = (104.051, 112.514, 116.676)
PLACES365_PREPROCESS = Preprocess(
    mean=tuple(m / 255.0 for m in PLACES365_MEAN_BGR),
    std=(1.0, 1.0, 1.0),
    interpolation="bilinear",
    channel_order="BGR",
    crop_size=224,
    resize_size=256,
)
SLOPE = 0.55


class _BatchNorm(nn.BatchNorm2d):
    """BatchNorm2d without the ``num_batches_tracked`` buffer, which the published state dict lacks."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=0.0)
        self.register_buffer("num_batches_tracked", None)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # BatchNorm would add a missing num_batches_tracked entry to state_dict; plain loading does not.
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=True)
        self.bn = _BatchNorm(cout)
        self.act = nn.LeakyReLU(SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = ConvBN(cin, squeeze, 1)
        self.e1 = ConvBN(squeeze, expand, 1)
        self.e3 = ConvBN(squeeze, expand, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return torch.cat([self.e1(s), self.e3(s)], dim=1)


class SqueezeNetPlaces365(nn.Module):
    """(N, 3, H, W) preprocessed BGR -> (N, 365) logits."""

    def __init__(self, num_classes: int = 365):
        super().__init__()
        self.conv1 = ConvBN(3, 64, 3, stride=2)
        self.pool1 = nn.MaxPool2d(3, 2)
        self.fire2 = Fire(64, 16, 64)
        self.fire3 = Fire(128, 16, 64)
        self.pool3 = nn.MaxPool2d(3, 2)
        self.fire4 = Fire(128, 32, 128)
        self.fire5 = Fire(256, 32, 128)
        self.pool5 = nn.MaxPool2d(3, 2)
        self.fire6 = Fire(256, 48, 192)
        self.fire7 = Fire(384, 48, 192)
        self.fire8 = Fire(384, 64, 256)
        self.fire9 = Fire(512, 64, 256)
        self.conv10 = nn.Conv2d(512, num_classes, 1)
        self.act10 = nn.LeakyReLU(SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) preprocessed BGR images -> (N, num_classes) logits (mean of the conv10 map)."""
        x = self.pool1(self.conv1(x))
        x = self.pool3(self.fire3(self.fire2(x)))
        x = self.pool5(self.fire5(self.fire4(x)))
        x = self.fire9(self.fire8(self.fire7(self.fire6(x))))
        return self.act10(self.conv10(x)).mean(dim=(2, 3))


def squeezenet_places365() -> SqueezeNetPlaces365:
    """A randomly initialised model; load the Places365 weights with ``load_weights`` / ``--weights``."""
    return SqueezeNetPlaces365()


__all__ = ["PLACES365_MEAN_BGR", "PLACES365_PREPROCESS", "SqueezeNetPlaces365", "squeezenet_places365"]
