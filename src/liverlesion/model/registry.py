"""Build a network from its config by name; count its parameters and FLOPs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import InputError
from .config import ModelConfig
from .unet import JointUNet, YNet

#: Architecture name -> class taking a ModelConfig.
MODEL_REGISTRY: dict[str, Callable[[ModelConfig], nn.Module]] = {"joint": JointUNet, "ynet": YNet}


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised network for ``config``."""
    try:
        factory = MODEL_REGISTRY[config.arch]
    except KeyError:
        accepted = ", ".join(MODEL_REGISTRY)
        raise InputError(f"unknown architecture {config.arch!r}; accepted: {accepted}") from None
    return factory(config)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass on a zero input of ``input_shape`` (N x C x H x W); 1 MAC = 2 FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters(), None)
    x = torch.zeros(tuple(input_shape), device=param.device if param is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
