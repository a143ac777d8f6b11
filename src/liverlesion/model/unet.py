"""The two networks of the paper: the joint 5-label U-Net and the multi-task Y-Net."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from .blocks import ResidualSEBlock, UpConv, conv3x3
from .config import ModelConfig


def _stage(in_channels: int, out_channels: int, blocks: int, *, stride: int,
           se_reduction: int) -> nn.Sequential:
    """``blocks`` SE-ResNet blocks; the first one changes width (and stride)."""
    layers = [ResidualSEBlock(in_channels, out_channels, stride=stride, se_reduction=se_reduction)]
    layers += [ResidualSEBlock(out_channels, out_channels, se_reduction=se_reduction)
               for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class JointUNet(nn.Module):
    """U-Net of SE-ResNet blocks with one segmentation head of ``config.seg_labels`` logits.

    Static control flow only (fixed number of levels, no data-dependent branches), so it
    traces and exports to ONNX as one straight graph.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths
        blocks, reduction = config.blocks_per_level, config.se_reduction
        self.stem = nn.Sequential(conv3x3(config.in_channels, widths[0]), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU())
        encoders = [_stage(widths[0], widths[0], blocks, stride=1, se_reduction=reduction)]
        for level in range(1, config.depth):
            stride = 2 if config.downsample == "conv" else 1
            stage = _stage(widths[level - 1], widths[level], blocks, stride=stride, se_reduction=reduction)
            if config.downsample == "maxpool":
                stage = nn.Sequential(nn.MaxPool2d(2), *stage)
            encoders.append(stage)
        self.encoders = nn.ModuleList(encoders)
        # Decoder level i takes level i+1's features up to level i's size and width.
        self.ups = nn.ModuleList(UpConv(widths[i + 1], widths[i]) for i in range(config.depth - 1))
        self.decoders = nn.ModuleList(
            _stage(2 * widths[i], widths[i], blocks, stride=1, se_reduction=reduction)
            for i in range(config.depth - 1)
        )
        self.head = nn.Conv2d(widths[0], config.seg_labels, 1)  # type: ignore[arg-type]

    def _check_input(self, x: torch.Tensor) -> None:
        if torch.jit.is_tracing():  # shapes are traced values there; the exporter fixes H, W anyway
            return
        divisor = self.config.divisor
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise InputError(
                f"expected input N x {self.config.in_channels} x H x W, got shape {tuple(x.shape)}"
            )
        if x.shape[-2] % divisor or x.shape[-1] % divisor:
            raise InputError(
                f"input height and width must be multiples of {divisor} for a network of depth "
                f"{self.config.depth}, got {tuple(x.shape[-2:])}"
            )

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (decoder output at full resolution, bottleneck features)."""
        self._check_input(x)
        skips = []
        out = self.stem(x)
        for encoder in self.encoders:
            out = encoder(out)
            skips.append(out)
        bottleneck = out
        for level in range(self.config.depth - 2, -1, -1):
            out = self.ups[level](out)
            out = self.decoders[level](torch.cat([out, skips[level]], dim=1))
        return out, bottleneck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[0])


class YNet(JointUNet):
    """The multi-task baseline: 3-label segmentation plus a class head on the bottleneck.

    Shares the joint network's module names, so LiTS-pretrained weights (segmentation
    head included, both have 3 labels there) transfer by name.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(config.dropout),
            nn.Linear(config.widths[-1], config.num_classes),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        decoded, bottleneck = self.features(x)
        return self.head(decoded), self.classifier(bottleneck)
