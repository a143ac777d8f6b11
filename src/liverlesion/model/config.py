"""The architecture hyper-parameters of a network, as a JSON-round-trippable dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import InputError
from ..labels import LESION_CLASSES, TARGET_LABELS, YNET_SEG_LABELS

ARCHS = ("joint", "ynet")
DOWNSAMPLING = ("conv", "maxpool")


@dataclass(frozen=True)
class ModelConfig:
    """What :func:`liverlesion.model.build_model` needs to rebuild a network.

    ``seg_labels`` defaults to 5 for the joint network (the paper's label map) and to
    3 for the Y-Net; the LiTS pretraining model is ``ModelConfig("joint", seg_labels=3)``.
    """

    arch: str = "joint"
    in_channels: int = 3
    base_width: int = 16
    depth: int = 4
    blocks_per_level: int = 1
    se_reduction: int = 4
    seg_labels: int | None = None
    num_classes: int = len(LESION_CLASSES)
    downsample: str = "conv"
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise InputError(f"unknown architecture {self.arch!r}; accepted: {', '.join(ARCHS)}")
        if self.seg_labels is None:
            default = len(TARGET_LABELS) if self.arch == "joint" else len(YNET_SEG_LABELS)
            object.__setattr__(self, "seg_labels", default)
        if self.downsample not in DOWNSAMPLING:
            raise InputError(f"unknown downsampling {self.downsample!r}; accepted: {', '.join(DOWNSAMPLING)}")
        for name in ("in_channels", "base_width", "depth", "blocks_per_level", "se_reduction",
                     "seg_labels", "num_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.seg_labels < 2:  # type: ignore[operator]
            raise InputError(f"ModelConfig.seg_labels must be at least 2, got {self.seg_labels}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def divisor(self) -> int:
        """Input height and width must be multiples of this (one halving per level below the top)."""
        return 2 ** (self.depth - 1)

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels at each level, top to bottleneck."""
        return tuple(self.base_width * 2**level for level in range(self.depth))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown ModelConfig fields {sorted(unknown)}; accepted: {sorted(known)}")
        return cls(**data)
