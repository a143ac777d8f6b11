"""CT series in DICOM, synthesised from HU volumes on a real CT header (pydicom's CT_small.dcm).

Each slice is a copy of the real header with its own SOP instance, position and pixels, so the
files carry what a scanner writes (rescale, orientation, spacing, thickness, study and patient).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_files import real

#: Rescale the files use (HU = stored * 1 - 1024), as CT_small.dcm does.
INTERCEPT = -1024.0


def ct_series(volume_hu: np.ndarray, spacing_mm: Sequence[float] = (0.7, 0.7), slice_mm: float = 2.5, *,
              series_uid: str | None = None, description: str = "synthetic liver series",
              study_uid: str | None = None, first_z_mm: float = -100.0, modality: str = "CT",
              row_dir: Sequence[float] = (1.0, 0.0, 0.0), col_dir: Sequence[float] = (0.0, 1.0, 0.0),
              positions_mm: Sequence[float] | None = None) -> list[pydicom.Dataset]:
    """One Dataset per slice of ``volume_hu`` (slices, rows, cols), in volume order.

    Slice k sits at ``first_z_mm + k * slice_mm`` along the normal row_dir x col_dir (or at
    ``positions_mm[k]``); InstanceNumber is k + 1. Shuffle or rewrite the list to make bad series.
    """
    template = pydicom.dcmread(real("CT_small.dcm"))
    volume = np.asarray(volume_hu)
    if volume.ndim != 3:
        raise ValueError(f"volume_hu must be slices x rows x cols, got shape {volume.shape}")
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    row, col = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(row, col)
    corner = np.array([-0.5 * volume.shape[2] * spacing_mm[1], -0.5 * volume.shape[1] * spacing_mm[0], 0.0])
    out = []
    for k, hu in enumerate(volume):
        ds = copy.deepcopy(template)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = series_uid, study_uid, frame_uid
        ds.SeriesDescription, ds.Modality = description, modality
        ds.InstanceNumber = k + 1
        z = positions_mm[k] if positions_mm is not None else first_z_mm + k * slice_mm
        ds.ImageOrientationPatient = [float(v) for v in (*row, *col)]
        ds.ImagePositionPatient = [float(v) for v in corner + z * normal]
        ds.SliceLocation = float(z)
        ds.PixelSpacing = [float(spacing_mm[0]), float(spacing_mm[1])]
        ds.SliceThickness = float(slice_mm)
        ds.SpacingBetweenSlices = float(slice_mm)
        ds.Rows, ds.Columns = hu.shape
        ds.RescaleSlope, ds.RescaleIntercept = 1, INTERCEPT
        stored = np.clip(np.rint(np.asarray(hu, float) - INTERCEPT), -32768, 32767).astype(np.int16)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = stored.tobytes()
        for keyword in ("LargestImagePixelValue", "SmallestImagePixelValue"):
            if keyword in ds:
                delattr(ds, keyword)
        out.append(ds)
    return out


def write_series(folder: Path, datasets: Sequence[pydicom.Dataset], *, names: Sequence[str] | None = None
                 ) -> list[Path]:
    """Write ``datasets`` into ``folder`` (created), as ``names`` or ``slice_0000.dcm``...; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ds in enumerate(datasets):
        path = folder / (names[k] if names is not None else f"slice_{k:04d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def sphere_volume(shape: Sequence[int], centre_mm: Sequence[float], radius_mm: float,
                  spacing_mm: Sequence[float], slice_mm: float) -> np.ndarray:
    """Boolean (slices, rows, cols) mask of a ball; voxel centres inside ``radius_mm`` of ``centre_mm``
    (slice, row, col in mm from the first voxel's centre)."""
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    dz, dy, dx = z * slice_mm - centre_mm[0], y * spacing_mm[0] - centre_mm[1], x * spacing_mm[1] - centre_mm[2]
    return np.asarray(dz ** 2 + dy ** 2 + dx ** 2 <= radius_mm ** 2)



def write_many(folder: Path, count: int, *, side: int = 8, slice_mm: float = 2.5, first_z_mm: float = -100.0,
               seed: int = 0) -> tuple[list[Path], list[str]]:
    """A long series of tiny air slices (``side`` x ``side``) under shuffled file names, written fast.

    One real header (:func:`ct_series`) is written once by pydicom with fixed-width placeholders
    for what differs per slice (SOP instance UID, position, InstanceNumber), which are then
    replaced in its bytes, so thousands of Part 10 files cost a write each. Returns (paths, SOP
    instance UIDs) in volume order; InstanceNumber and names are shuffled alike.
    """
    import io

    ds = ct_series(np.full((1, side, side), -1000.0), slice_mm=slice_mm, first_z_mm=first_z_mm)[0]
    root = f"1.2.826.0.1.3680043.8.498.{np.random.default_rng(seed).integers(10**9, 10**10)}"
    marks = {"uid": f"{root}.999999999", "z": "-99999.999", "location": "-88888.888", "number": "77777777"}
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = marks["uid"]
    ds.ImagePositionPatient = [*(str(v) for v in ds.ImagePositionPatient[:2]), marks["z"]]
    ds.SliceLocation, ds.InstanceNumber = marks["location"], marks["number"]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    template = buffer.getvalue()
    for key, times in (("uid", 2), ("z", 1), ("location", 1), ("number", 1)):
        assert template.count(marks[key].encode()) == times, key  # each placeholder is where it is meant to be
    folder.mkdir(parents=True, exist_ok=True)
    names = np.random.default_rng(seed).permutation(count)
    paths, uids = [], []
    for k in range(count):
        z = f"{first_z_mm + k * slice_mm:+010.3f}"  # DS: 10 characters, as the placeholder
        # the UID's last component is 10**8 + k: a UID component may not start with a zero
        values = {"uid": f"{root}.{10**8 + k}", "z": z, "location": z, "number": f"{int(names[k]) + 1:08d}"}
        data = template
        for key, value in values.items():
            data = data.replace(marks[key].encode(), value.encode())
        paths.append(folder / f"im{int(names[k]):05d}")  # no suffix, as scanners often write them
        paths[-1].write_bytes(data)
        uids.append(values["uid"])
    return paths, uids
