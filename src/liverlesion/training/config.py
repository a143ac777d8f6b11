"""What one training run does: :class:`TrainConfig`, and the stage/architecture rules."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..labels import LESION_CLASSES, LITS_LABELS, TARGET_LABELS, YNET_SEG_LABELS

STAGES = ("pretrain", "finetune")
#: Defaults for the values a run inherits from --init / --resume when it does not set them.
DEFAULT_WIDTH, DEFAULT_DEPTH, DEFAULT_GRID_SIZE, DEFAULT_GRID_SPACING = 16, 4, 160, 2.5


@dataclass
class TrainConfig:
    """One training run: a stage (LiTS pretraining or lesion fine-tuning) of one architecture.

    ``augment`` jitters intensity (HU gain and offset); ``flip`` adds left-right flips, off by
    default because CT is stored in a fixed orientation (patient right on the image left) and a
    flipped abdomen is not one the network will meet. Model shape, grid and windows left ``None``
    are taken from the ``init``/``resume`` checkpoint, else from the module defaults. ``data``
    is a LiTS folder, a lesion-slice dataset, or a folder holding ``lits/`` and
    ``lesion_slices/`` (the phantom layout).
    """

    data: Path
    out: Path
    stage: str = "finetune"
    arch: str = "joint"
    epochs: int = 20
    seed: int = 0
    split_seed: int = 0
    val_fraction: float = 0.2
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    base_width: int | None = None
    depth: int | None = None
    blocks_per_level: int | None = None
    grid_size: int | None = None
    grid_spacing: float | None = None
    windows: tuple[tuple[float, float], ...] | None = None
    init: Path | None = None
    resume: Path | None = None
    augment: bool = True
    flip: bool = False
    lits_every: int = 1
    dice_weight: float = 1.0
    class_weight: float = 1.0
    threads: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        self.init = Path(self.init) if self.init is not None else None
        self.resume = Path(self.resume) if self.resume is not None else None
        if self.stage not in STAGES:
            raise InputError(f"unknown stage {self.stage!r}; accepted: {', '.join(STAGES)}")
        if self.arch not in ("joint", "ynet"):
            raise InputError(f"unknown architecture {self.arch!r}; accepted: joint, ynet")
        if self.stage == "pretrain" and self.arch != "joint":
            raise InputError("LiTS pretraining trains a 3-label segmentation network: use arch 'joint' "
                             "(its weights then initialise either architecture)")
        if self.init is not None and self.resume is not None:
            raise InputError("give either init (transfer weights, start at epoch 1) or resume, not both")
        if self.epochs < 1 or self.batch_size < 1 or self.lits_every < 1:
            raise InputError("epochs, batch_size and lits_every must be positive integers")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    @property
    def dataset_kind(self) -> str:
        return "lits" if self.stage == "pretrain" else "lesion_slices"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("data", "out", "init", "resume"):
            data[key] = None if data[key] is None else str(data[key])
        data["windows"] = None if self.windows is None else [list(w) for w in self.windows]
        return data




def head_spec(stage: str, arch: str) -> tuple[int, tuple[str, ...], tuple[str, ...]]:
    """(segmentation labels, their names, class names) for a stage and architecture."""
    if stage == "pretrain":
        return len(LITS_LABELS), LITS_LABELS, ()
    if arch == "ynet":
        return len(YNET_SEG_LABELS), YNET_SEG_LABELS, LESION_CLASSES
    return len(TARGET_LABELS), TARGET_LABELS, LESION_CLASSES
