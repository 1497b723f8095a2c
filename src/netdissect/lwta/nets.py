"""A small ResNet for training from scratch on small images (the LWTA experiment's network).

Load it by spec: ``module:netdissect.lwta.nets:small_resnet`` (6 classes,
the synthetic scenes) or converted, ``lwta:module:netdissect.lwta.nets:small_resnet?U=4&classes=N``.
"""

from __future__ import annotations

import torch
from torch import nn


class _Block(nn.Module):
    """Basic residual block: conv-BN-ReLU-conv-BN (+ shortcut) -ReLU, with its own two activation modules."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cin, H, W) -> (B, cout, H / stride, W / stride)."""
        y = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(y)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet-10-like network: stem, four stages of one basic block, global pooling, linear.

    Parameters
    ----------
    classes : int
        Outputs.
    width : int
        Channels of the first stage (doubled per stage: width * (1, 2, 4, 8)).

    Notes
    -----
    Layers for dissection: ``layer1`` ... ``layer4`` (block outputs, after
    the block's last activation); at 64 px input the grids are 32, 16, 8, 4.
    """

    def __init__(self, classes: int = 6, width: int = 16):
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU())
        self.layer1 = _Block(w[0], w[0], 2)
        self.layer2 = _Block(w[0], w[1], 2)
        self.layer3 = _Block(w[1], w[2], 2)
        self.layer4 = _Block(w[2], w[3], 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[3], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, classes) logits."""
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(self.pool(x).flatten(1))


def small_resnet() -> SmallResNet:
    """A :class:`SmallResNet` with 6 classes and width 16 (a ``module:`` factory).

    Returns
    -------
    SmallResNet
        Randomly initialised (``load_model`` seeds it).
    """
    return SmallResNet()
