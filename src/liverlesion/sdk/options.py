"""How ``predict`` reads each slice: its keywords gathered once, in one frozen object."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .geometry import MAX_TILT_DEG
from .inputs import SliceInput, load_slice


@dataclass(frozen=True)
class PredictOptions:
    """The per-slice options of ``predict`` / ``predict_batch`` (see :func:`~liverlesion.sdk.load_slice`).

    They are checked where they apply, by the reader of each slice, so that one given for
    another kind of input (``index`` with a DICOM file) is ignored as before.
    """

    spacing: Sequence[float] | None = None
    index: int | None = None
    frame: int | None = None
    max_tilt_deg: float = MAX_TILT_DEG
    allow_non_hu: bool = False
    max_side: int | None = None

    def load(self, item: Any, default_spacing: Sequence[float] | None = None) -> SliceInput:
        """``item`` as a checked SliceInput; arrays without ``spacing`` take ``default_spacing``."""
        return load_slice(item, spacing=self.spacing, default_spacing=default_spacing, index=self.index,
                          frame=self.frame, max_tilt_deg=self.max_tilt_deg, allow_non_hu=self.allow_non_hu,
                          max_side=self.max_side)
