"""Transfer learning: start a network from another's weights wherever names and shapes match."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class TransferReport:
    """Which target tensors were loaded, which source tensors were skipped and why, which stayed fresh."""

    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    fresh: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"transferred {len(self.loaded)} tensors, skipped {len(self.skipped)}, "
                f"{len(self.fresh)} left freshly initialised")

    def to_dict(self) -> dict[str, object]:
        return {"loaded": list(self.loaded), "skipped": dict(self.skipped), "fresh": list(self.fresh)}


def transfer_weights(source_state: Mapping[str, torch.Tensor], target_model: nn.Module) -> TransferReport:
    """Copy into ``target_model`` every source tensor whose name and shape match.

    Parameters and buffers (BatchNorm statistics) alike; everything else in the target
    (e.g. a 5-label head after 3-label pretraining, the Y-Net class head) keeps its
    fresh initialisation.
    """
    target = target_model.state_dict()
    report = TransferReport()
    update: dict[str, torch.Tensor] = {}
    for name, tensor in source_state.items():
        if name not in target:
            report.skipped[name] = "not in the target model"
        elif tuple(tensor.shape) != tuple(target[name].shape):
            report.skipped[name] = f"shape {tuple(tensor.shape)} != target {tuple(target[name].shape)}"
        elif tensor.dtype.is_floating_point != target[name].dtype.is_floating_point:
            report.skipped[name] = f"dtype {tensor.dtype} does not fit target {target[name].dtype}"
        else:
            update[name] = tensor.detach().to(device=target[name].device, dtype=target[name].dtype)
            report.loaded.append(name)
    target_model.load_state_dict(update, strict=False)
    report.fresh = [name for name in target if name not in update]
    return report
