"""From the fused graph's outputs on the model grid to a :class:`Prediction` on the input grid.

Labels go back to the input grid through ``geometry.to_input`` (each input pixel knows the
model pixel its label comes from); probabilities are gathered through the same index map.
Lesions are the 8-connected components of the lesion pixels on the input grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from .. import metrics
from ..errors import BackendError, PackageError
from ..grid import ModelGrid
from ..labels import FIRST_LESION_LABEL, LESION_CLASSES, LITS_LABELS, TARGET_LABELS, YNET_SEG_LABELS
from .geometry import to_input
from .inputs.slice import SliceInput
from .prediction import Lesion, Prediction

_EIGHT = np.ones((3, 3), dtype=bool)


class Postprocessor:
    """Decodes one package's outputs; built once per model, called once per slice (thread-safe).

    ``labels`` are the package's segmentation labels: the 5 target labels (joint network),
    or background/liver/lesion with a ``class_probabilities`` output (Y-Net).
    """

    def __init__(self, grid: ModelGrid, labels: Sequence[str] = TARGET_LABELS,
                 lesion_classes: Sequence[str] = LESION_CLASSES) -> None:
        self.grid = grid
        self.labels = tuple(labels)
        self.lesion_classes = tuple(lesion_classes)
        unknown = [c for c in self.lesion_classes if c not in LESION_CLASSES]
        if unknown or len(set(self.lesion_classes)) != len(LESION_CLASSES):
            raise PackageError(f"lesion classes {list(self.lesion_classes)} are not a permutation of "
                               f"{list(LESION_CLASSES)}")
        if set(self.labels) == set(TARGET_LABELS) and len(self.labels) == len(TARGET_LABELS):
            self.ynet = False
            #: package label index -> target label index
            self.lut = np.array([TARGET_LABELS.index(n) for n in self.labels], dtype=np.uint8)
            #: target lesion label -> probability channel, for classes in LESION_CLASSES order
            self.channels = np.array([self.labels.index(n) for n in LESION_CLASSES], dtype=np.intp)
        elif self.labels in (YNET_SEG_LABELS, LITS_LABELS):
            self.ynet = True
            #: head output position of each class in LESION_CLASSES order
            self.head_order = np.array([self.lesion_classes.index(n) for n in LESION_CLASSES], dtype=np.intp)
        else:
            raise PackageError(f"labels {list(self.labels)} are not a known convention; accepted: "
                               f"{list(TARGET_LABELS)} (joint) or {list(YNET_SEG_LABELS)} (Y-Net)")

    @classmethod
    def from_manifest(cls, manifest: Any) -> Postprocessor:
        return cls(manifest.grid, manifest.labels, manifest.lesion_classes)

    def _outputs(self, outputs: Mapping[str, np.ndarray], index: int) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = self.grid.size
        labels, probs = outputs.get("labels"), outputs.get("probabilities")
        if labels is None or probs is None:
            raise BackendError(f"the backend returned outputs {sorted(outputs)}; expected 'labels' and "
                               "'probabilities'")
        want = (len(self.labels), rows, cols)
        if labels.ndim != 3 or labels.shape[1:] != (rows, cols) or probs.ndim != 4 or probs.shape[1:] != want \
                or not 0 <= index < min(labels.shape[0], probs.shape[0]):
            raise BackendError(f"backend outputs labels {labels.shape} / probabilities {probs.shape} do not fit "
                               f"(N, {rows}, {cols}) / (N, {want[0]}, {rows}, {cols}) with item {index}")
        labels, probs = labels[index], probs[index]
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= len(self.labels):
            raise BackendError(f"backend label map holds values {low}..{high}; expected 0..{len(self.labels) - 1}")
        return labels, probs.reshape(len(self.labels), -1)

    def __call__(self, outputs: Mapping[str, np.ndarray], slice_: SliceInput, index: int = 0, *,
                 backend: str = "", precision: str = "", model: Mapping[str, str] | None = None,
                 timings: Mapping[str, float] | None = None) -> Prediction:
        """The Prediction for item ``index`` of a batch, on ``slice_``'s own grid."""
        labels, probs = self._outputs(outputs, index)
        head = None
        if self.ynet:
            raw = outputs.get("class_probabilities")
            if raw is None or raw.ndim != 2 or raw.shape[1] != len(LESION_CLASSES) or index >= raw.shape[0]:
                got = None if raw is None else raw.shape
                raise BackendError(f"a Y-Net package needs output 'class_probabilities' (N, 3); got {got}")
            head = np.asarray(raw[index], dtype=np.float64)[self.head_order]
            lut = np.array([0, 1, FIRST_LESION_LABEL + int(np.argmax(head))], dtype=np.uint8)
        else:
            lut = self.lut
        label_map, model_index = to_input(lut[labels], self.grid, slice_.shape, slice_.spacing_mm,
                                          slice_.orientation)

        pixels = np.flatnonzero(label_map.ravel() >= FIRST_LESION_LABEL)
        components = np.zeros(label_map.shape, dtype=np.int32)
        lesions: tuple[Lesion, ...] = ()
        slice_class = slice_probability = None
        distribution = head
        if pixels.size:
            # Label only the lesions' bounding window: lesions are a small part of a 512 x 512 slice.
            rows, cols = np.divmod(pixels, label_map.shape[1])
            window = (slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1))
            inside, count = ndimage.label(label_map[window] >= FIRST_LESION_LABEL, structure=_EIGHT)
            components[window] = inside
            boxes = [(slice(b[0].start + window[0].start, b[0].stop + window[0].start),
                      slice(b[1].start + window[1].start, b[1].stop + window[1].start))
                     for b in ndimage.find_objects(inside, max_label=count)]
            lesions, class_index, distribution = self._lesions(
                components, count, boxes, pixels, label_map, model_index, probs, head, slice_.spacing_mm)
            slice_class, slice_probability = LESION_CLASSES[class_index], float(distribution[class_index])
        return Prediction(
            label_map=label_map, lesion_components=components, lesions=lesions, slice_class=slice_class,
            slice_class_probability=slice_probability, spacing_mm=slice_.spacing_mm,
            class_probabilities=None if distribution is None else dict(zip(LESION_CLASSES, map(float, distribution))),
            timings=dict(timings or {}), backend=backend, precision=precision, model=dict(model or {}),
            source=dict(slice_.source), dataset=slice_.dataset,
        )

    def _lesions(self, components: np.ndarray, count: int, boxes: Sequence[tuple[slice, slice]],
                 pixels: np.ndarray, label_map: np.ndarray,
                 model_index: np.ndarray, probs: np.ndarray, head: np.ndarray | None,
                 spacing: tuple[float, float]) -> tuple[tuple[Lesion, ...], int, np.ndarray]:
        """Per-component class vote, probability, area, bbox and centroid, all with bincount.

        Returns the lesions, the slice class index (majority of lesion pixels) and the class
        distribution: the Y-Net head, or for the joint network the lesion pixels' mean
        probability of each lesion class, normalised over the lesion classes.
        """
        ncls = len(LESION_CLASSES)
        comp = components.ravel()[pixels] - 1
        cls_pix = label_map.ravel()[pixels].astype(np.intp) - FIRST_LESION_LABEL
        sizes = np.bincount(comp, minlength=count)
        slice_idx = int(metrics.slice_lesion_class(cls_pix + FIRST_LESION_LABEL) or 0)  # never None: pixels > 0
        if head is None:
            votes = np.bincount(comp * ncls + cls_pix, minlength=count * ncls).reshape(count, ncls)
            comp_cls = np.argmax(votes, axis=1)  # ties go to the lower class index, as in metrics
            # gather the lesion pixels' probabilities of the lesion channels only (not whole planes)
            lesion_probs = probs[self.channels[:, None], model_index.ravel()[pixels][None, :]]
            value = lesion_probs[comp_cls[comp], np.arange(pixels.size)]
            comp_prob = np.bincount(comp, weights=value, minlength=count) / sizes
            means = lesion_probs.mean(axis=1, dtype=np.float64)
            distribution = means / means.sum() if means.sum() > 0 else np.full(ncls, 1.0 / ncls)
        else:
            comp_cls = np.full(count, slice_idx, dtype=np.intp)
            comp_prob = np.full(count, head[slice_idx])
            distribution = head
        cols = label_map.shape[1]
        centre_r = np.bincount(comp, weights=pixels // cols, minlength=count) / sizes
        centre_c = np.bincount(comp, weights=pixels % cols, minlength=count) / sizes
        area = float(spacing[0] * spacing[1])
        lesions = []
        for k, box in enumerate(boxes):
            lesions.append(Lesion(
                id=k + 1, label=LESION_CLASSES[int(comp_cls[k])], probability=float(comp_prob[k]),
                area_mm2=float(sizes[k]) * area, pixels=int(sizes[k]),
                bbox=(box[0].start, box[1].start, box[0].stop, box[1].stop),
                centroid=(float(centre_r[k]), float(centre_c[k])),
            ))
        return tuple(lesions), slice_idx, distribution


def postprocess(outputs: Mapping[str, np.ndarray], slice_: SliceInput, grid: ModelGrid, *,
                labels: Sequence[str] = TARGET_LABELS, lesion_classes: Sequence[str] = LESION_CLASSES,
                index: int = 0, **meta: Any) -> Prediction:
    """One-off form of :class:`Postprocessor` (build the Postprocessor once on a hot path)."""
    return Postprocessor(grid, labels, lesion_classes)(outputs, slice_, index, **meta)
