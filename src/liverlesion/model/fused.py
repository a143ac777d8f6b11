"""The fused network that the package ships: HU in, label map and probabilities out.

Preprocessing (the one definition in :mod:`liverlesion.preprocessing`) and
postprocessing (softmax, argmax) sit in their own submodules, so the exported ONNX
nodes carry the scopes ``/preprocess/``, ``/network/`` and ``/postprocess/``; FP16
conversion and INT8 quantization select the nodes they keep in float by these scopes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..preprocessing import Preprocessing, window_channels

INPUT_NAME = "hu"
LABELS = "labels"
PROBABILITIES = "probabilities"
CLASS_PROBABILITIES = "class_probabilities"
#: Node-name prefixes of the exported graph's parts (torch scope names).
PRE_SCOPE = "/preprocess/"
POST_SCOPE = "/postprocess/"
NETWORK_SCOPE = "/network/"


class Preprocess(nn.Module):
    """HU (N x 1 x H x W) -> network input channels in [-1, 1]."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.windows = preprocessing.windows

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        return window_channels(hu, self.windows)


class Postprocess(nn.Module):
    """Segmentation logits -> (int32 label map, float32 probabilities)."""

    def forward(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(logits.float(), dim=1)
        # argmax of the probabilities (not the logits) so that labels and probabilities agree exactly
        return torch.argmax(probabilities, dim=1).to(torch.int32), probabilities


class ClassPostprocess(nn.Module):
    """Class logits (N x K) -> softmax probabilities."""

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1)


class FusedModel(nn.Module):
    """HU in; ``labels`` (+ ``probabilities``, + ``class_probabilities`` for the Y-Net) out."""

    def __init__(self, network: nn.Module, preprocessing: Preprocessing, *, arch: str) -> None:
        super().__init__()
        self.arch = arch
        self.preprocess = Preprocess(preprocessing)
        self.network = network
        self.postprocess = Postprocess()
        self.class_postprocess = ClassPostprocess() if arch == "ynet" else None

    @property
    def output_names(self) -> tuple[str, ...]:
        names = (LABELS, PROBABILITIES)
        return (*names, CLASS_PROBABILITIES) if self.arch == "ynet" else names

    def forward(self, hu: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.network(self.preprocess(hu))
        if self.class_postprocess is not None:
            seg, cls = out
            return (*self.postprocess(seg), self.class_postprocess(cls))
        return self.postprocess(out)


def fuse(network: nn.Module, preprocessing: Preprocessing, arch: str) -> FusedModel:
    """Wrap a trained network in eval mode with the package's pre- and postprocessing."""
    return FusedModel(network, preprocessing, arch=arch).eval()


def run_fused(model: FusedModel, hu: np.ndarray) -> dict[str, np.ndarray]:
    """PyTorch reference outputs for float32 HU (N x 1 x H x W), keyed by output name."""
    with torch.no_grad():
        values = model(torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32)))
    return {name: v.numpy() for name, v in zip(model.output_names, values, strict=True)}
