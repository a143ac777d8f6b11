"""Parity of the two ways a slice reaches the network: host resampling (today's path) or the slice graph.

Both run the same fused graph at the same precision on onnxruntime CPU. The host path resamples with
``grid.to_model_grid`` and brings the labels back with ``grid.from_model_grid`` (what the SDK does for a
slice in the radiological view; the SDK's tests cover flipped and transposed slices); the slice graph
(``export.resampling_graph``) does both inside the graph. :func:`compare_paths` counts, per slice, the
input pixels whose labels differ, and where: on a resampling boundary (the host label map changes within
the pixel's 3 x 3 neighbourhood) or inside a region. Only boundary differences are expected: bilinear
weights computed in float32 in another order can tip a pixel whose HU sits at a decision edge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..grid import ModelGrid, check_spacing, from_model_grid, to_model_grid
from ..grid_affine import UNFLIPPED, slice_graph_feeds
from ..metrics import FIRST_LESION_LABEL, dice, liver_dice, slice_lesion_class
from .parity import cpu_session

LABELS_INPUT = "labels_input"
#: One slice in the radiological view: HU (rows x cols, as stored) and its spacing (row_mm, col_mm).
Slice = tuple[np.ndarray, tuple[float, float]]


@dataclass
class ParityReport:
    """Label agreement of the slice graph with the host path, over a set of slices."""

    slices: int = 0
    pixels: int = 0
    differing: int = 0
    #: differing pixels whose host label changes within their 3 x 3 neighbourhood
    on_boundaries: int = 0
    #: per differing slice: its name, differing pixels and how many lie on boundaries
    worst: list[dict[str, Any]] = field(default_factory=list)
    #: scores of each path against the ground truth on the input grid, where the slices have one
    scores: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def agreement(self) -> float:
        return 1.0 - self.differing / self.pixels if self.pixels else 1.0

    @property
    def boundary_share(self) -> float:
        """Share of the differing pixels that lie on a boundary (1.0 when none differ)."""
        return self.on_boundaries / self.differing if self.differing else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"slices": self.slices, "pixels": self.pixels, "differing": self.differing,
                "agreement": self.agreement, "on_boundaries": self.on_boundaries,
                "boundary_share": self.boundary_share, "worst": self.worst[:5], "scores": self.scores}


def _boundary(labels: np.ndarray) -> np.ndarray:
    """Pixels whose 3 x 3 neighbourhood holds another label."""
    return np.asarray(ndimage.maximum_filter(labels, 3) != ndimage.minimum_filter(labels, 3))


class PathRunner:
    """Both paths of one precision: the fused graph (host resampling) and its slice graph, on onnxruntime CPU."""

    def __init__(self, fused: str | Path, slice_graph: str | Path, grid: ModelGrid) -> None:
        self.grid = grid
        self.fused, self.wrapped = cpu_session(fused), cpu_session(slice_graph)
        self._fused_input = self.fused.get_inputs()[0].name

    def host(self, item: Slice) -> np.ndarray:
        hu, spacing = item
        on_grid = to_model_grid(hu, spacing, self.grid)[None, None]
        labels = self.fused.run(["labels"], {self._fused_input: on_grid})[0][0]
        return from_model_grid(labels, self.grid, hu.shape, spacing)

    def in_graph(self, item: Slice) -> np.ndarray:
        hu, spacing = item
        feeds = slice_graph_feeds([(hu, spacing, UNFLIPPED)], self.grid)
        return np.asarray(self.wrapped.run([LABELS_INPUT], feeds)[0][0])


def compare_paths(runner: PathRunner, slices: Iterable[tuple[str, Slice, np.ndarray | None]]) -> ParityReport:
    """Run both paths on each (name, slice, ground truth or None) and count the differences."""
    report = ParityReport()
    truth_scores: dict[str, list[list[float]]] = {"host": [], "slice_graph": []}
    classes: dict[str, list[bool]] = {"host": [], "slice_graph": []}
    for name, item, truth in slices:
        host, graph = runner.host(item), runner.in_graph(item)
        differ = host != graph
        count = int(differ.sum())
        on_edges = int((differ & _boundary(host)).sum()) if count else 0
        report.slices += 1
        report.pixels += host.size
        report.differing += count
        report.on_boundaries += on_edges
        if count:
            report.worst.append({"slice": name, "differing": count, "on_boundaries": on_edges})
        if truth is not None:
            for key, labels in (("host", host), ("slice_graph", graph)):
                truth_scores[key].append([liver_dice(labels, truth),
                                          dice(labels >= FIRST_LESION_LABEL, truth >= FIRST_LESION_LABEL)])
                classes[key].append(slice_lesion_class(labels) == slice_lesion_class(truth))
    report.worst.sort(key=lambda w: -w["differing"])
    for key, rows in truth_scores.items():
        if rows:
            liver, lesion = np.mean(rows, axis=0)
            report.scores[key] = {"liver_dice": float(liver), "lesion_dice": float(lesion),
                                  "accuracy": float(np.mean(classes[key]))}
    return report


def eval_slices(root: str | Path, training: Mapping[str, Any] | None = None
                ) -> list[tuple[str, Slice, np.ndarray]]:
    """The held-out lesion slices on their own grid, as ``export.accuracy.load_eval_set`` picks them."""
    from ..data.lesion_slices import read_lesion_slices
    from ..training.datasets import resolve_data_dir

    folder = resolve_data_dir(root, "lesion_slices").resolve()
    info = dict((training or {}).get("data", {}))
    groups = None
    if info.get("root") and info.get("kind") == "lesion_slices" and Path(info["root"]).resolve() == folder:
        groups = {str(g) for g in info.get("val_groups") or []}
    return [(s.case_id, (s.hu.astype(np.float32, copy=False), check_spacing(s.spacing_mm)), s.mask)
            for s in read_lesion_slices(folder) if groups is None or s.patient_id in groups]
