"""Data in: LiTS volumes, the lesion-slice dataset, and synthetic phantoms in both formats."""

from __future__ import annotations

from .lesion_slices import LesionSlice, read_lesion_slices, write_lesion_slices
from .lits import (
                   LitsCase,
                   LitsSlice,
                   LitsVolume,
                   find_lits_cases,
                   iter_lits_slices,
                   network_input,
                   read_lits_case,
                   select_slices,
)
from .phantom import generate_phantoms

__all__ = [
    "LesionSlice", "LitsCase", "LitsSlice", "LitsVolume", "find_lits_cases", "generate_phantoms",
    "iter_lits_slices", "network_input", "read_lesion_slices", "read_lits_case", "select_slices",
    "write_lesion_slices",
]
