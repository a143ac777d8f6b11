"""metrics: the one definition of Dice, recall, slice classes and their aggregates, on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from liverlesion import metrics
from liverlesion.errors import InputError


def test_dice_and_recall_by_hand():
    pred = np.array([[1, 1, 0, 0]], bool)
    true = np.array([[0, 1, 1, 1]], bool)
    # |P|=2, |T|=3, |P and T|=1
    assert metrics.dice(pred, true) == pytest.approx(2 * 1 / 5)
    assert metrics.recall(pred, true) == pytest.approx(1 / 3)
    assert metrics.dice(true, true) == 1.0
    assert metrics.dice(pred, ~pred) == 0.0


def test_empty_mask_conventions():
    empty = np.zeros((3, 3), bool)
    full = np.ones((3, 3), bool)
    assert metrics.dice(empty, empty) == 1.0
    assert metrics.recall(empty, empty) == 1.0
    assert metrics.recall(full, empty) == 1.0  # nothing to find
    assert metrics.dice(full, empty) == 0.0
    assert metrics.recall(empty, full) == 0.0


def test_shape_mismatch_is_refused():
    with pytest.raises(InputError, match="shape"):
        metrics.dice(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(InputError, match="shapes"):
        metrics.agreement(np.zeros(4), np.zeros(5))


def test_masks_and_liver_dice_include_lesions_in_liver():
    true = np.array([[0, 1, 1, 3]])
    pred = np.array([[0, 1, 2, 1]])  # a liver pixel called cyst, a hemangioma called liver
    assert metrics.lesion_mask(true).tolist() == [[False, False, False, True]]
    assert metrics.liver_mask(true).tolist() == [[False, True, True, True]]
    assert metrics.liver_dice(pred, true) == 1.0  # the whole organ agrees
    assert metrics.dice(metrics.lesion_mask(pred), metrics.lesion_mask(true)) == 0.0


def test_slice_class_is_the_majority_of_lesion_pixels():
    label_map = np.array([[1, 2, 4, 4], [4, 3, 3, 0]])  # cyst 1, hemangioma 2, metastasis 3
    assert metrics.slice_lesion_class(label_map) == 2
    assert metrics.slice_lesion_class(np.array([[2, 3, 1]])) == 0  # tie -> lower index
    assert metrics.slice_lesion_class(np.array([[0, 1, 1]])) is None


def test_accuracy_confusion_and_per_class_recall_by_hand():
    true = ["cyst", "cyst", "hemangioma", "metastasis", "metastasis", 2]
    pred = [0, 1, "hemangioma", 2, None, 0]
    assert metrics.accuracy(pred, true) == pytest.approx(3 / 6)
    matrix = metrics.confusion_matrix(pred, true)
    assert matrix.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 1]]
    assert metrics.per_class_recall(pred, true) == pytest.approx([0.5, 1.0, 1 / 3])
    assert metrics.per_class_recall([0], [0]) == [1.0, None, None]
    assert math.isnan(metrics.accuracy([], []))
    with pytest.raises(InputError, match="unknown lesion class"):
        metrics.accuracy(["tumour"], ["cyst"])
    with pytest.raises(InputError, match="not None"):
        metrics.accuracy([0], [None])


def test_agreement():
    a = np.array([[0, 1], [2, 4]])
    assert metrics.agreement(a, np.array([[0, 1], [3, 4]])) == 0.75
    assert metrics.agreement(a, a) == 1.0


def test_evaluate_predictions_aggregates_per_slice():
    true = [np.array([[1, 2, 2, 0]]), np.array([[4, 4, 1, 1]])]
    pred = [np.array([[1, 2, 0, 0]]), np.array([[1, 1, 1, 1]])]
    result = metrics.evaluate_predictions(pred, true, [0, None], ["cyst", "metastasis"])
    # slice 1: lesion dice 2*1/3, recall 1/2, liver dice 2*2/(2+3); slice 2: lesion 0, 0, liver 1.
    assert result["lesion_dice"] == pytest.approx((2 / 3 + 0) / 2)
    assert result["lesion_recall"] == pytest.approx((0.5 + 0) / 2)
    assert result["liver_dice"] == pytest.approx((0.8 + 1.0) / 2)
    assert result["lesion_dice_pooled"] == pytest.approx(2 * 1 / (1 + 4))
    assert result["accuracy"] == 0.5
    assert result["per_class_recall"] == {"cyst": 1.0, "hemangioma": None, "metastasis": 0.0}
    assert result["confusion_matrix"] == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    assert result["slices"] == 2
    seg_only = metrics.evaluate_predictions(pred, true)
    assert "accuracy" not in seg_only and seg_only["lesion_dice"] == result["lesion_dice"]
    with pytest.raises(InputError):
        metrics.evaluate_predictions(pred, true[:1])


def test_metrics_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, liverlesion.metrics; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
