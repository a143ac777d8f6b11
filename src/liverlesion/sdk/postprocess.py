"""From the fused graph's outputs on the model grid to a :class:`Prediction` on the input grid.

Labels go back to the input grid through ``geometry.to_input`` (each input pixel knows the
model pixel its label comes from). Lesions are the 8-connected components of the lesion
pixels on the model grid (issue 14): each component's class (majority vote) and probability
(mean of that class) are taken over its model pixels; each input lesion pixel belongs to the
component of the model pixel it samples, and pixels, area, bbox, centroid and the RECIST long
and short axes (``sdk.diameters``) are measured on the input grid. The slice class (majority)
and the class distribution (mean lesion-class probabilities) stay over the input grid's lesion
pixels. With the slice graph the labels arrive on the input grid already (``labels_input``).

For inputs finer than the model grid (the usual case: 0.6-0.9 mm CT on a 2.5 mm grid) that
cover it, every model pixel is sampled and nearest-neighbour sampling keeps 8-connectivity, so
the components are the ones labelling the input grid would find, numbered the same way (raster
order of their first input pixel). A component cut by the edge of a field of view smaller
than the model grid keeps one id for its pieces. For inputs coarser than the model grid a
model component no input pixel samples is dropped (ids stay 1..K, in that order), and one
component can show as several blobs on the input grid (one lesion, one id), or two as
touching blobs with two ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import BackendError, PackageError
from ..grid import ModelGrid
from ..labels import FIRST_LESION_LABEL, LESION_CLASSES, LITS_LABELS, TARGET_LABELS, YNET_SEG_LABELS
from .geometry import source_index, to_input
from .inputs.slice import SliceInput
from .prediction import Lesion, Prediction

_EIGHT = np.ones((3, 3), dtype=bool)
#: The slice graph's output: labels already on the stored grid (``export.resampling_graph.LABELS_INPUT``).
LABELS_INPUT = "labels_input"


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

    def _input_labels(self, values: np.ndarray, index: int, shape: tuple[int, int]) -> np.ndarray:
        """Item ``index`` of the slice graph's ``labels_input`` (N x rows x cols of the stored slice), checked."""
        if values.ndim != 3 or values.shape[1:] != tuple(shape) or not 0 <= index < values.shape[0]:
            raise BackendError(f"backend output {LABELS_INPUT} {values.shape} does not fit (N, {shape[0]}, "
                               f"{shape[1]}) with item {index}")
        item = values[index]
        low, high = int(item.min()), int(item.max())
        if low < 0 or high >= len(self.labels):
            raise BackendError(f"backend {LABELS_INPUT} holds values {low}..{high}; expected 0..{len(self.labels) - 1}")
        return item

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
        target = lut.take(labels)  # values checked in _outputs; take is ~3x faster than fancy indexing here
        on_input = outputs.get(LABELS_INPUT)
        if on_input is None:
            label_map, model_index = to_input(target, self.grid, slice_.shape, slice_.spacing_mm, slice_.orientation)
        else:  # the slice graph brought the labels back itself; lesions still need each pixel's model pixel
            label_map = _relabel(lut, self._input_labels(on_input, index, slice_.shape))
            model_index = source_index(self.grid, slice_.shape, slice_.spacing_mm, slice_.orientation)

        pixels = np.flatnonzero(label_map.ravel() >= FIRST_LESION_LABEL)
        components = np.zeros(label_map.shape, dtype=np.int32)
        lesions: tuple[Lesion, ...] = ()
        slice_class = slice_probability = None
        distribution = head
        if pixels.size:  # an input lesion pixel samples a model lesion pixel, so the model grid has lesions too
            found = _ModelComponents(target)
            # Only the lesion pixels gather their component (not a whole combined id+label map: four times the
            # bytes of the uint8 label map through the full-grid gather, then two passes to split it).
            source = model_index.ravel()[pixels]  # the model pixel each input lesion pixel samples
            placed = _InputComponents(found.map.ravel()[source], pixels, label_map.shape, found.count)
            components.ravel()[pixels] = placed.ids
            lesions, class_index, distribution = self._lesions(
                found, placed, pixels, source, label_map, probs, head, slice_.spacing_mm)
            lesions = tuple(_with_outline(lesion, components, slice_.spacing_mm) for lesion in lesions)
            slice_class, slice_probability = LESION_CLASSES[class_index], float(distribution[class_index])
        return Prediction(
            label_map=label_map, lesion_components=components, lesions=lesions, slice_class=slice_class,
            slice_class_probability=slice_probability, spacing_mm=slice_.spacing_mm,
            class_probabilities=None if distribution is None else dict(zip(LESION_CLASSES, map(float, distribution))),
            timings=dict(timings or {}), backend=backend, precision=precision, model=dict(model or {}),
            source=dict(slice_.source), dataset=slice_.dataset,
        )

    def _lesions(self, found: _ModelComponents, placed: _InputComponents, pixels: np.ndarray, source: np.ndarray,
                 label_map: np.ndarray, probs: np.ndarray, head: np.ndarray | None,
                 spacing: tuple[float, float]) -> tuple[tuple[Lesion, ...], int, np.ndarray]:
        """Per-lesion class vote and probability on the model grid; pixels, area, bbox, centroid on the input grid.

        Returns the lesions, the slice class index (majority of the input grid's lesion pixels)
        and the class distribution: the Y-Net head, or for the joint network the input lesion
        pixels' mean probability of each lesion class (each read at the model pixel it samples),
        normalised over the lesion classes.
        """
        ncls, count = len(LESION_CLASSES), placed.kept.size
        cls_pix = label_map.ravel()[pixels].astype(np.intp) - FIRST_LESION_LABEL
        slice_idx = int(np.argmax(np.bincount(cls_pix, minlength=ncls)))  # as metrics.slice_lesion_class
        if head is None:
            comp_cls, comp_prob = self._model_votes(found, probs)
            comp_cls, comp_prob = comp_cls[placed.kept - 1], comp_prob[placed.kept - 1]
            means = probs.take(source, axis=1)[self.channels].mean(axis=1, dtype=np.float64)
            distribution = means / means.sum() if means.sum() > 0 else np.full(ncls, 1.0 / ncls)
        else:
            comp_cls = np.full(count, slice_idx, dtype=np.intp)
            comp_prob = np.full(count, head[slice_idx])
            distribution = head
        area = float(spacing[0] * spacing[1])
        return tuple(Lesion(
            id=k + 1, label=LESION_CLASSES[int(comp_cls[k])], probability=float(comp_prob[k]),
            area_mm2=float(placed.sizes[k]) * area, pixels=int(placed.sizes[k]),
            bbox=(int(placed.boxes[k, 0]), int(placed.boxes[k, 1]), int(placed.boxes[k, 2]), int(placed.boxes[k, 3])),
            centroid=(float(placed.centroids[k, 0]), float(placed.centroids[k, 1])),
        ) for k in range(count)), slice_idx, distribution

    def _model_votes(self, found: _ModelComponents, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each model component's majority class and its mean probability of that class, over model pixels."""
        ncls, comp = len(LESION_CLASSES), found.ids - 1
        votes = np.bincount(comp * ncls + found.classes, minlength=found.count * ncls).reshape(found.count, ncls)
        comp_cls = np.argmax(votes, axis=1)  # ties go to the lower class index, as in metrics
        value = probs[self.channels[comp_cls[comp]], found.pixels]
        return comp_cls, np.bincount(comp, weights=value, minlength=found.count) / votes.sum(axis=1)


def _relabel(lut: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``lut`` applied to checked label values; a cast where it changes nothing (a joint package: 15x faster)."""
    if lut.size and np.array_equal(lut, np.arange(lut.size)):
        return values.astype(np.uint8, copy=False)
    return lut.take(values)


def _with_outline(lesion: Lesion, components: np.ndarray, spacing: tuple[float, float]) -> Lesion:
    """``lesion`` with its pixels in its bounding box, on which ``Lesion.axes`` measures it when asked."""
    r0, c0, r1, c1 = lesion.bbox
    return replace(lesion, outline=(components[r0:r1, c0:c1] == lesion.id, spacing))


class _ModelComponents:
    """The 8-connected lesion components of a target label map on the model grid."""

    def __init__(self, target: np.ndarray) -> None:
        #: flat model indices of the lesion pixels, their lesion class (0-based) and component id (1..count)
        self.pixels = np.flatnonzero(target.ravel() >= FIRST_LESION_LABEL)
        self.classes = target.ravel()[self.pixels].astype(np.intp) - FIRST_LESION_LABEL
        self.map = np.zeros(target.shape, dtype=np.int32)
        window = _window(self.pixels, target.shape[1])
        # Label only the lesions' bounding window: lesions are a small part of the grid.
        self.map[window], self.count = ndimage.label(target[window] >= FIRST_LESION_LABEL, structure=_EIGHT)
        self.ids = self.map.ravel()[self.pixels]


def _window(pixels: np.ndarray, cols: int) -> tuple[slice, slice]:
    """The bounding window of flat indices ``pixels`` (not empty) on a grid ``cols`` wide."""
    rows, columns = np.divmod(pixels, cols)
    return slice(int(rows.min()), int(rows.max()) + 1), slice(int(columns.min()), int(columns.max()) + 1)


class _InputComponents:
    """The model components as the input grid samples them: ids 1..K, sizes, boxes and centroids, from one sort.

    ``model_ids`` are the model components of the input lesion ``pixels`` (flat input indices,
    ascending). A component no input pixel samples is dropped; the others are numbered in the
    raster order of their first input pixel (ndimage.label's order, when labelling on the
    input grid would find the same components).
    """

    def __init__(self, model_ids: np.ndarray, pixels: np.ndarray, shape: tuple[int, int], count: int) -> None:
        order = np.argsort(model_ids, kind="stable")  # stable: within a component, still raster order
        grouped = model_ids[order]
        starts = np.flatnonzero(np.concatenate(([True], grouped[1:] != grouped[:-1])))
        ends = np.append(starts[1:], grouped.size)
        rank = np.argsort(order[starts], kind="stable")  # by first input pixel
        #: model component id of each lesion (1-based), in lesion order
        self.kept = grouped[starts][rank]
        renumber = np.zeros(count + 1, dtype=np.int32)
        renumber[self.kept] = np.arange(1, self.kept.size + 1, dtype=np.int32)
        #: each input lesion pixel's lesion id (1..K)
        self.ids = renumber[model_ids]
        rows, cols = np.divmod(pixels[order], shape[1])
        self.sizes = (ends - starts)[rank]
        # rows ascend within each group (raster order kept by the stable sort): first and last give the extent
        self.boxes = np.stack([rows[starts], np.minimum.reduceat(cols, starts),
                               rows[ends - 1] + 1, np.maximum.reduceat(cols, starts) + 1], axis=1)[rank]
        self.centroids = np.stack([np.add.reduceat(rows, starts, dtype=np.float64),
                                   np.add.reduceat(cols, starts, dtype=np.float64)], axis=1)[rank] \
            / self.sizes[:, None]


def postprocess(outputs: Mapping[str, np.ndarray], slice_: SliceInput, grid: ModelGrid, *,
                labels: Sequence[str] = TARGET_LABELS, lesion_classes: Sequence[str] = LESION_CLASSES,
                index: int = 0, **meta: Any) -> Prediction:
    """One-off form of :class:`Postprocessor` (build the Postprocessor once on a hot path)."""
    return Postprocessor(grid, labels, lesion_classes)(outputs, slice_, index, **meta)
