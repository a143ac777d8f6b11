"""A slice given as a 2D numpy array of HU, already in the radiological view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import InputError
from ...grid import check_spacing
from .hu import check_hu_array
from .slice import SliceInput


def from_array(hu: Any, spacing: Sequence[float] | None = None, *,
               default_spacing: Sequence[float] | None = None, allow_non_hu: bool = False,
               max_side: int | None = None) -> SliceInput:
    """A slice given as a 2D array in HU, taken to be in the radiological view already.

    The values must be plausible CT HU (see :func:`check_hu_array`) unless ``allow_non_hu``.
    """
    chosen = spacing if spacing is not None else default_spacing
    if chosen is None:
        raise InputError("a slice given as an array needs its pixel spacing: pass spacing=(row_mm, col_mm)")
    spacing_mm = check_spacing(chosen)
    array = check_hu_array(hu, allow_non_hu=allow_non_hu, max_side=max_side)
    return SliceInput(hu=array, spacing_mm=spacing_mm, source={"kind": "array", "default_spacing": spacing is None})
