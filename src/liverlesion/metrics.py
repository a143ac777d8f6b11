"""The one definition of the evaluation metrics (numpy only, safe to import at runtime).

Training, ``liverlesion evaluate``, export accuracy reports and the benchmarks all call
these functions. Label maps may use any of the package's conventions, because they
agree on the two thresholds used here:

* lesion pixels are ``label >= FIRST_LESION_LABEL`` (2): cyst/hemangioma/metastasis in
  the 5-label map, "tumor" in LiTS, "lesion" in the Y-Net map;
* liver pixels are ``label >= LIVER`` (1): the liver *including* its lesions. Lesions
  lie inside the liver, and LiTS liver Dice is conventionally reported on the whole
  organ, so a lesion predicted as liver (or vice versa) does not count against it.

Conventions: Dice and recall of two empty masks are 1.0 (nothing to find, nothing
found); a slice-level class is ``None`` when a map has no lesion pixel, and a ``None``
prediction counts as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InputError
from .labels import FIRST_LESION_LABEL, LESION_CLASSES, LIVER

ClassLike = int | str | None


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if pred.shape != target.shape:
        raise InputError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    return pred, target


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice coefficient 2|P∩T| / (|P| + |T|) of two binary masks; 1.0 when both are empty."""
    pred, target = _pair(pred, target)
    total = int(pred.sum()) + int(target.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, target).sum()) / total


def recall(pred: np.ndarray, target: np.ndarray) -> float:
    """Sensitivity |P∩T| / |T| of two binary masks; 1.0 when the target is empty."""
    pred, target = _pair(pred, target)
    positives = int(target.sum())
    return 1.0 if positives == 0 else int(np.logical_and(pred, target).sum()) / positives


def lesion_mask(label_map: np.ndarray) -> np.ndarray:
    """Pixels of any lesion type (``label >= FIRST_LESION_LABEL``)."""
    return np.asarray(label_map) >= FIRST_LESION_LABEL


def liver_mask(label_map: np.ndarray) -> np.ndarray:
    """Liver including its lesions (``label >= LIVER``)."""
    return np.asarray(label_map) >= LIVER


def liver_dice(pred_map: np.ndarray, true_map: np.ndarray) -> float:
    """Dice of the whole liver (lesions included) between two label maps."""
    return dice(liver_mask(pred_map), liver_mask(true_map))


def slice_lesion_class(label_map: np.ndarray, num_classes: int = len(LESION_CLASSES)) -> int | None:
    """Class index read off a joint 5-label map: majority vote of its lesion pixels.

    Ties go to the lower class index; ``None`` when the map has no lesion pixel.
    """
    values = np.asarray(label_map)
    lesion = values[values >= FIRST_LESION_LABEL].astype(np.int64) - FIRST_LESION_LABEL
    if lesion.size == 0:
        return None
    counts = np.bincount(lesion, minlength=num_classes)
    return int(np.argmax(counts))


def class_index(value: ClassLike, num_classes: int = len(LESION_CLASSES)) -> int | None:
    """A class given as an index or a name of ``LESION_CLASSES`` -> index (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, str):
        if value not in LESION_CLASSES:
            raise InputError(f"unknown lesion class {value!r}; accepted: {', '.join(LESION_CLASSES)}")
        return LESION_CLASSES.index(value)
    index = int(value)
    if not 0 <= index < num_classes:
        raise InputError(f"class index {value!r} is outside 0..{num_classes - 1}")
    return index


def _classes(pred: Sequence[ClassLike], true: Sequence[ClassLike], num_classes: int) -> tuple[list, list]:
    if len(pred) != len(true):
        raise InputError(f"{len(pred)} predicted classes for {len(true)} true classes")
    true_idx = [class_index(t, num_classes) for t in true]
    if any(t is None for t in true_idx):
        raise InputError("every true class must be a class index or name, not None")
    return [class_index(p, num_classes) for p in pred], true_idx


def accuracy(pred: Sequence[ClassLike], true: Sequence[ClassLike]) -> float:
    """Fraction of correct classes (a ``None`` prediction is wrong); nan for no samples."""
    pred_idx, true_idx = _classes(pred, true, len(LESION_CLASSES))
    if not true_idx:
        return float("nan")
    return sum(p == t for p, t in zip(pred_idx, true_idx, strict=True)) / len(true_idx)


def confusion_matrix(pred: Sequence[ClassLike], true: Sequence[ClassLike],
                     num_classes: int = len(LESION_CLASSES)) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class plus a last column for "no lesion found"."""
    pred_idx, true_idx = _classes(pred, true, num_classes)
    matrix = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
    for p, t in zip(pred_idx, true_idx, strict=True):
        matrix[t, num_classes if p is None else p] += 1
    return matrix


def per_class_recall(pred: Sequence[ClassLike], true: Sequence[ClassLike],
                     num_classes: int = len(LESION_CLASSES)) -> list[float | None]:
    """Recall of each class (correct / true count); ``None`` for a class with no true sample."""
    matrix = confusion_matrix(pred, true, num_classes)
    totals = matrix.sum(axis=1)
    return [float(matrix[c, c] / totals[c]) if totals[c] else None for c in range(num_classes)]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels where two label maps hold the same label (backend/precision parity)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"label maps of different shapes {a.shape} and {b.shape}")
    return float(np.mean(a == b)) if a.size else 1.0


def evaluate_predictions(pred_maps: Sequence[np.ndarray], true_maps: Sequence[np.ndarray],
                         pred_classes: Sequence[ClassLike] | None = None,
                         true_classes: Sequence[ClassLike] | None = None) -> dict[str, Any]:
    """Aggregate segmentation and classification metrics over slices, as a JSON-able dict.

    Segmentation: lesion Dice and recall, liver Dice, each the mean over slices, plus
    the lesion Dice of all pixels pooled. Classification (when both class lists are
    given): accuracy, per-class recall and the confusion matrix.
    """
    if len(pred_maps) != len(true_maps):
        raise InputError(f"{len(pred_maps)} predicted maps for {len(true_maps)} true maps")
    if not len(true_maps):
        raise InputError("evaluate_predictions needs at least one slice")
    lesion_dice, lesion_recall, whole_liver = [], [], []
    overlap = pred_total = true_total = 0
    for pred_map, true_map in zip(pred_maps, true_maps, strict=True):
        pred_lesion, true_lesion = _pair(lesion_mask(pred_map), lesion_mask(true_map))
        lesion_dice.append(dice(pred_lesion, true_lesion))
        lesion_recall.append(recall(pred_lesion, true_lesion))
        whole_liver.append(liver_dice(pred_map, true_map))
        overlap += int(np.logical_and(pred_lesion, true_lesion).sum())
        pred_total += int(pred_lesion.sum())
        true_total += int(true_lesion.sum())
    result: dict[str, Any] = {
        "slices": len(true_maps),
        "lesion_dice": float(np.mean(lesion_dice)),
        "lesion_recall": float(np.mean(lesion_recall)),
        "liver_dice": float(np.mean(whole_liver)),
        "lesion_dice_pooled": 2.0 * overlap / (pred_total + true_total) if pred_total + true_total else 1.0,
    }
    if pred_classes is not None and true_classes is not None:
        if len(true_classes) != len(true_maps):
            raise InputError(f"{len(true_classes)} true classes for {len(true_maps)} slices")
        result["accuracy"] = accuracy(pred_classes, true_classes)
        recalls = per_class_recall(pred_classes, true_classes)
        result["per_class_recall"] = dict(zip(LESION_CLASSES, recalls, strict=True))
        result["confusion_matrix"] = confusion_matrix(pred_classes, true_classes).tolist()
        result["confusion_columns"] = [*LESION_CLASSES, "none"]
    return result
