"""Training data in memory: slices resampled once onto the model grid, and the patient split.

Images are cached as HU on the model grid (not windowed): intensity augmentation acts
on HU, and the windowing (:class:`Preprocessing`) runs per batch in torch, the same
code the exported graph runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFormatError, InputError
from ..grid import ModelGrid, to_model_grid
from ..labels import FIRST_LESION_LABEL, LESION_CLASSES

LESION_DATASET_FILE = "dataset.json"


@dataclass
class SliceSet:
    """Slices on the model grid: HU (N, H, W) float32, labels (N, H, W) uint8, group ids, classes."""

    kind: str
    hu: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    classes: np.ndarray | None = None
    ids: list[str] = field(default_factory=list)
    root: str = ""

    def __len__(self) -> int:
        return len(self.hu)

    def subset(self, index: Sequence[int] | np.ndarray) -> SliceSet:
        index = np.asarray(index, dtype=np.int64)
        return replace(self, hu=self.hu[index], labels=self.labels[index], groups=self.groups[index],
                       classes=None if self.classes is None else self.classes[index],
                       ids=[self.ids[i] for i in index] if self.ids else [])

    def summary(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": self.kind, "root": self.root, "slices": len(self),
                                "groups": len(np.unique(self.groups))}
        if self.classes is not None:
            counts = np.bincount(self.classes, minlength=len(LESION_CLASSES))
            info["class_counts"] = dict(zip(LESION_CLASSES, (int(c) for c in counts), strict=True))
        return info


def resolve_data_dir(data: str | Path, kind: str) -> Path:
    """The LiTS folder or lesion-slice dataset under ``data`` (itself, or its lits/ or lesion_slices/)."""
    root = Path(data)
    if not root.is_dir():
        raise InputError(f"data folder {root} not found")
    if kind == "lits":
        return root / "lits" if (root / "lits").is_dir() else root
    if kind == "lesion_slices":
        if (root / LESION_DATASET_FILE).is_file():
            return root
        if (root / "lesion_slices" / LESION_DATASET_FILE).is_file():
            return root / "lesion_slices"
        raise DataFormatError(f"no lesion-slice dataset in {root}: expected {root / LESION_DATASET_FILE} "
                              f"or {root / 'lesion_slices' / LESION_DATASET_FILE}")
    raise InputError(f"unknown dataset kind {kind!r}; accepted: lits, lesion_slices")


def resample_slice(hu: np.ndarray, labels: np.ndarray, spacing: Sequence[float],
                   grid: ModelGrid) -> tuple[np.ndarray, np.ndarray]:
    """HU (linear) and labels (nearest, outside = background) on the model grid."""
    image = to_model_grid(np.asarray(hu, dtype=np.float32), spacing, grid, order=1)
    mask = to_model_grid(np.asarray(labels, dtype=np.uint8), spacing, grid, order=0, fill=0)
    return image.astype(np.float32, copy=False), mask.astype(np.uint8, copy=False)


SliceItem = tuple[str, str, np.ndarray, np.ndarray, Sequence[float], "int | None"]


def stack_slices(kind: str, items: Iterable[SliceItem], grid: ModelGrid, root: str = "") -> SliceSet:
    """Build a SliceSet from (id, group, hu, labels, spacing, class index or None) tuples."""
    hu, labels, groups, classes, ids = [], [], [], [], []
    for slice_id, group, image, mask, spacing, cls in items:
        on_grid = resample_slice(image, mask, spacing, grid)
        hu.append(on_grid[0])
        labels.append(on_grid[1])
        groups.append(group)
        classes.append(cls)
        ids.append(slice_id)
    if not hu:
        raise DataFormatError(f"no usable slices found in {root or 'the data'}")
    has_classes = all(c is not None for c in classes)
    return SliceSet(kind=kind, hu=np.stack(hu), labels=np.stack(labels), groups=np.asarray(groups),
                    classes=np.asarray(classes, dtype=np.int64) if has_classes else None, ids=ids, root=root)


_CACHE: dict[tuple, SliceSet] = {}


def _cached(key: tuple, build: Callable[[], SliceSet]) -> SliceSet:
    # Resampling is the slow part of start-up; a process that trains several models
    # (the paper comparison) pays for it once per dataset and grid.
    if key not in _CACHE:
        if len(_CACHE) >= 4:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = build()
    return _CACHE[key]


def _stamp(path: Path) -> tuple[float, int]:
    stat = path.stat()
    return stat.st_mtime, stat.st_size


def load_lits_set(data: str | Path, grid: ModelGrid, *, every: int = 1) -> SliceSet:
    """LiTS slices showing liver, on the model grid; groups are the volume (case) ids."""
    from ..data.lits import find_lits_cases, iter_lits_slices

    root = resolve_data_dir(data, "lits")
    cases = find_lits_cases(root)
    key = ("lits", str(root.resolve()), tuple(_stamp(c.volume_path) for c in cases), grid, every)

    def build() -> SliceSet:
        items = ((f"{s.case_id}:{s.index}", str(s.case_id), s.hu, s.labels, s.spacing_mm, None)
                 for s in iter_lits_slices(root, require="liver", every=every))
        return stack_slices("lits", items, grid, str(root))

    return _cached(key, build)


def load_lesion_set(data: str | Path, grid: ModelGrid) -> SliceSet:
    """The lesion-slice dataset on the model grid; groups are patient ids, classes class indices."""
    from ..data.lesion_slices import read_lesion_slices

    root = resolve_data_dir(data, "lesion_slices")
    key = ("lesion_slices", str(root.resolve()), _stamp(root / LESION_DATASET_FILE), grid)

    def build() -> SliceSet:
        items = ((s.case_id, s.patient_id, s.hu, s.mask, s.spacing_mm, LESION_CLASSES.index(s.lesion_class))
                 for s in read_lesion_slices(root))
        return stack_slices("lesion_slices", items, grid, str(root))

    return _cached(key, build)


def load_set(kind: str, data: str | Path, grid: ModelGrid, *, lits_every: int = 1) -> SliceSet:
    return load_lits_set(data, grid, every=lits_every) if kind == "lits" else load_lesion_set(data, grid)


def split_groups(groups: Sequence[str] | np.ndarray, val_fraction: float, seed: int,
                 classes: Sequence[int] | np.ndarray | None = None) -> list[str]:
    """The validation groups (patients), ``val_fraction`` of them, chosen by a seeded shuffle.

    With ``classes`` (one per slice) the choice is stratified by each patient's majority
    class, so that a small validation set still holds every lesion type in proportion.
    """
    group_ids = np.asarray(groups).astype(str)
    unique = sorted(set(group_ids.tolist()))
    if val_fraction <= 0 or len(unique) < 2:
        return []
    strata: dict[int, list[str]] = {}
    for group in unique:
        stratum = 0 if classes is None else int(np.bincount(np.asarray(classes)[group_ids == group]).argmax())
        strata.setdefault(stratum, []).append(group)
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for stratum in sorted(strata):
        members = strata[stratum]
        count = min(len(members) - 1, max(1, round(val_fraction * len(members)))) if len(members) > 1 else 0
        chosen += [members[i] for i in rng.permutation(len(members))[:count]]
    return sorted(chosen)


def split_indices(data: SliceSet, val_groups: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) slice indices: no patient in both."""
    is_val = np.isin(data.groups.astype(str), np.asarray(list(val_groups), dtype=str))
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def target_labels(labels: np.ndarray, arch: str) -> np.ndarray:
    """Training targets for an architecture: the Y-Net sees any lesion label as one 'lesion' label."""
    return np.minimum(labels, FIRST_LESION_LABEL) if arch == "ynet" else labels
