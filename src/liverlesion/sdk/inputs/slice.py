"""One CT slice as the SDK receives it: HU on its own grid, its spacing and orientation.

Every input kind (array, DICOM, NIfTI) becomes a :class:`SliceInput`; where its pixels lie
relative to the model grid is ``sdk.geometry``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...grid import ModelGrid, check_spacing
from ..geometry import IDENTITY, Orientation, to_model


@dataclass(frozen=True, eq=False)
class SliceInput:
    """A validated slice: HU (float32, as stored), spacing (row_mm, col_mm), orientation, provenance."""

    hu: np.ndarray
    spacing_mm: tuple[float, float]
    orientation: Orientation = IDENTITY
    #: JSON-able description of where the slice came from (kind, path, SOP instance, frame, index...).
    source: dict[str, Any] = field(default_factory=dict)
    #: The pydicom Dataset, when the slice came from DICOM (needed for DICOM SEG/SR output).
    dataset: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing_mm", check_spacing(self.spacing_mm))

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.hu.shape[0]), int(self.hu.shape[1])

    @property
    def canonical_spacing(self) -> tuple[float, float]:
        return self.orientation.canonical_spacing(self.spacing_mm)

    def canonical_hu(self) -> np.ndarray:
        """The slice in the radiological view the model was trained on."""
        return self.orientation.to_canonical(self.hu)

    def on_model_grid(self, grid: ModelGrid) -> np.ndarray:
        """HU resampled onto the model grid (float32, rows x cols of ``grid``)."""
        return to_model(self.hu, self.spacing_mm, self.orientation, grid)
