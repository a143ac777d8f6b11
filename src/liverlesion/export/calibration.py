"""INT8 calibration slices: LiTS slices on the model grid, chosen reproducibly.

Slices come through the LiTS reader and the training resampling path
(:func:`liverlesion.training.datasets.resample_slice`, i.e. ``grid.to_model_grid``), so
the quantizer sees exactly what the network saw in training. They are stored as HU
(N x 1 x H x W float32): the fused graph preprocesses them itself, and TensorRT 8.5's
calibrator can be fed the same file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..grid import ModelGrid
from ..labels import LITS_TUMOR

CALIBRATION_FILE = "calibration/slices.npy"


@dataclass
class CalibrationSet:
    """The chosen slices (HU on the model grid) and where they came from."""

    slices: np.ndarray
    ids: list[str]
    with_tumour: int
    without_tumour: int
    data: str
    seed: int
    stratified: bool
    candidates: dict[str, int] = field(default_factory=dict)

    @property
    def selection(self) -> str:
        if self.stratified:
            return (f"stratified, seed {self.seed}: {self.with_tumour} with tumour, "
                    f"{self.without_tumour} liver without tumour")
        return f"uniform over liver slices, seed {self.seed}: {self.with_tumour} with tumour, " \
               f"{self.without_tumour} without"

    def to_manifest(self, method: str, excluded: list[str], file: str = CALIBRATION_FILE) -> dict[str, Any]:
        return {"source": "LiTS", "data": Path(self.data).name, "slices": len(self.slices), "method": method,
                "selection": self.selection, "seed": self.seed, "file": file, "units": "HU",
                "layout": "NCHW", "ids": self.ids, "candidates": self.candidates, "excluded_nodes": excluded}


class _Reservoir:
    """Uniform sample of ``size`` items from a stream of unknown length (Algorithm R)."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size, self.rng, self.seen = size, rng, 0
        self.items: list[Any] = []

    def offer(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        else:
            j = int(self.rng.integers(self.seen))
            if j < self.size:
                self.items[j] = item


def select_calibration_slices(lits_dir: str | Path, grid: ModelGrid, *, count: int = 64,
                              stratified: bool = True, seed: int = 0, every: int = 1) -> CalibrationSet:
    """Pick ``count`` liver slices of the LiTS volumes under ``lits_dir`` and resample them to ``grid``.

    Stratified (default): half with tumour, half without, topped up from the other
    group when one runs short. One pass over the volumes, one volume in memory at a time.
    """
    from ..data.lits import iter_lits_slices
    from ..training.datasets import resample_slice, resolve_data_dir

    if count < 1:
        raise InputError(f"the number of calibration slices must be positive, got {count}")
    root = resolve_data_dir(lits_dir, "lits")
    rng = np.random.default_rng(seed)
    pools = {"tumour": _Reservoir(count, rng), "clean": _Reservoir(count, rng)}
    for item in iter_lits_slices(root, require="liver", every=every):
        has_tumour = bool(np.any(item.labels == LITS_TUMOR))
        pools["tumour" if stratified and has_tumour else "clean"].offer(item)
    found = pools["tumour"].seen + pools["clean"].seen
    if found == 0:
        raise InputError(f"no LiTS slice showing liver was found under {root}: check the folder "
                         "(volume-N.nii[.gz] and segmentation-N.nii[.gz])")
    tumour, clean = pools["tumour"].items, pools["clean"].items
    n_tumour = min(len(tumour), max(count // 2, count - len(clean)))
    chosen = [tumour[i] for i in rng.choice(len(tumour), n_tumour, replace=False)]
    chosen += [clean[i] for i in rng.choice(len(clean), min(len(clean), count - n_tumour), replace=False)]
    chosen.sort(key=lambda s: (s.case_id, s.index))
    slices = np.stack([resample_slice(s.hu, s.labels, s.spacing_mm, grid)[0] for s in chosen])[:, None]
    n_with = sum(bool(np.any(s.labels == LITS_TUMOR)) for s in chosen)
    candidates = ({"with_tumour": pools["tumour"].seen, "without_tumour": pools["clean"].seen} if stratified
                  else {"liver": pools["clean"].seen})
    return CalibrationSet(slices=np.ascontiguousarray(slices, dtype=np.float32),
                          ids=[f"{s.case_id}:{s.index}" for s in chosen], with_tumour=n_with,
                          without_tumour=len(chosen) - n_with, data=str(root), seed=seed,
                          stratified=stratified, candidates=candidates)


def save_slices(path: str | Path, slices: np.ndarray) -> Path:
    """Write the calibration array as .npy (no pickle), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(slices, dtype=np.float32), allow_pickle=False)
    return path


def load_slices(path: str | Path) -> np.ndarray:
    """Read a calibration array written by :func:`save_slices`."""
    array = np.load(path, allow_pickle=False)
    if array.dtype != np.float32 or array.ndim != 4 or array.shape[1] != 1:
        raise InputError(f"{path}: calibration slices must be float32 N x 1 x H x W, got {array.dtype} "
                         f"{array.shape}")
    return array


class CalibrationReader:
    """onnxruntime CalibrationDataReader over HU slices, in batches."""

    def __init__(self, slices: np.ndarray, input_name: str, batch: int = 8) -> None:
        # Equal batches only: onnxruntime's histogram calibrators stack per-batch outputs.
        batch = max(d for d in range(1, max(1, min(batch, len(slices))) + 1) if len(slices) % d == 0)
        self.slices, self.input_name, self.batch = slices, input_name, batch
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self.slices), self.batch):
            yield {self.input_name: self.slices[start:start + self.batch]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = self._batches()
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self._batches()
