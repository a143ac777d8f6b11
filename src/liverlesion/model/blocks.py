"""Building blocks: squeeze-and-excitation, the SE-ResNet basic block, the decoder upsampling."""

from __future__ import annotations

import torch
from torch import nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with 'same' padding; no bias, a BatchNorm follows."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class SqueezeExcitation(nn.Module):
    """Channel attention (Hu et al. 2018): GAP -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid -> scale."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        # AdaptiveAvgPool2d(1) exports as ONNX GlobalAveragePool, which TensorRT fuses well.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)
        # The pooled input follows a BatchNorm, so it averages to zero over a training batch;
        # with a zero bias each hidden unit is then positive for some slice and cannot start dead.
        nn.init.zeros_(self.reduce.bias)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.expand(torch.relu(self.reduce(self.pool(x)))))
        return x * scale


class ResidualSEBlock(nn.Module):
    """ResNet basic block with SE on the residual branch (SE-ResNet placement, before the addition)."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1,
                 se_reduction: int = 4) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.se = SqueezeExcitation(out_channels, se_reduction)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return torch.relu(out + self.shortcut(x))


class UpConv(nn.Module):
    """Nearest-neighbour x2 upsampling then conv3x3-BN-ReLU.

    Used instead of ConvTranspose: a nearest Resize + Conv quantizes cleanly to INT8 Q/DQ
    on every TensorRT version (see docs on the ConvTranspose weight-axis problem).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = conv3x3(in_channels, out_channels)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(self.up(x))))
