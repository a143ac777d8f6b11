"""Resampling between a slice's own pixel grid and the model grid.

The model sees slices on a fixed grid (rows x cols pixels of a fixed spacing in mm),
centred on the centre of the input slice. Both directions are defined here once:
training data, calibration data and the SDK all go through these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from .errors import InputError

#: HU used for pixels outside the input slice (air).
AIR_HU = -1024.0
#: Pixel spacings outside this range (mm) are refused as absurd.
SPACING_RANGE_MM = (0.05, 10.0)


@dataclass(frozen=True)
class ModelGrid:
    """The grid the network runs on: ``size`` (rows, cols) pixels of ``spacing_mm``."""

    size: tuple[int, int]
    spacing_mm: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "spacing_mm": list(self.spacing_mm)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelGrid:
        rows, cols = (int(v) for v in data["size"])
        sr, sc = (float(v) for v in data["spacing_mm"])
        return cls(size=(rows, cols), spacing_mm=(sr, sc))


def check_spacing(spacing: Sequence[float] | None) -> tuple[float, float]:
    """Validate an in-plane (row, col) spacing in mm."""
    try:
        values = tuple(float(v) for v in spacing)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(f"pixel spacing must be two numbers (row_mm, col_mm), got {spacing!r}") from None
    lo, hi = SPACING_RANGE_MM
    if len(values) != 2 or not all(np.isfinite(v) and lo <= v <= hi for v in values):
        raise InputError(
            f"pixel spacing {spacing!r} is not plausible: give (row_mm, col_mm), each between {lo} and {hi} mm"
        )
    return values[0], values[1]


def _affine(src_shape: Sequence[int], src_spacing: Sequence[float],
            dst_shape: Sequence[int], dst_spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Diagonal matrix and offset mapping destination pixel indices to source indices (centres aligned)."""
    scale = np.array([d / s for d, s in zip(dst_spacing, src_spacing)])
    src_centre = (np.array(src_shape, dtype=float) - 1.0) / 2.0
    dst_centre = (np.array(dst_shape, dtype=float) - 1.0) / 2.0
    return scale, src_centre - scale * dst_centre


def to_model_grid(image: np.ndarray, spacing: Sequence[float], grid: ModelGrid,
                  *, order: int = 1, fill: float | None = None) -> np.ndarray:
    """Resample a 2D slice (HU, or a label map with ``order=0``) onto the model grid.

    Outside the slice: ``fill``, by default air (-1024 HU) for images and 0 (background)
    for label maps.
    """
    if fill is None:
        fill = AIR_HU if order else 0
    spacing = check_spacing(spacing)
    if image.ndim != 2:
        raise InputError(f"expected a 2D slice, got an array of shape {image.shape}")
    if tuple(image.shape) == grid.size and np.allclose(spacing, grid.spacing_mm):
        return image.astype(np.float32 if order else image.dtype, copy=False)
    matrix, offset = _affine(image.shape, spacing, grid.size, grid.spacing_mm)
    source = image.astype(np.float32, copy=False) if order else image
    return ndimage.affine_transform(source, matrix, offset=offset, output_shape=grid.size,
                                    order=order, mode="constant", cval=fill, prefilter=False)


def from_model_grid(labels: np.ndarray, grid: ModelGrid, shape: Sequence[int],
                    spacing: Sequence[float], *, fill: int = 0) -> np.ndarray:
    """Bring a label map (nearest neighbour) from the model grid back onto a slice's own grid."""
    spacing = check_spacing(spacing)
    if tuple(labels.shape) == tuple(shape) and np.allclose(spacing, grid.spacing_mm):
        return labels
    matrix, offset = _affine(grid.size, grid.spacing_mm, shape, spacing)
    return ndimage.affine_transform(labels, matrix, offset=offset, output_shape=tuple(shape),
                                    order=0, mode="constant", cval=fill, prefilter=False)
