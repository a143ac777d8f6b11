"""One CT slice as the SDK receives it: HU on its own grid, its spacing and orientation.

Every input kind (array, DICOM, NIfTI) becomes a :class:`SliceInput`. The model was
trained on the radiological view (rows anterior -> posterior, columns patient right ->
left); :class:`Orientation` maps a stored slice onto that view and back, so the label
map is returned pixel for pixel on the slice as stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError, LiverLesionError
from ..grid import ModelGrid, check_spacing, to_model_grid

#: Largest angle (degrees) between a slice's normal and the patient's feet-head axis still taken as axial.
MAX_TILT_DEG = 15.0

_ACCEPTED = "a 2D numpy array (rows, cols) of Hounsfield units, integer or floating point, all values finite"


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

    def canonical_spacing(self, spacing: Sequence[float]) -> tuple[float, float]:
        row_mm, col_mm = (float(v) for v in spacing)
        return (col_mm, row_mm) if self.transpose else (row_mm, col_mm)

    def to_dict(self) -> dict[str, bool]:
        return {"transpose": self.transpose, "flip_rows": self.flip_rows, "flip_cols": self.flip_cols}


IDENTITY = Orientation()


def check_axial(row_dir: ArrayLike, col_dir: ArrayLike, *, max_tilt_deg: float = MAX_TILT_DEG,
                what: str = "slice", error: type[LiverLesionError] = InputError) -> tuple[np.ndarray, np.ndarray]:
    """Refuse a slice whose normal is more than ``max_tilt_deg`` from the feet-head axis.

    The directions may be in LPS or RAS patient coordinates (the check only uses the
    normal's components' sizes); returns them as float arrays.
    """
    try:
        r = np.asarray(row_dir, dtype=float)
        c = np.asarray(col_dir, dtype=float)
    except (TypeError, ValueError):
        r = c = np.zeros(0)
    if r.shape != (3,) or c.shape != (3,) or not (np.isfinite(r).all() and np.isfinite(c).all()):
        raise error(f"{what}: orientation needs two 3-vectors of direction cosines, got {row_dir!r}, {col_dir!r}")
    normal = np.cross(r, c)
    norm = float(np.linalg.norm(normal))
    if norm < 1e-6:
        raise error(f"{what}: the orientation's row and column directions {row_dir!r}, {col_dir!r} are parallel")
    tilt = float(np.degrees(np.arccos(min(1.0, abs(normal[2]) / norm))))
    if tilt > max_tilt_deg:
        plane = "sagittal" if abs(normal[0]) >= abs(normal[1]) else "coronal"
        kind = f"a {plane} slice" if tilt > 60 else "an oblique (tilted) slice"
        hint = " (raise max_tilt_deg to accept a gantry tilt)" if tilt <= 60 else ""
        raise error(
            f"{what} is {kind}: its normal is {tilt:.1f} degrees from the feet-head axis; accepted: axial "
            f"slices, tilted at most {max_tilt_deg:g} degrees{hint}"
        )
    return r, c


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


def check_hu_array(array: Any, what: str = "slice", error: type[LiverLesionError] = InputError) -> np.ndarray:
    """Validate a 2D HU slice and return it as a float32 copy owned by the SDK."""
    if not isinstance(array, np.ndarray):
        raise error(f"{what}: got a {type(array).__name__}; accepted: {_ACCEPTED}")
    kind = array.dtype.kind
    if kind not in "iuf":
        raise error(f"{what}: dtype {array.dtype} is not numeric HU; accepted: {_ACCEPTED}")
    if array.ndim != 2:
        raise error(f"{what}: shape {array.shape} is not 2D; accepted: {_ACCEPTED} (pick one slice of a volume)")
    if array.size == 0:
        raise error(f"{what}: the array of shape {array.shape} is empty; accepted: {_ACCEPTED}")
    hu = array.astype(np.float32)  # always a copy: later changes by the caller cannot reach the SDK
    if kind == "f" and not np.isfinite(hu).all():
        bad = int(hu.size - np.count_nonzero(np.isfinite(hu)))
        raise error(f"{what}: {bad} pixel(s) are NaN or infinite; accepted: {_ACCEPTED}")
    return hu


@dataclass(frozen=True, eq=False)
class SliceInput:
    """A validated slice: HU (float32, as stored), spacing (row_mm, col_mm), orientation, provenance."""

    hu: np.ndarray
    spacing_mm: tuple[float, float]
    orientation: Orientation = IDENTITY
    #: JSON-able description of where the slice came from (kind, path, SOP instance, frame, index...).
    source: dict[str, Any] = field(default_factory=dict)
    #: The pydicom Dataset, when the slice came from DICOM (needed for DICOM SEG/SR output).
    dataset: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing_mm", check_spacing(self.spacing_mm))

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.hu.shape[0]), int(self.hu.shape[1])

    @property
    def canonical_spacing(self) -> tuple[float, float]:
        return self.orientation.canonical_spacing(self.spacing_mm)

    def canonical_hu(self) -> np.ndarray:
        """The slice in the radiological view the model was trained on."""
        return self.orientation.to_canonical(self.hu)

    def on_model_grid(self, grid: ModelGrid) -> np.ndarray:
        """HU resampled onto the model grid (float32, rows x cols of ``grid``)."""
        return to_model_grid(self.canonical_hu(), self.canonical_spacing, grid)
