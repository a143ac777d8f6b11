"""Reading LiTS 2017 volumes: axial slices in HU, their labels and pixel spacing.

Layout: ``volume-N.nii`` with ``segmentation-N.nii`` (either may be ``.nii.gz``),
anywhere below the root folder (the challenge ships two "Training Batch" folders).
Segmentation labels: 0 background, 1 liver, 2 tumor; integral floats are accepted
(some LiTS segmentations are stored as float), anything else is refused.

Orientation: every array is returned as a radiologist views an axial DICOM image,
whatever the stored orientation. Arrays are (slices, rows, cols); rows run anterior
-> posterior, columns run patient right -> left (image left = patient right), slice
index runs inferior -> superior. This is the volume's nearest canonical (RAS+)
orientation, as ``nibabel.as_closest_canonical`` finds it from the affine, with
the first two axes reversed and transposed. The segmentation is taken to lie on
the volume's voxel grid, as in LiTS, so the volume's affine orients both.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFormatError, InputError
from ..errors import require as require_module
from ..grid import ModelGrid, check_spacing, to_model_grid
from ..nifti_header import check_pixdims, check_plane_size, oriented_axes
from ..preprocessing import Preprocessing, window_channels

#: File names of the LiTS layout: volume-N.nii[.gz], segmentation-N.nii[.gz].
LITS_FILE_RE = re.compile(r"^(volume|segmentation)-(\d+)\.nii(\.gz)?$")
#: Lowest per-slice maximum label each ``require`` choice accepts.
_LOWEST_LABEL = {"any": 0, "liver": 1, "tumor": 2}
#: Largest label value in a LiTS segmentation (2 = tumor).
_MAX_LABEL = 2


@dataclass(frozen=True)
class LitsCase:
    """One LiTS case: the paths of its volume and its segmentation."""

    case_id: int
    volume_path: Path
    segmentation_path: Path


@dataclass
class LitsVolume:
    """A LiTS case in memory, in the module's fixed orientation."""

    case: LitsCase
    hu: np.ndarray  # float32 (slices, rows, cols), HU
    labels: np.ndarray  # uint8, same shape: 0 background, 1 liver, 2 tumor
    spacing_mm: tuple[float, float]  # in-plane (row, col)
    slice_thickness_mm: float


@dataclass(frozen=True)
class LitsSlice:
    """One axial slice of a LiTS case."""

    case_id: int
    index: int
    hu: np.ndarray  # float32 (rows, cols)
    labels: np.ndarray  # uint8 (rows, cols)
    spacing_mm: tuple[float, float]


def find_lits_cases(root: str | Path) -> list[LitsCase]:
    """The cases below ``root``, sorted by case id; every volume needs its segmentation and back."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"LiTS folder {root} does not exist or is not a folder")
    found: dict[str, dict[int, Path]] = {"volume": {}, "segmentation": {}}
    for path in sorted(root.rglob("*.nii*")):
        match = LITS_FILE_RE.match(path.name)
        # Hidden folders hold half-written output (ours included): never read them.
        if match is None or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        kind, number = match.group(1), int(match.group(2))
        if number in found[kind]:
            raise DataFormatError(f"two {kind} files for case {number}: {found[kind][number]} and {path}")
        found[kind][number] = path
    volumes, segmentations = found["volume"], found["segmentation"]
    for number in sorted(set(volumes) ^ set(segmentations)):
        if number in volumes:
            raise DataFormatError(f"{volumes[number]} has no segmentation-{number}.nii[.gz] beside it")
        raise DataFormatError(f"{segmentations[number]} has no volume-{number}.nii[.gz] beside it")
    if not volumes:
        raise DataFormatError(f"no LiTS cases in {root}: expected volume-N.nii[.gz] with segmentation-N.nii[.gz]")
    return [LitsCase(n, volumes[n], segmentations[n]) for n in sorted(volumes)]


def read_lits_case(case: LitsCase) -> LitsVolume:
    """Read one case: HU as float32 and labels as uint8, oriented as the module says."""
    nib = require_module("nibabel", "nifti", "Reading LiTS NIfTI files")
    volume = _load(nib, case.volume_path)
    segmentation = _load(nib, case.segmentation_path)
    if volume.shape[:3] != segmentation.shape[:3]:
        raise DataFormatError(
            f"{case.segmentation_path} has shape {segmentation.shape[:3]} but its volume "
            f"{case.volume_path} has shape {volume.shape[:3]}; they must match voxel for voxel"
        )
    what = str(case.volume_path)
    check_pixdims(volume, what)  # a zero pixdim would be read as 1 mm, a NaN one fail in numpy's SVD
    _, ornt = oriented_axes(volume.affine, what)
    check_plane_size(volume.shape, ornt, what)  # before the voxels are read
    hu = _read_hu(volume, case.volume_path)
    labels = _read_labels(segmentation, case.segmentation_path)
    zooms = nib.affines.voxel_sizes(volume.affine)
    canonical_zooms = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(ornt):
        canonical_zooms[int(target)] = float(zooms[axis])
    try:
        spacing = check_spacing((canonical_zooms[1], canonical_zooms[0]))
    except InputError as exc:
        raise DataFormatError(f"{case.volume_path}: {exc} (read from the NIfTI affine)") from None
    thickness = canonical_zooms[2]
    if not (np.isfinite(thickness) and thickness > 0):
        raise DataFormatError(f"{case.volume_path}: slice spacing {thickness} mm in the affine is not positive")
    return LitsVolume(case=case, hu=_display(nib, hu, ornt), labels=_display(nib, labels, ornt),
                      spacing_mm=spacing, slice_thickness_mm=thickness)


def select_slices(volume: LitsVolume, *, require: str = "any", every: int = 1) -> np.ndarray:
    """Indices of slices with anything / liver (labels 1 or 2) / tumor (label 2), then every ``every``-th."""
    if require not in _LOWEST_LABEL:
        raise InputError(f"require={require!r} is not accepted; use one of {', '.join(_LOWEST_LABEL)}")
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise InputError(f"every={every!r} is not accepted; give an integer >= 1")
    per_slice_max = volume.labels.reshape(volume.labels.shape[0], -1).max(axis=1)
    return np.flatnonzero(per_slice_max >= _LOWEST_LABEL[require])[::every]


def iter_lits_slices(root: str | Path, *, require: str = "liver", every: int = 1) -> Iterator[LitsSlice]:
    """Selected slices of every case below ``root``, case by case (one volume in memory at a time)."""
    for case in find_lits_cases(root):
        volume = read_lits_case(case)
        for index in select_slices(volume, require=require, every=every):
            # Copies, so that a kept slice does not keep its whole volume alive.
            yield LitsSlice(case_id=case.case_id, index=int(index), hu=volume.hu[index].copy(),
                            labels=volume.labels[index].copy(), spacing_mm=volume.spacing_mm)


def network_input(hu_slice: np.ndarray, spacing_mm: Sequence[float], grid: ModelGrid,
                  preprocessing: Preprocessing) -> np.ndarray:
    """The network's (C, H, W) float32 input for one HU slice: resampled to the grid, then windowed."""
    on_grid = to_model_grid(np.asarray(hu_slice, dtype=np.float32), spacing_mm, grid, order=1)
    return window_channels(on_grid[None, None], preprocessing.windows)[0]


def _load(nib: Any, path: Path) -> Any:
    """Open a NIfTI header (pixel data is read later) and check it holds one 3D volume."""
    try:
        image = nib.load(str(path))
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError,
            nib.spatialimages.HeaderDataError) as exc:
        raise DataFormatError(f"{path} cannot be read as NIfTI: {exc}") from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataFormatError(f"{path} is a {type(image).__name__}, not a NIfTI image")
    shape = image.shape
    # A trailing time axis of length 1 is still one volume.
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)) or min(shape) < 1:
        raise DataFormatError(f"{path} has shape {shape}; expected a 3D volume (x, y, slices)")
    return image


def _pixels(read: Any, path: Path) -> np.ndarray:
    """Run ``read()`` and turn any decoding failure into an error naming the file."""
    try:
        data = read()
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise DataFormatError(f"{path}: pixel data cannot be read (truncated or corrupt?): {exc}") from None
    return data[..., 0] if data.ndim == 4 else data


def _read_hu(image: Any, path: Path) -> np.ndarray:
    # float32 straight from the stored type and scaling: no float64 copy of the volume.
    hu = _pixels(lambda: image.get_fdata(caching="unchanged", dtype=np.float32), path)
    if not (np.isfinite(hu.min()) and np.isfinite(hu.max())):
        raise DataFormatError(f"{path} holds NaN or infinite values; expected HU")
    return hu


def _read_labels(image: Any, path: Path) -> np.ndarray:
    data = _pixels(lambda: np.asanyarray(image.dataobj), path)
    if data.dtype.kind not in "uif":
        raise DataFormatError(f"{path} has pixel type {data.dtype}; expected integer labels 0, 1, 2")
    low, high = data.min(), data.max()
    if not (low >= 0 and high <= _MAX_LABEL):  # also catches NaN
        bad = np.unique(data[~((data >= 0) & (data <= _MAX_LABEL))])
        raise DataFormatError(f"{path} has label values {bad[:8].tolist()}; accepted: 0 background, "
                              "1 liver, 2 tumor")
    labels = data.astype(np.uint8)
    if data.dtype.kind == "f" and not np.array_equal(labels, data):
        bad = np.unique(data[labels != data])
        raise DataFormatError(f"{path} has non-integer label values {bad[:8].tolist()}; accepted: 0, 1, 2")
    return labels


def _display(nib: Any, data: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Stored array -> (slices, rows anterior->posterior, cols patient right->left)."""
    canonical = nib.orientations.apply_orientation(data, ornt)  # axes point R, A, S
    return np.ascontiguousarray(canonical[::-1, ::-1, :].transpose(2, 1, 0))
