"""The networks: the joint 5-label SE-ResNet U-Net and the multi-task Y-Net (needs torch)."""

from __future__ import annotations

from .config import ARCHS, ModelConfig
from .registry import MODEL_REGISTRY, build_model, count_flops, count_parameters
from .unet import JointUNet, YNet

__all__ = ["ARCHS", "MODEL_REGISTRY", "JointUNet", "ModelConfig", "YNet", "build_model", "count_flops",
           "count_parameters"]
