"""HU a slice must hold: a finite 2D numeric array of plausible CT values, copied as float32.

Every input kind ends here, so a raw stored-value image (HU + 1024) or an image that is not CT
is refused the same way whatever it came in.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import InputError, LiverLesionError
from ...input_limits import check_side

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
