"""3D lesions of a series: components of the lesion labels joined across adjacent slices, measured.

The data classes here are the contract between the series pipeline, its measurements and the
series DICOM outputs; the functions that fill them live below them.

Lesion voxels (any lesion type, ``label >= FIRST_LESION_LABEL``) are joined into 26-connected
components: voxels touching by a face, an edge or a corner, which within one slice is the
8-connectivity of the per-slice lesions (``sdk.postprocess``). Neighbouring slices of the sorted
series are joined even across a reported gap (a missing slice): the series reader reports the
gap, and a lesion seen on both sides of it is one lesion, not two. Nothing is interpolated:
volumes count voxels times the series' slice spacing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ...errors import InputError
from ...grid import Spacing, check_spacing
from ...labels import FIRST_LESION_LABEL, LESION_CLASSES, TARGET_LABELS
from ..diameters import AxialDiameters, axial_diameters

__all__ = ["CONNECTIVITY", "AxialDiameters", "Lesion3D", "LesionProbabilities", "SeriesMeasurements",
           "measure_series"]

#: How lesion voxels are joined, in words (``SeriesMeasurements.connectivity``).
CONNECTIVITY = "26-connected (face, edge or corner; 8-connected within a slice)"
_TWENTY_SIX = np.ones((3, 3, 3), dtype=bool)


def _json_float(value: float) -> float | None:
    """``value``, or None where it is NaN (JSON has no NaN)."""
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class Lesion3D:
    """One lesion of a series: a connected component of lesion voxels (``id`` in the lesion volume).

    Slices are positions in the sorted series (0 = first along the slice normal). ``label`` is the
    voxel-weighted vote of its voxels' lesion types and ``probability`` the mean probability of that
    type over its voxels; ``largest_slice`` is the slice where its area is largest, and ``axes`` are
    measured there.
    """

    id: int
    label: str
    probability: float
    volume_ml: float
    voxels: int
    first_slice: int
    last_slice: int
    largest_slice: int
    largest_area_mm2: float
    axes: AxialDiameters
    #: (slice, row, col) of the centroid, in sorted-series voxel indices.
    centroid: tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: label -> voxels of that label in this lesion (the vote behind ``label``).
    votes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "probability": _json_float(self.probability),
                "volume_ml": self.volume_ml, "voxels": self.voxels, "first_slice": self.first_slice,
                "last_slice": self.last_slice, "largest_slice": self.largest_slice,
                "largest_area_mm2": self.largest_area_mm2, "axes": self.axes.to_dict(),
                "centroid": list(self.centroid), "votes": dict(self.votes)}


@dataclass(frozen=True)
class SeriesMeasurements:
    """What the series' label volume measures: the 3D lesions, the liver volume and the lesion burden."""

    lesions: tuple[Lesion3D, ...]
    liver_volume_ml: float
    lesion_volume_ml: float
    #: lesion volume / liver volume (lesions are inside the liver; 0 when there is no liver).
    burden: float
    #: the connectivity used to join lesion voxels, in words (e.g. "26-connected").
    connectivity: str
    #: the slice spacing the volumes use, in mm (median spacing of the slice positions, or as given).
    slice_thickness_mm: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"lesions": [lesion.to_dict() for lesion in self.lesions], "liver_volume_ml": self.liver_volume_ml,
                "lesion_volume_ml": self.lesion_volume_ml, "burden": self.burden, "connectivity": self.connectivity,
                "slice_thickness_mm": _json_float(self.slice_thickness_mm)}


@dataclass(frozen=True)
class LesionProbabilities:
    """Probabilities of the lesion voxels alone: flat indices into the label volume and round(255 * p) there.

    What ``measure_series`` reads instead of a whole uint8 volume: the series pipeline's memory then grows
    with the lesion voxels, not with the series (0.26 MB per 512 x 512 slice less).
    """

    index: np.ndarray  # int64, flat (slice, row, col) indices of lesion voxels
    value: np.ndarray  # uint8, round(255 * p) of each


def measure_series(labels: np.ndarray, spacing_mm: Sequence[float], slice_positions_mm: Sequence[float],
                   probability: np.ndarray | LesionProbabilities | None = None, *,
                   slice_thickness_mm: float | None = None
                   ) -> tuple[SeriesMeasurements, np.ndarray]:
    """The 3D lesions, liver volume and burden of a (slices, rows, cols) label volume, and its lesion id volume.

    ``labels`` follow ``labels.TARGET_LABELS`` (0 background, 1 liver, 2-4 lesion types), slices
    sorted along the normal; ``spacing_mm`` is (row_mm, col_mm); ``slice_positions_mm`` holds one
    position per slice, strictly monotonic; the volumes use the median spacing between neighbouring
    positions, or ``slice_thickness_mm`` when given (needed for a single slice). ``probability``
    (same shape, uint8 = round(255 * p) of each voxel's own label, or those of the lesion voxels alone as
    :class:`LesionProbabilities`) gives each lesion's probability; without it that is NaN. The id volume
    (0 = none, k = ``lesions[k-1]``) has the smallest unsigned dtype that holds the lesion count; ids
    follow the raster order (slice, row, col) of each lesion's first voxel.
    """
    labels = _check_labels(labels)
    spacing = check_spacing(spacing_mm)
    row_mm, col_mm = spacing
    thickness = _thickness(slice_positions_mm, labels.shape[0], slice_thickness_mm)
    if isinstance(probability, LesionProbabilities):
        probability = _checked_sparse(probability, labels)
    elif probability is not None:
        probability = np.asarray(probability)
        if probability.shape != labels.shape or probability.dtype != np.uint8:
            raise InputError(f"probability must be a uint8 volume (round(255 * p) of each voxel's label) shaped like "
                             f"labels {labels.shape}; got {probability.dtype} {probability.shape}")
    voxel_ml = row_mm * col_mm * thickness / 1000.0
    lesion = labels >= FIRST_LESION_LABEL  # the one full-size temporary besides the id volume
    window = _window(lesion)
    count = 0
    found: list[Lesion3D] = []
    ids_window = None
    if window is not None:
        ids_window, count = ndimage.label(lesion[window], structure=_TWENTY_SIX)
        corner = tuple(s.start for s in window)
        sparse = isinstance(probability, LesionProbabilities)
        sums = _sparse_sums(probability, labels, ids_window, corner, count) if sparse else None
        volume = None if sparse else probability
        for k, box in enumerate(ndimage.find_objects(ids_window), start=1):
            full = tuple(slice(b.start + c, b.stop + c) for b, c in zip(box, corner))
            found.append(_measure(k, ids_window[box] == k, full, labels, volume, None if sums is None else sums[k],
                                  spacing, voxel_ml))
    del lesion
    ids = np.zeros(labels.shape, dtype=np.min_scalar_type(count))
    if window is not None:
        ids[window] = ids_window
    lesion_voxels = sum(item.voxels for item in found)
    liver_voxels = int(np.count_nonzero(labels))  # liver including its lesions: every label >= LIVER
    measurements = SeriesMeasurements(
        lesions=tuple(found), liver_volume_ml=liver_voxels * voxel_ml, lesion_volume_ml=lesion_voxels * voxel_ml,
        burden=lesion_voxels / liver_voxels if liver_voxels else 0.0, connectivity=CONNECTIVITY,
        slice_thickness_mm=thickness)
    return measurements, ids


def _measure(k: int, component: np.ndarray, box: tuple[slice, ...], labels: np.ndarray,
             probability: np.ndarray | None, sums: np.ndarray | None, spacing: Spacing, voxel_ml: float) -> Lesion3D:
    """Lesion ``k`` from its mask ``component`` cropped to its bounding ``box`` of the series.

    Its probability from the uint8 ``probability`` volume, or from ``sums`` (the sparse form: the sum and count
    of round(255 p) of its voxels, per label), or NaN without either.
    """
    types = labels[box][component]  # its voxels' labels, all lesion types
    counts = np.bincount(types, minlength=len(TARGET_LABELS))[FIRST_LESION_LABEL:]
    winner = int(np.argmax(counts))  # ties go to the lower label index, as the per-slice vote does
    if sums is not None:
        total, n = sums[:, FIRST_LESION_LABEL + winner]
        mean = float(total) / float(n) / 255.0 if n else float("nan")
    elif probability is None:
        mean = float("nan")
    else:
        mine = probability[box][component][types == FIRST_LESION_LABEL + winner]
        mean = float(mine.mean(dtype=np.float64)) / 255.0
    per_slice = np.count_nonzero(component, axis=(1, 2))
    voxels = int(per_slice.sum())
    largest = int(np.argmax(per_slice))  # first of the largest on ties
    z0, r0, c0 = (s.start for s in box)
    axes = axial_diameters(component[largest], spacing, origin=(r0, c0))
    centroid = tuple(float(np.dot(np.count_nonzero(component, axis=other), np.arange(n))) / voxels + start
                     for other, n, start in (((1, 2), component.shape[0], z0), ((0, 2), component.shape[1], r0),
                                             ((0, 1), component.shape[2], c0)))
    return Lesion3D(
        id=k, label=LESION_CLASSES[winner], probability=mean, volume_ml=voxels * voxel_ml, voxels=voxels,
        first_slice=z0, last_slice=box[0].stop - 1, largest_slice=z0 + largest,
        largest_area_mm2=int(per_slice[largest]) * spacing[0] * spacing[1], axes=axes,
        centroid=(centroid[0], centroid[1], centroid[2]),
        votes={name: int(n) for name, n in zip(LESION_CLASSES, counts) if n})


def _checked_sparse(probability: LesionProbabilities, labels: np.ndarray) -> LesionProbabilities:
    """The sparse probabilities checked against ``labels``: one uint8 value per lesion voxel index."""
    index, value = np.asarray(probability.index), np.asarray(probability.value)
    if index.ndim != 1 or index.shape != value.shape or value.dtype != np.uint8 or index.dtype.kind not in "iu":
        raise InputError("LesionProbabilities needs 1-D integer indices and as many uint8 values; got "
                         f"{index.dtype} {index.shape} and {value.dtype} {value.shape}")
    if index.size and (int(index.min()) < 0 or int(index.max()) >= labels.size):
        raise InputError(f"LesionProbabilities indices must lie in the label volume (0..{labels.size - 1})")
    return LesionProbabilities(index.astype(np.int64, copy=False), value)


def _sparse_sums(probability: LesionProbabilities, labels: np.ndarray, ids_window: np.ndarray,
                  corner: tuple[int, ...], count: int) -> np.ndarray:
    """(count + 1, 2, labels): per lesion id, the sum and count of round(255 p) of its voxels, by label."""
    nlabels = len(TARGET_LABELS)
    z, r, c = np.unravel_index(probability.index, labels.shape)
    z, r, c = z - corner[0], r - corner[1], c - corner[2]
    inside = ((z >= 0) & (z < ids_window.shape[0]) & (r >= 0) & (r < ids_window.shape[1])
              & (c >= 0) & (c < ids_window.shape[2]))
    ids = np.zeros(z.shape, np.int64)
    ids[inside] = ids_window[z[inside], r[inside], c[inside]]
    key = ids * nlabels + labels.ravel()[probability.index].astype(np.int64)
    size = (count + 1) * nlabels
    sums = np.bincount(key, weights=probability.value.astype(np.float64), minlength=size)
    counts = np.bincount(key, minlength=size).astype(np.float64)
    return np.stack([sums.reshape(count + 1, nlabels), counts.reshape(count + 1, nlabels)], axis=1)


def _window(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of the True voxels of ``mask``, or None when there is none."""
    bounds = []
    for axes in ((1, 2), (0, 2), (0, 1)):
        hit = np.flatnonzero(mask.any(axis=axes))
        if hit.size == 0:
            return None
        bounds.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(bounds)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    names = ", ".join(TARGET_LABELS)
    accepted = f"a (slices, rows, cols) integer volume of labels 0..{len(TARGET_LABELS) - 1} ({names})"
    if labels.ndim != 3 or labels.dtype.kind not in "ui" or 0 in labels.shape:
        raise InputError(f"labels must be {accepted}; got {labels.dtype} {labels.shape}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= len(TARGET_LABELS):
        raise InputError(f"labels must be {accepted}; this one holds {low}..{high}")
    return labels


def _thickness(positions_mm: Sequence[float], slices: int, given: float | None) -> float:
    """The slice spacing for volumes: ``given``, or the median spacing of the sorted slice positions."""
    positions = np.asarray(positions_mm, dtype=np.float64)
    if positions.shape != (slices,) or not np.all(np.isfinite(positions)):
        raise InputError(f"slice_positions_mm must hold one finite position per slice ({slices}); "
                         f"got {positions.shape[0] if positions.ndim == 1 else positions.shape} values")
    steps = np.diff(positions)
    if steps.size and not (np.all(steps > 0) or np.all(steps < 0)):
        raise InputError("slice_positions_mm must be sorted along the normal, no two the same (strictly increasing "
                         f"or decreasing); got steps from {float(steps.min()):g} to {float(steps.max()):g} mm")
    if given is not None:
        if not (math.isfinite(given) and given > 0):
            raise InputError(f"slice_thickness_mm must be a positive number of mm; got {given!r}")
        return float(given)
    if steps.size == 0:
        raise InputError("a series of one slice has no slice spacing: pass slice_thickness_mm")
    return float(np.median(np.abs(steps)))
