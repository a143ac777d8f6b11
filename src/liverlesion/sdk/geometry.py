"""Where a slice's pixels lie: its orientation, and the transform to the model grid and back.

The model was trained on the radiological view (rows anterior -> posterior, columns patient
right -> left) on a fixed grid (``grid.ModelGrid``). Forward, :func:`to_model` turns a stored
slice into that view (:class:`Orientation`) and resamples it onto the grid (bilinear); back,
:func:`to_input` brings a model-grid map to the slice as stored, pixel for pixel, through a
map of model-grid indices built once per geometry (nearest neighbour, the same
``grid.from_model_grid``) and cached, bounded by bytes (:data:`GEOMETRY_CACHE_BYTES`). Where
that map is separable (no transposition: each input row takes one model row, each input
column one model column) it is applied row-wise then column-wise, which reads 0.5 KB of
indices instead of 1 MB per 512 x 512 slice.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError, LiverLesionError
from ..grid import ModelGrid, Spacing, check_spacing, from_model_grid, to_model_grid

#: Largest angle (degrees) between a slice's normal and the patient's feet-head axis still taken as axial.
MAX_TILT_DEG = 15.0
#: Direction cosines must be unit vectors, and the row and column directions orthogonal, within this
#: (|norm - 1| and |cosine of their angle|; real files write 6 decimals or more, about 1e-6).
ORIENTATION_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Orientation:
    """Flips (after an optional transpose) that turn a stored slice into the radiological view."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """Stored slice -> radiological view (a view, no copy)."""
        if self.transpose:
            array = array.T
        if self.flip_rows:
            array = array[::-1]
        if self.flip_cols:
            array = array[:, ::-1]
        return array

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """Radiological view -> stored slice (the inverse of :meth:`to_canonical`)."""
        if self.flip_cols:
            array = array[:, ::-1]
        if self.flip_rows:
            array = array[::-1]
        if self.transpose:
            array = array.T
        return array

    def canonical_shape(self, shape: Sequence[int]) -> tuple[int, int]:
        rows, cols = (int(v) for v in shape)
        return (cols, rows) if self.transpose else (rows, cols)

    def canonical_spacing(self, spacing: Sequence[float]) -> Spacing:
        spacing = check_spacing(spacing)  # returned as is when checked already (a slice's spacing is)
        return spacing.transposed() if self.transpose else spacing

    def to_dict(self) -> dict[str, bool]:
        return {"transpose": self.transpose, "flip_rows": self.flip_rows, "flip_cols": self.flip_cols}


IDENTITY = Orientation()


def check_max_tilt(max_tilt_deg: Any) -> float:
    """``max_tilt_deg`` as a float, if it is a real number in [0, 90] (NaN would turn the check off)."""
    if isinstance(max_tilt_deg, (bool, np.bool_)) or not isinstance(max_tilt_deg, Real) \
            or not 0 <= float(max_tilt_deg) <= 90:  # NaN fails the comparison
        raise InputError(f"max_tilt_deg={max_tilt_deg!r} is not accepted: give a number of degrees from 0 to 90")
    return float(max_tilt_deg)


def check_axial(row_dir: ArrayLike, col_dir: ArrayLike, *, max_tilt_deg: float = MAX_TILT_DEG,
                what: str = "slice", error: type[LiverLesionError] = InputError,
                unit: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Refuse a slice whose normal is more than ``max_tilt_deg`` from the feet-head axis.

    The row and column directions must be orthogonal within :data:`ORIENTATION_TOLERANCE`,
    and with ``unit`` (DICOM direction cosines) unit vectors too; NIfTI passes affine
    columns, scaled by the voxel size. LPS or RAS coordinates alike (only the normal's
    components' sizes are used); returns the directions as float arrays.
    """
    limit = check_max_tilt(max_tilt_deg)
    try:
        r = np.asarray(row_dir, dtype=float)
        c = np.asarray(col_dir, dtype=float)
    except (TypeError, ValueError):
        r = c = np.zeros(0)
    if r.shape != (3,) or c.shape != (3,) or not (np.isfinite(r).all() and np.isfinite(c).all()):
        raise error(f"{what}: orientation needs two 3-vectors of direction cosines, got {row_dir!r}, {col_dir!r}")
    tol = ORIENTATION_TOLERANCE
    lengths = (float(np.linalg.norm(r)), float(np.linalg.norm(c)))
    if min(lengths) == 0 or (unit and max(abs(n - 1) for n in lengths) > tol):
        raise error(f"{what}: the orientation's row and column directions {_vec(r)}, {_vec(c)} have lengths "
                    f"{lengths[0]:.6g}, {lengths[1]:.6g}; accepted: unit vectors (within {tol:g})")
    cosine = float(np.dot(r, c)) / (lengths[0] * lengths[1])
    if abs(cosine) > tol:
        angle = math.degrees(math.acos(max(-1.0, min(1.0, cosine))))
        raise error(f"{what}: the orientation's row and column directions {_vec(r)}, {_vec(c)} are "
                    f"{angle:.2f} degrees apart; accepted: orthogonal directions (|cosine| <= {tol:g})")
    normal = np.cross(r, c)
    norm = float(np.linalg.norm(normal))
    tilt = float(np.degrees(np.arccos(min(1.0, abs(normal[2]) / norm))))
    if tilt > limit:
        plane = "sagittal" if abs(normal[0]) >= abs(normal[1]) else "coronal"
        kind = f"a {plane} slice" if tilt > 60 else "an oblique (tilted) slice"
        hint = " (raise max_tilt_deg to accept a gantry tilt)" if tilt <= 60 else ""
        raise error(
            f"{what} is {kind}: its normal is {tilt:.1f} degrees from the feet-head axis; accepted: axial "
            f"slices, tilted at most {limit:g} degrees{hint}"
        )
    return r, c


def _vec(v: np.ndarray) -> str:
    return "(" + ", ".join(f"{x:.6g}" for x in v) + ")"


def orientation_from_directions(row_dir: ArrayLike, col_dir: ArrayLike, *,
                                max_tilt_deg: float = MAX_TILT_DEG, what: str = "slice",
                                error: type[LiverLesionError] = InputError) -> Orientation:
    """Orientation of an axial slice from its direction cosines in patient LPS coordinates.

    ``row_dir`` is the direction of increasing column index along a row, ``col_dir`` that of
    increasing row index (DICOM ImageOrientationPatient order); see :func:`check_axial`.
    """
    r, c = check_axial(row_dir, col_dir, max_tilt_deg=max_tilt_deg, what=what, error=error)
    # Canonical view: columns along +x (patient left), rows along +y (posterior), as LPS DICOM displays.
    transpose = abs(r[1]) > abs(r[0])
    along_cols, along_rows = (c, r) if transpose else (r, c)
    return Orientation(transpose=bool(transpose), flip_rows=bool(along_rows[1] < 0),
                       flip_cols=bool(along_cols[0] < 0))


# -- forward: stored slice -> model grid ------------------------------------------------------
def to_model(hu: np.ndarray, spacing: tuple[float, float], orientation: Orientation,
             grid: ModelGrid) -> np.ndarray:
    """HU of a stored slice in the radiological view, resampled onto ``grid`` (float32)."""
    return to_model_grid(orientation.to_canonical(hu), orientation.canonical_spacing(spacing), grid)


# -- back: model grid -> stored slice ---------------------------------------------------------
#: Bytes of geometry maps kept for repeated geometries (a 512 x 512 slice's map is 1 MiB). A map larger
#: than a quarter of this is not kept, so one huge slice cannot evict a scanner's usual geometries.
GEOMETRY_CACHE_BYTES = 64 * 2**20


class GeometryCache:
    """Least-recently-used maps keyed by geometry, bounded by their bytes (not their count); thread-safe.

    Read at each store: :data:`GEOMETRY_CACHE_BYTES`, or ``max_bytes`` when given.
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value for ``key``, made by ``make()`` (outside the lock) and kept if it fits."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        value = make()
        size = _nbytes(value)
        budget = GEOMETRY_CACHE_BYTES if self.max_bytes is None else self.max_bytes
        if size > budget // 4:
            return value
        with self._lock:
            if key not in self._items:
                self._items[key] = (value, size)
                self._bytes += size
            while self._bytes > budget and self._items:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def _nbytes(value: Any) -> int:
    """Bytes held by a cached map (an array, a tuple of arrays, or None), plus a little per entry."""
    arrays = value if isinstance(value, tuple) else (value,)
    return 256 + sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))


_SOURCE_INDEX = GeometryCache()
_SEPARABLE_INDEX = GeometryCache()


def clear_geometry_caches() -> None:
    """Drop every cached geometry map (they are rebuilt on the next slice of that geometry)."""
    _SOURCE_INDEX.clear()
    _SEPARABLE_INDEX.clear()


def source_index(grid: ModelGrid, shape: tuple[int, int], spacing: tuple[float, float],
                 orientation: Orientation) -> np.ndarray:
    """For each input pixel, the flat model-grid index its label comes from (-1 outside the grid).

    Read-only and cached (bounded by bytes): a scanner sends the same geometry slice after slice.
    """
    key = (grid, tuple(shape), tuple(spacing), orientation)
    return _SOURCE_INDEX.get(key, lambda: _source_index(grid, shape, spacing, orientation))


def _source_index(grid: ModelGrid, shape: tuple[int, int], spacing: tuple[float, float],
                  orientation: Orientation) -> np.ndarray:
    model_index = np.arange(grid.size[0] * grid.size[1], dtype=np.int32).reshape(grid.size)
    canonical = from_model_grid(model_index, grid, orientation.canonical_shape(shape),
                                orientation.canonical_spacing(spacing), fill=-1)
    index = np.ascontiguousarray(orientation.from_canonical(canonical))
    index.flags.writeable = False
    return index


def separable_index(grid: ModelGrid, shape: tuple[int, int], spacing: tuple[float, float],
                    orientation: Orientation, index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(model row per input row, model column per input column), -1 outside; None if not separable.

    ``index``: this geometry's :func:`source_index`, when the caller has it (a map too large
    to be cached is then not built twice).
    """
    key = (grid, tuple(shape), tuple(spacing), orientation)
    return _SEPARABLE_INDEX.get(key, lambda: _separable_index(
        source_index(grid, shape, spacing, orientation) if index is None else index, grid.size[1]))


def _separable_index(index: np.ndarray, cols: int) -> tuple[np.ndarray, np.ndarray] | None:
    inside = index >= 0
    rows_of = np.where(inside.any(axis=1), np.max(np.where(inside, index // cols, -1), axis=1), -1)
    cols_of = np.where(inside.any(axis=0), np.max(np.where(inside, index % cols, -1), axis=0), -1)
    rebuilt = np.where((rows_of[:, None] >= 0) & (cols_of[None, :] >= 0),
                       rows_of[:, None] * cols + cols_of[None, :], -1)
    if not np.array_equal(rebuilt, index):
        return None
    rows_of, cols_of = rows_of.astype(np.intp), cols_of.astype(np.intp)
    rows_of.flags.writeable = cols_of.flags.writeable = False  # shared by threads through the cache
    return rows_of, cols_of


def _gather_separable(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, fill: Any) -> np.ndarray:
    """``values[rows][:, cols]`` with ``fill`` where an index is -1 (a fill row and column appended)."""
    padded = np.full((values.shape[0] + 1, values.shape[1] + 1), fill, dtype=values.dtype)
    padded[:-1, :-1] = values
    return padded.take(rows, axis=0).take(cols, axis=1)


def _gather(values: np.ndarray, index: np.ndarray, fill: Any) -> np.ndarray:
    """``values.flat[index]`` with ``fill`` where index is -1 (a sentinel appended at the end)."""
    flat = np.empty(values.size + 1, dtype=values.dtype)
    flat[:-1] = values.ravel()
    flat[-1] = fill
    return flat[index]


def to_input(values: np.ndarray, grid: ModelGrid, shape: tuple[int, int], spacing: tuple[float, float],
             orientation: Orientation, fill: Any = 0) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (a map on ``grid``) on the stored slice's grid, and the :func:`source_index` used."""
    index = source_index(grid, shape, spacing, orientation)
    separable = separable_index(grid, shape, spacing, orientation, index)
    if separable is not None:
        return _gather_separable(values, *separable, fill), index
    return _gather(values, index, fill), index
