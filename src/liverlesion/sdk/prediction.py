"""What ``predict`` returns: the label map on the input grid, the lesions and the slice class."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

import numpy as np

from .. import metrics
from ..errors import InputError
from ..labels import TARGET_LABELS
from .diameters import AxialDiameters, axial_diameters

#: ``to_dict(masks=...)`` choices: counts only, counts plus run-length-encoded maps, or no mask section.
MASK_FORMATS = ("summary", "rle", "none")


@dataclass(frozen=True)
class Lesion:
    """One lesion: an 8-connected component labelled on the model grid, measured on the input grid.

    ``bbox`` is (row0, col0, row1, col1) in input pixels with row1/col1 exclusive (numpy slice
    bounds); ``centroid`` is (row, col); ``id`` is the component's value in
    :attr:`Prediction.lesion_components`.
    """

    id: int
    label: str
    probability: float
    area_mm2: float
    pixels: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    #: RECIST axes as given (e.g. by a server); None: measured from ``outline`` when first asked for.
    measured_axes: AxialDiameters | None = field(default=None, repr=False, compare=False)
    #: (this lesion's pixels within ``bbox``, pixel spacing (row_mm, col_mm)): what ``axes`` measures.
    outline: tuple[np.ndarray, tuple[float, float]] | None = field(default=None, repr=False, compare=False)

    def __eq__(self, other: object) -> bool:
        """Field by field, and the RECIST axes too (a property, measured lazily, so not a compared field)."""
        if not isinstance(other, Lesion):
            return NotImplemented
        return self._fields() == other._fields() and self.axes == other.axes

    def __hash__(self) -> int:  # equal lesions have equal compared fields, so this agrees with __eq__
        return hash(self._fields())

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if f.compare)

    @cached_property
    def axes(self) -> AxialDiameters | None:
        """RECIST 1.1 long and short axes on this slice (``sdk.diameters``: mm, end points in input pixels).

        Measured on first use, not in ``predict``: they cost about 0.18 ms a lesion on a Xeon core,
        as much as the rest of the host work of a slice, and a scanner-side caller may never read them.
        """
        if self.measured_axes is not None or self.outline is None:
            return self.measured_axes
        mask, spacing = self.outline
        return axial_diameters(mask, spacing, origin=(self.bbox[0], self.bbox[1]))

    @property
    def long_axis_mm(self) -> float | None:
        return None if self.axes is None else self.axes.long_mm

    @property
    def short_axis_mm(self) -> float | None:
        return None if self.axes is None else self.axes.short_mm

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "probability": self.probability, "area_mm2": self.area_mm2,
                "pixels": self.pixels, "bbox": list(self.bbox), "centroid": list(self.centroid),
                "long_axis_mm": self.long_axis_mm, "short_axis_mm": self.short_axis_mm,
                "axes": None if self.axes is None else self.axes.to_dict()}


def run_length(values: np.ndarray) -> dict[str, Any]:
    """Row-major run-length encoding of a 2D map: run values and run lengths."""
    flat = np.ascontiguousarray(values).ravel()
    if flat.size == 0:
        return {"shape": list(values.shape), "order": "C", "values": [], "lengths": []}
    starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
    lengths = np.diff(np.append(starts, flat.size))
    return {"shape": list(values.shape), "order": "C", "values": flat[starts].tolist(), "lengths": lengths.tolist()}


@dataclass(eq=False)
class Prediction:
    """The result for one slice; every array is on the input grid, pixel for pixel aligned with it.

    ``label_map`` follows ``labels.TARGET_LABELS`` (0 background ... 4 metastasis) for every
    architecture. ``lesion_components`` numbers the lesions (0 = none, k = ``lesions[k-1]``).
    ``slice_class`` is the majority class of the lesion pixels (joint network) or the
    classification head's class (Y-Net); it and its probability are None when no lesion
    was found. ``class_probabilities`` is the head's softmax (Y-Net), or for the joint
    network the lesion pixels' mean probability of each lesion class normalised over the
    three classes; ``slice_class_probability`` is its value for ``slice_class``.
    """

    label_map: np.ndarray = field(repr=False)
    lesion_components: np.ndarray = field(repr=False)
    lesions: tuple[Lesion, ...]
    slice_class: str | None
    slice_class_probability: float | None
    spacing_mm: tuple[float, float]
    #: Probability of each lesion class for the slice (see above); None for a joint result without lesions.
    class_probabilities: dict[str, float] | None = None
    #: preprocess_ms, inference_ms, postprocess_ms, total_ms (filled by the analyzer).
    timings: dict[str, float] = field(default_factory=dict)
    backend: str = ""
    precision: str = ""
    #: name, version and arch of the model that made it.
    model: dict[str, str] = field(default_factory=dict)
    #: Where the slice came from (kind, path, SOP instance UID, frame, NIfTI index...).
    source: dict[str, Any] = field(default_factory=dict)
    #: The source pydicom Dataset when the slice came from DICOM (default for to_dicom_seg/sr).
    dataset: Any = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.label_map.shape[0]), int(self.label_map.shape[1])

    @property
    def liver_mask(self) -> np.ndarray:
        """The whole liver, lesions included (``label >= LIVER``, as the liver Dice counts it)."""
        return metrics.liver_mask(self.label_map)

    @property
    def lesion_mask(self) -> np.ndarray:
        """Pixels of any lesion type."""
        return metrics.lesion_mask(self.label_map)

    @property
    def pixel_area_mm2(self) -> float:
        return float(self.spacing_mm[0] * self.spacing_mm[1])

    def pixel_counts(self) -> dict[str, int]:
        counts = np.bincount(self.label_map.ravel(), minlength=len(TARGET_LABELS))
        return {name: int(counts[i]) for i, name in enumerate(TARGET_LABELS)}

    @property
    def liver_area_mm2(self) -> float:
        counts = self.pixel_counts()
        return sum(counts[name] for name in TARGET_LABELS[1:]) * self.pixel_area_mm2

    @property
    def lesion_area_mm2(self) -> float:
        return float(sum(lesion.area_mm2 for lesion in self.lesions))

    def to_dict(self, masks: str = "summary") -> dict[str, Any]:
        """A JSON-serialisable summary; ``masks`` is one of MASK_FORMATS (no full arrays unless "rle")."""
        if masks not in MASK_FORMATS:
            raise InputError(f"masks={masks!r} is unknown; accepted: {', '.join(MASK_FORMATS)}")
        out: dict[str, Any] = {
            "slice_class": self.slice_class,
            "slice_class_probability": self.slice_class_probability,
            "class_probabilities": None if self.class_probabilities is None else dict(self.class_probabilities),
            "lesions": [lesion.to_dict() for lesion in self.lesions],
            "liver_area_mm2": self.liver_area_mm2,
            "lesion_area_mm2": self.lesion_area_mm2,
            "spacing_mm": list(self.spacing_mm),
            "timings": {k: float(v) for k, v in self.timings.items()},
            "backend": self.backend,
            "precision": self.precision,
            "model": dict(self.model),
            "source": dict(self.source),
        }
        if masks != "none":
            out["masks"] = {"shape": list(self.shape), "labels": list(TARGET_LABELS),
                            "pixels": self.pixel_counts()}
            if masks == "rle":
                out["masks"]["label_map_rle"] = run_length(self.label_map)
        return out

    def summary(self) -> str:
        """One line for logs and the CLI: class, lesions with areas, liver area, time."""
        if self.slice_class is None:
            head = "no lesion"
        else:
            parts = ", ".join(f"{x.label} {x.probability:.2f} {x.area_mm2:.1f} mm2"
                              + (f" {x.long_axis_mm:.1f} x {x.short_axis_mm:.1f} mm" if x.axes else "")
                              for x in self.lesions)
            head = f"{self.slice_class} ({self.slice_class_probability:.2f}); {len(self.lesions)} lesion(s): {parts}"
        total = self.timings.get("total_ms")
        timing = f"; {total:.1f} ms" if total is not None else ""
        return f"{head}; liver {self.liver_area_mm2:.1f} mm2{timing}"

    def to_dicom_seg(self, source_dataset: Any = None, **options: Any) -> Any:
        """A DICOM Segmentation aligned with the source image (see ``sdk.outputs.dicom.to_dicom_seg``)."""
        from .outputs.dicom import to_dicom_seg  # the outputs build on Prediction: imported when called

        return to_dicom_seg(self, self._source(source_dataset), **options)

    def to_dicom_sr(self, source_dataset: Any, seg: Any, **options: Any) -> Any:
        """A TID 1500 Comprehensive 3D SR referencing ``seg`` (see ``sdk.outputs.dicom.to_dicom_sr``)."""
        from .outputs.dicom import to_dicom_sr

        return to_dicom_sr(self, self._source(source_dataset), seg, **options)

    def _source(self, dataset: Any) -> Any:
        if dataset is None:
            dataset = self.dataset
        if dataset is None:
            kind = self.source.get("kind") or "non-DICOM"
            raise InputError(f"DICOM output needs the source image, and this prediction was made on a {kind} "
                             "slice: pass the pydicom Dataset the slice came from")
        return dataset

    def __repr__(self) -> str:
        return (f"Prediction(shape={self.shape}, slice_class={self.slice_class!r}, lesions={len(self.lesions)}, "
                f"backend={self.backend!r}, precision={self.precision!r})")
