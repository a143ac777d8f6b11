"""A PNG a person can look at: the slice in an abdomen window, the label map, the lesions named.

matplotlib (the ``viz`` extra) is imported only when an overlay is written.
"""

from __future__ import annotations

import io
import math
import os
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from ...atomic import atomic_write_bytes
from ...errors import InputError, require
from ...labels import LABEL_COLOURS, TARGET_LABELS
from ..prediction import Prediction
from .targets import check_file

#: Abdomen soft-tissue window (HU) used for the grey image.
ABDOMEN_WINDOW = (-160.0, 240.0)


def _rgba(label_map: np.ndarray, alpha: float) -> np.ndarray:
    lut = np.zeros((len(TARGET_LABELS), 4), dtype=np.float32)
    for index, name in enumerate(TARGET_LABELS):
        if name in LABEL_COLOURS:
            lut[index, :3] = _unit(LABEL_COLOURS[name])
            lut[index, 3] = alpha
    return lut[label_map]


def write_overlay(hu: np.ndarray, prediction: Prediction, path: str | os.PathLike[str], *,
                  window: tuple[float, float] = ABDOMEN_WINDOW, alpha: float = 0.45, dpi: int = 100) -> Path:
    """Write a PNG of ``hu`` (the input slice) with ``prediction``'s labels over it; returns the path.

    The folder must exist (a missing one is refused, as by ``save_dicom``).
    """
    require("matplotlib", "viz", "writing overlay images")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if not isinstance(prediction, Prediction):
        raise InputError(f"overlay: needs a Prediction (from LesionAnalyzer.predict), got {type(prediction).__name__}")
    hu = np.asarray(hu)
    if hu.ndim != 2 or hu.shape != prediction.shape:
        raise InputError(f"overlay: slice of shape {hu.shape} does not match the prediction's {prediction.shape}; "
                         "pass the slice the prediction was made on (SliceInput.hu)")
    window, alpha, dpi = _check_style(window, alpha, dpi)
    path = check_file(path, "overlay")
    rows, cols = hu.shape
    scale = max(1.0, 640.0 / max(rows, cols))  # small slices are drawn larger, so the text stays legible
    figure = Figure(figsize=(cols * scale / dpi, rows * scale / dpi), dpi=dpi)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.imshow(hu, cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
    axes.imshow(_rgba(prediction.label_map, alpha), interpolation="nearest")
    axes.set_axis_off()
    for lesion in prediction.lesions:
        row0, col0, row1, col1 = lesion.bbox
        axes.add_patch(_box(lesion.bbox, LABEL_COLOURS[lesion.label]))
        right = col1 + 2 < cols * 0.7
        axes.text(col1 + 2 if right else col0 - 2, (row0 + row1) / 2,
                  f"{lesion.label} {lesion.probability:.2f}\n{lesion.area_mm2:.0f} mm²",
                  color="white", fontsize=8, va="center", ha="left" if right else "right",
                  bbox={"facecolor": "black", "alpha": 0.6, "pad": 1.5, "edgecolor": "none"})
    present = [name for name in LABEL_COLOURS
               if name == "liver" or any(x.label == name for x in prediction.lesions)]
    handles = [Patch(facecolor=_unit(LABEL_COLOURS[n]), label=n) for n in present]
    title = "no lesion" if prediction.slice_class is None else \
        f"slice: {prediction.slice_class} {prediction.slice_class_probability:.2f}"
    axes.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.7, title=title, title_fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=dpi, format="png")
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        raise InputError(f"overlay: cannot write {path} ({exc.strerror or exc})") from None
    return path


def _check_style(window: Any, alpha: Any, dpi: Any) -> tuple[tuple[float, float], float, int]:
    """(window, alpha, dpi) as Python numbers; refused where matplotlib would fail on them (or draw nothing)."""
    try:
        if isinstance(window, (str, bytes)):  # "12" would be the window (1, 2)
            raise TypeError
        low, high = (float(v) for v in window)
    except (TypeError, ValueError):
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InputError(f"overlay: window={window!r}; accepted: (low, high) HU, finite, low < high")
    # numbers.Real / Integral: numpy scalars (np.float32(0.5), np.int64(100)) are numbers too; bools are not
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, Real) or not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"overlay: alpha={alpha!r}; accepted: a number 0..1")
    if isinstance(dpi, (bool, np.bool_)) or not isinstance(dpi, Integral) or not 10 <= int(dpi) <= 1200:
        raise InputError(f"overlay: dpi={dpi!r}; accepted: an integer 10..1200")
    return (low, high), float(alpha), int(dpi)


def _box(bbox: tuple[int, int, int, int], colour: tuple[int, int, int]) -> Any:
    from matplotlib.patches import Rectangle

    row0, col0, row1, col1 = bbox
    return Rectangle((col0 - 0.5, row0 - 0.5), col1 - col0, row1 - row0, fill=False, linewidth=1.0,
                     edgecolor=_unit(colour))


def _unit(colour: tuple[int, int, int]) -> tuple[float, float, float]:
    """An RGB colour in 0-255 as matplotlib's 0-1 floats."""
    return colour[0] / 255.0, colour[1] / 255.0, colour[2] / 255.0
