"""The affine between a stored slice's pixel grid and the model grid, as GridSample thetas.

Conventions (ONNX ``GridSample`` / ``AffineGrid``, ``align_corners=1``):

- coordinates are normalised (x, y), x along columns, y along rows; -1 and +1 are the centres of the
  first and last pixel, so a side of n pixels has a step of 2 / (n - 1);
- ``theta`` maps model-grid (x, y, 1) to stored-slice (x, y): the graph samples the slice as stored;
- ``theta_back`` maps stored-slice (x, y, 1) to model-grid (x, y): the labels' way back;
- centres meet (no translation), as ``grid.to_model_grid`` aligns the centres of both grids;
- ``Orientation`` flips negate a canonical axis and its transpose swaps x and y, as
  ``Orientation.to_canonical`` applies them (transpose first, then the flips);
- ``theta_back`` adds :data:`TIE_BIAS_PX` model pixels on both axes, so that GridSample's nearest
  mode (ties to even) picks scipy's neighbour (ties upwards) on exact half-pixel ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from .errors import InputError
from .grid import ModelGrid, check_spacing

#: Model pixels added to the way back's sample point: larger than float32 fuzz (~1e-5 px), smaller than
#: any genuine near-tie worth keeping (1e-3 px turned ~0.1% of real near-ties over).
TIE_BIAS_PX = 3e-5


class Flips(Protocol):
    """What :func:`slice_to_model_theta` reads of an orientation (``sdk.geometry.Orientation`` has it)."""

    transpose: bool
    flip_rows: bool
    flip_cols: bool


def _sides(shape: Any) -> tuple[int, int]:
    """(rows, cols) of a stored slice: two integers of at least 2 (a side of 1 has no normalised step)."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or len(shape) != 2 or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 2 for v in shape):
        raise InputError(f"slice shape {shape!r:.60} is not accepted: give (rows, cols), integers of at least 2")
    return int(shape[0]), int(shape[1])


def slice_to_model_theta(shape: Sequence[int], spacing: Sequence[float], orientation: Flips,
                         grid: ModelGrid) -> tuple[np.ndarray, np.ndarray]:
    """(theta, theta_back), each 2 x 3 float32, for a slice stored with ``shape``, ``spacing`` and ``orientation``.

    ``orientation`` is an ``sdk.geometry.Orientation`` (anything with ``transpose``, ``flip_rows`` and
    ``flip_cols`` booleans); ``spacing`` is the stored (row_mm, col_mm).
    """
    rows, cols = _sides(shape)
    row_mm, col_mm = check_spacing(spacing)
    flags = tuple(getattr(orientation, name, None) for name in ("transpose", "flip_rows", "flip_cols"))
    if not all(isinstance(f, (bool, np.bool_)) for f in flags):
        raise InputError(f"orientation {orientation!r:.80} is not accepted: give an sdk.geometry.Orientation")
    if not isinstance(grid, ModelGrid):
        raise InputError(f"grid {grid!r:.60} is not accepted: give a grid.ModelGrid")
    transpose, flip_rows, flip_cols = (bool(f) for f in flags)
    # the canonical view (after the transpose) and its spacing, as Orientation.canonical_* define them
    (hc, wc), (rc, cc) = ((cols, rows), (col_mm, row_mm)) if transpose else ((rows, cols), (row_mm, col_mm))
    (hm, wm), (rm, cm) = grid.size, grid.spacing_mm
    ky = (rm / rc) * (hm - 1) / (hc - 1)  # canonical normalised y per model normalised y
    kx = (cm / cc) * (wm - 1) / (wc - 1)
    sy = -ky if flip_rows else ky
    sx = -kx if flip_cols else kx
    bx, by = 2.0 * TIE_BIAS_PX / (wm - 1), 2.0 * TIE_BIAS_PX / (hm - 1)  # the bias in model normalised units
    # the 2 x 2 part is a signed scaling, transposed or not: its inverse is written out (np.linalg costs ~10 us)
    if transpose:  # the stored x (column) runs along the canonical rows, the stored y along its columns
        theta = [[0.0, sy, 0.0], [sx, 0.0, 0.0]]
        theta_back = [[0.0, 1.0 / sx, bx], [1.0 / sy, 0.0, by]]
    else:
        theta = [[sx, 0.0, 0.0], [0.0, sy, 0.0]]
        theta_back = [[1.0 / sx, 0.0, bx], [0.0, 1.0 / sy, by]]
    return np.array(theta, np.float32), np.array(theta_back, np.float32)


class _Unflipped:
    """The orientation of a slice stored in the radiological view (``sdk.geometry.IDENTITY``'s flags)."""

    transpose = flip_rows = flip_cols = False


UNFLIPPED: Flips = _Unflipped()


def slice_graph_feeds(slices: Sequence[tuple[np.ndarray, Sequence[float], Flips]], grid: ModelGrid
                      ) -> dict[str, np.ndarray]:
    """The slice graph's inputs for (HU as stored, spacing, orientation) of one stored shape; rescale (1, 0)."""
    thetas = [slice_to_model_theta(hu.shape, spacing, orientation, grid) for hu, spacing, orientation in slices]
    first = slices[0][0]
    pixels = first[None, None] if len(slices) == 1 else np.stack([hu for hu, _, _ in slices])[:, None]
    return {"pixels": np.asarray(pixels, dtype=np.float32),
            "rescale": np.tile(np.array([[1.0, 0.0]], np.float32), (len(slices), 1)),
            "theta": np.stack([t for t, _ in thetas]), "theta_back": np.stack([b for _, b in thetas])}
