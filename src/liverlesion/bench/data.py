"""The slices a benchmark runs on: HU at their native size, spacing, labels and slice class.

Sources: a lesion-slice dataset (``dataset.json``; 5-label masks and a class per slice),
a LiTS folder (labels 0/1/2, no class; slices with liver, spread over the cases), a
folder holding ``lesion_slices/`` or ``lits/`` (the phantom layout), or, by default,
lesion-slice phantoms generated in memory. Numpy only (LiTS needs nibabel).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.lesion_slices import INDEX_FILE, read_lesion_slices
from ..errors import DataFormatError, InputError

#: Default size of generated phantom slices: a typical CT matrix.
PHANTOM_SIZE = 512


@dataclass(frozen=True)
class BenchSlice:
    """One slice: HU (float32, as stored), spacing (row, col) mm, its label map, its class if known."""

    case_id: str
    hu: np.ndarray
    spacing_mm: tuple[float, float]
    labels: np.ndarray
    lesion_class: str | None


@dataclass(frozen=True)
class BenchData:
    slices: list[BenchSlice]
    description: str

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def classes(self) -> list[str] | None:
        """True slice classes, when every slice has one (lesion slices; not LiTS)."""
        classes = [s.lesion_class for s in self.slices]
        return None if any(c is None for c in classes) else [str(c) for c in classes]


def load_bench_data(data: str | Path | None = None, count: int = 16, *, seed: int = 0,
                    size: int = PHANTOM_SIZE) -> BenchData:
    """``count`` slices from ``data`` (see the module docstring), or generated phantoms."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(f"count={count!r} is not accepted: give the number of slices, >= 1")
    if data is None:
        return _phantoms(count, seed, size)
    root = Path(data)
    if not root.is_dir():
        raise DataFormatError(f"benchmark data {root} is not a folder: give a lesion-slice dataset or a LiTS "
                              "folder")
    if (root / INDEX_FILE).is_file():
        return _lesion_slices(root, count)
    if (root / "lesion_slices" / INDEX_FILE).is_file():
        return _lesion_slices(root / "lesion_slices", count)
    return _lits(root / "lits" if (root / "lits").is_dir() else root, count)


def _spread(total: int, count: int) -> list[int]:
    """Up to ``count`` indices spread evenly over ``range(total)``."""
    return sorted({int(i) for i in np.linspace(0, total - 1, min(count, total)).round()})


def _phantoms(count: int, seed: int, size: int) -> BenchData:
    from ..data.phantom import lesion_slice_phantoms

    items = lesion_slice_phantoms(seed, count, size=size)
    slices = [BenchSlice(s.case_id, s.hu.astype(np.float32), s.spacing_mm, s.mask, s.lesion_class)
              for s in items]
    return BenchData(slices, f"{count} generated lesion-slice phantoms ({size} x {size}, seed {seed}; "
                             "synthetic, not clinical data)")


def _lesion_slices(root: Path, count: int) -> BenchData:
    items = read_lesion_slices(root)
    chosen = [items[i] for i in _spread(len(items), count)]
    slices = [BenchSlice(s.case_id, s.hu.astype(np.float32), s.spacing_mm, s.mask, s.lesion_class)
              for s in chosen]
    return BenchData(slices, f"{len(slices)} of the {len(items)} slices of lesion-slice dataset {root}")


def _lits(root: Path, count: int) -> BenchData:
    from ..data.lits import find_lits_cases, read_lits_case, select_slices

    cases = find_lits_cases(root)
    per_case = -(-count // len(cases))
    slices: list[BenchSlice] = []
    for case in cases:
        volume = read_lits_case(case)
        indices = select_slices(volume, require="liver")
        for k in _spread(len(indices), per_case) if len(indices) else []:
            index = int(indices[k])
            slices.append(BenchSlice(f"{case.case_id}:{index}", volume.hu[index].copy(), volume.spacing_mm,
                                     volume.labels[index].copy(), None))
        if len(slices) >= count:
            break
    if not slices:
        raise DataFormatError(f"no LiTS slice with liver in {root}")
    return BenchData(slices[:count], f"{len(slices[:count])} liver slices of the LiTS folder {root} "
                                     f"({len(cases)} cases)")
