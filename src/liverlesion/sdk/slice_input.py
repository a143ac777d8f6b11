"""One CT slice as the SDK receives it: HU on its own grid, its spacing and orientation.

Every input kind (array, DICOM, NIfTI) becomes a :class:`SliceInput`. The model was
trained on the radiological view (rows anterior -> posterior, columns patient right ->
left); :class:`Orientation` maps a stored slice onto that view and back, so the label
map is returned pixel for pixel on the slice as stored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError, LiverLesionError
from ..grid import ModelGrid, check_spacing, to_model_grid
from ..input_limits import check_side

#: Largest angle (degrees) between a slice's normal and the patient's feet-head axis still taken as axial.
MAX_TILT_DEG = 15.0
#: Direction cosines must be unit vectors, and the row and column directions orthogonal, within this
#: (|norm - 1| and |cosine of their angle|; real files write 6 decimals or more, about 1e-6).
ORIENTATION_TOLERANCE = 1e-3
#: Every value of a CT slice lies in this range (HU): the signed 16-bit range. Below -1024 only padding
#: outside the reconstruction circle (-2000, -3024, some converters -32768) and lossy-compression
#: undershoot (pydicom's 693_J2KI.dcm reaches -3995); above +3071 only metal on extended-scale scanners.
HU_RANGE = (-32768.0, 32767.0)
#: Physical air and fat (HU): air is -1000, fat about -100; padding outside the reconstruction circle
#: (-2000, -3024...) lies below and does not count.
AIR_OR_FAT_HU = (-1100.0, -100.0)
#: A CT slice of the abdomen holds air or fat (air around the body and in the bowel, subcutaneous fat):
#: at least this share of its pixels lies in :data:`AIR_OR_FAT_HU`. Real slices hold 28 to 75 % (pydicom's
#: CT_small crop of the body: 28 %), phantoms 29 % or more. Raw stored values (HU + 1024) hold none, padding
#: aside; nor does a crop of soft tissue alone (pass allow_non_hu=True).
MIN_AIR_OR_FAT_SHARE = 0.01
#: Pixels sampled (a stride through the slice, coprime to its width) to measure that share.
AIR_OR_FAT_SAMPLES = 4096

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


def check_hu_array(array: Any, what: str = "slice", error: type[LiverLesionError] = InputError, *,
                   allow_non_hu: bool = False, max_side: Any = None, hint: str = "",
                   owned: bool = False) -> np.ndarray:
    """Validate a 2D HU slice and return it as a float32 copy owned by the SDK.

    Shape and size are checked before the copy; then one min / max pass checks that the
    values are finite and, unless ``allow_non_hu``, within :data:`HU_RANGE`, and a sample
    of :data:`AIR_OR_FAT_SAMPLES` pixels that at least :data:`MIN_AIR_OR_FAT_SHARE` of
    them are air or fat (:data:`AIR_OR_FAT_HU`). ``hint`` is added to that refusal (e.g.
    what in a DICOM header may explain it). ``owned``: a float32 array the SDK just made
    is not copied.
    """
    if not isinstance(array, np.ndarray):
        raise error(f"{what}: got a {type(array).__name__}; accepted: {_ACCEPTED}")
    if isinstance(array, np.ma.MaskedArray) and np.ma.is_masked(array):
        raise error(f"{what}: a masked array with {int(np.ma.count_masked(array))} masked pixel(s); the SDK "
                    f"would see the values under the mask; accepted: {_ACCEPTED} (fill the masked pixels "
                    "first, e.g. array.filled(-1024) for air)")
    kind = array.dtype.kind
    if kind not in "iuf":
        raise error(f"{what}: dtype {array.dtype} is not numeric HU; accepted: {_ACCEPTED}")
    if array.ndim != 2:
        raise error(f"{what}: shape {array.shape} is not 2D; accepted: {_ACCEPTED} (pick one slice of a volume)")
    if array.size == 0:
        raise error(f"{what}: the array of shape {array.shape} is empty; accepted: {_ACCEPTED}")
    check_side(array.shape, what, error, max_side=max_side)
    if owned and type(array) is np.ndarray and array.dtype == np.float32:
        hu = array
        lo, hi = float(hu.min()), float(hu.max())
    elif kind == "f":
        # always a copy, of the base class (a np.matrix would make *= a matrix product): later changes by
        # the caller cannot reach the SDK
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused below
            hu = np.array(array, dtype=np.float32)
        lo, hi = float(hu.min()), float(hu.max())  # NaN and inf show in the extremes: one pass each
    else:
        lo, hi = float(array.min()), float(array.max())  # on the integers: half the bytes of float32
        hu = np.array(array, dtype=np.float32)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        cause = f"{bad} pixel(s) are NaN or infinite" if bad else "values overflow float32"
        raise error(f"{what}: {cause}; accepted: {_ACCEPTED}")
    if not allow_non_hu:
        _check_plausible(hu, lo, hi, what, error, hint)
    return hu


def air_or_fat_share(hu: np.ndarray) -> float:
    """Share of a strided sample of ``hu`` (2D) within :data:`AIR_OR_FAT_HU` (about :data:`AIR_OR_FAT_SAMPLES`)."""
    if not hu.flags.c_contiguous:  # a Fortran-ordered copy is read along its own memory order, not copied
        hu = hu.T if hu.T.flags.c_contiguous else np.ascontiguousarray(hu)
    flat = hu.reshape(-1)
    step = max(1, flat.size // AIR_OR_FAT_SAMPLES)
    while step > 1 and math.gcd(step, hu.shape[1]) != 1:  # coprime: the sample walks across every column
        step -= 1
    sample = flat[::step]
    low, high = AIR_OR_FAT_HU
    centre, half = np.float32((low + high) / 2), np.float32((high - low) / 2)
    return int(np.count_nonzero(np.abs(sample - centre) <= half)) / sample.size


def _check_plausible(hu: np.ndarray, lo: float, hi: float, what: str, error: type[LiverLesionError],
                     hint: str) -> None:
    """Refuse values outside :data:`HU_RANGE`, or a slice with too little air or fat."""
    low, high = HU_RANGE
    air, fat = AIR_OR_FAT_HU
    extra = f" ({hint})" if hint else ""
    plausible = (f"CT HU, every value within [{low:g}, {high:g}] and at least {MIN_AIR_OR_FAT_SHARE:.0%} of the "
                 f"pixels air or fat ([{air:g}, {fat:g}] HU)")
    if lo < low or hi > high:
        raise error(f"{what}: values {lo:.6g} to {hi:.6g} are not CT Hounsfield units{extra}; accepted: "
                    f"{plausible} (pass allow_non_hu=True to use them as HU anyway)")
    share = air_or_fat_share(hu)
    if share < MIN_AIR_OR_FAT_SHARE:
        raise error(f"{what}: only {share:.2%} of its pixels are air or fat ([{air:g}, {fat:g}] HU; its values "
                    f"run from {lo:.6g} to {hi:.6g}): too little air or fat for a CT slice of the abdomen; raw "
                    "stored pixel values (HU + 1024, never negative but for padding) look like this: apply the "
                    f"rescale (slope, intercept) first{extra}; accepted: {plausible} (pass allow_non_hu=True "
                    "to use the values as HU anyway, e.g. for a crop of soft tissue alone)")


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
