"""The one definition of the network's input preprocessing.

CT in Hounsfield units becomes C channels, one per HU window, each clipped to its
window and scaled to [-1, 1]. The same function runs on numpy arrays (data
readers, calibration) and on torch tensors (training, and the exported ONNX graph,
where it becomes Clip/Sub/Mul/Concat), so training and deployment cannot drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Default windows (HU): abdomen soft tissue, liver, and a narrow lesion window.
DEFAULT_WINDOWS: tuple[tuple[float, float], ...] = ((-160.0, 240.0), (-50.0, 200.0), (0.0, 150.0))


@dataclass(frozen=True)
class Preprocessing:
    """HU windows that turn one CT slice into the network's input channels."""

    windows: tuple[tuple[float, float], ...] = field(default=DEFAULT_WINDOWS)

    def __post_init__(self) -> None:
        windows = tuple((float(lo), float(hi)) for lo, hi in self.windows)
        if not windows:
            raise ValueError("Preprocessing needs at least one HU window")
        for lo, hi in windows:
            if not hi > lo:
                raise ValueError(f"HU window ({lo}, {hi}) is empty: the upper bound must exceed the lower")
        object.__setattr__(self, "windows", windows)

    @property
    def channels(self) -> int:
        return len(self.windows)

    def __call__(self, hu: Any) -> Any:
        return window_channels(hu, self.windows)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "hu_windows", "windows": [list(w) for w in self.windows], "range": [-1.0, 1.0]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        if data.get("kind", "hu_windows") != "hu_windows":
            raise ValueError(f"unknown preprocessing kind {data.get('kind')!r}; accepted: 'hu_windows'")
        return cls(windows=tuple(tuple(w) for w in data["windows"]))  # type: ignore[arg-type]


def window_channels(hu: Any, windows: Sequence[tuple[float, float]]) -> Any:
    """Map HU (N x 1 x H x W, numpy or torch) to N x len(windows) x H x W in [-1, 1]."""
    channels = []
    for lo, hi in windows:
        scale = 2.0 / (hi - lo)
        channels.append(hu.clip(lo, hi) * scale - (lo * scale + 1.0))
    if isinstance(hu, np.ndarray):
        return np.concatenate(channels, axis=1).astype(np.float32, copy=False)
    import torch  # only reached with a torch tensor, i.e. when torch is installed

    return torch.cat(channels, dim=1)
