"""The overlay PNG: the slice in grey, the labels in their colours, the lesions named."""

from __future__ import annotations

import numpy as np
import pytest

from liverlesion.errors import InputError
from liverlesion.grid import ModelGrid
from liverlesion.labels import LABEL_COLOURS
from liverlesion.sdk import Postprocessor, SliceInput, write_overlay

pytest.importorskip("matplotlib")


def prediction_on(slice_: SliceInput):
    grid = ModelGrid(size=(64, 64), spacing_mm=(2.0, 2.0))
    y, x = np.mgrid[:64, :64]
    labels = np.zeros((64, 64), np.int32)
    labels[(y - 32) ** 2 + (x - 32) ** 2 < 20 ** 2] = 1
    labels[(y - 25) ** 2 + (x - 25) ** 2 < 4 ** 2] = 4
    labels[(y - 40) ** 2 + (x - 38) ** 2 < 3 ** 2] = 2
    probs = np.full((1, 5, 64, 64), 0.1, np.float32)
    return Postprocessor(grid)({"labels": labels[None], "probabilities": probs}, slice_)


def test_overlay_shows_the_labels_in_their_colours(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    hu = np.full((128, 128), 40.0, np.float32)
    slice_ = SliceInput(hu=hu, spacing_mm=(1.0, 1.0))
    prediction = prediction_on(slice_)
    path = write_overlay(slice_.hu, prediction, tmp_path / "overlay.png")
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.png"]
    png = image.imread(path)[..., :3]
    scale = png.shape[0] / 128
    assert png.shape[0] == png.shape[1] >= 128

    def colour_at(row: float, col: float) -> np.ndarray:
        return png[int((row + 0.5) * scale), int((col + 0.5) * scale)]

    for lesion in prediction.lesions:
        pixel = colour_at(*lesion.centroid)
        dominant = int(np.argmax(LABEL_COLOURS[lesion.label]))
        assert np.argmax(pixel) == dominant, (lesion.label, pixel)
    liver_pixel = colour_at(64, 90)  # inside the liver, away from lesions and text
    assert np.argmax(liver_pixel) == 1
    grey = colour_at(2, 2)  # outside the liver: the slice in grey
    assert np.ptp(grey) < 0.02


def test_overlay_refuses_a_slice_of_another_shape(tmp_path):
    slice_ = SliceInput(hu=np.zeros((128, 128), np.float32), spacing_mm=(1.0, 1.0))
    with pytest.raises(InputError, match="does not match"):
        write_overlay(np.zeros((100, 128)), prediction_on(slice_), tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
