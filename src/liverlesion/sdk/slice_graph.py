"""The slice graph from the SDK's side: when a load uses it, and what it is fed.

A package's slice graphs (``liverlesion slice-graphs``) resample onto the model grid and back inside
the graph. On a GPU that moves the host's two resamplings onto the device; on a CPU the same
arithmetic in the runtime is slower than the host's numpy path (measured: +6.6 ms on onnxruntime,
+4.2 ms on OpenVINO per 512 x 512 slice, against 0.7 ms on the host), so ``graph="auto"`` takes it
only for a backend that runs it on a GPU. Backends that run it: ``Backend.runs_slice_graph``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..backends.base import GRAPHS, MODEL_GRID, SLICE
from ..backends.choice import Selection
from ..backends.registry import backend_class
from ..errors import InputError
from ..grid import ModelGrid
from ..grid_affine import slice_graph_feeds
from ..package.manifest import SLICE_ROLE, Manifest
from .inputs.slice import SliceInput

#: What ``LesionAnalyzer.load(graph=...)`` accepts.
GRAPH_CHOICES = ("auto", *GRAPHS)


def slice_feeds(slices: Sequence[SliceInput], grid: ModelGrid) -> dict[str, np.ndarray]:
    """The slice graph's inputs for slices of one stored shape: HU as stored (rescale 1, 0) and the affines."""
    return slice_graph_feeds([(s.hu, s.spacing_mm, s.orientation) for s in slices], grid)


def _runs_slice_graph(backend: str) -> bool:
    return bool(getattr(backend_class(backend), "runs_slice_graph", False))


def with_graph(selection: Selection, asked: str, manifest: Manifest) -> Selection:
    """``selection`` with each choice told which graph to run (``options["graph"]`` where it is the slice graph).

    Engine backends offer their slice-graph engines as choices of their own (``options["graph"]``);
    onnxruntime runs either graph of one file set. "model-grid": every slice-graph choice is left out;
    "slice": only slice-graph choices are kept (InputError when none is possible); "auto": engine choices
    stay as offered, and onnxruntime takes the slice graph where the package has one and it runs on a GPU.
    """
    if asked not in GRAPH_CHOICES:
        raise InputError(f"graph={asked!r:.40} is not accepted: give one of {', '.join(GRAPH_CHOICES)}")
    if asked == MODEL_GRID:
        kept = tuple(c for c in selection.candidates if c.options.get("graph", MODEL_GRID) == MODEL_GRID)
        if not kept:
            raise InputError("graph='model-grid' was asked for, but every backend considered offers only "
                             "slice-graph engines; build a model-grid engine, or load with graph='auto'")
        return replace(selection, candidates=kept)
    has_slice = any(f.role == SLICE_ROLE for f in manifest.files)
    if asked == SLICE and not has_slice:
        raise InputError("graph='slice' was asked for, but the package holds no slice graph; add them with "
                         "liverlesion slice-graphs PACKAGE, or load with graph='model-grid'")
    chosen = []
    for choice in selection.candidates:
        offered = choice.options.get("graph")
        if offered is not None or "engine" in choice.options or "build" in choice.options:  # an engine choice
            if asked == SLICE and offered != SLICE:
                continue
            chosen.append(choice)
            continue
        runs = has_slice and _runs_slice_graph(choice.backend)
        if asked == SLICE and not runs:
            continue
        if asked == SLICE or (runs and choice.device != "CPU"):
            why = "slice graph asked for" if asked == SLICE else "slice graph: the resampling runs on the GPU"
            choice = replace(choice, options={**choice.options, "graph": SLICE}, reason=f"{choice.reason}; {why}")
        chosen.append(choice)
    if not chosen:
        tried = ", ".join(dict.fromkeys(c.backend for c in selection.candidates)) or "none"
        raise InputError(f"graph='slice' was asked for, but no backend considered ({tried}) runs slice graphs "
                         "here: onnxruntime runs them (any provider), TensorRT and TensorRT-RTX from a slice-graph "
                         "engine (liverlesion build-engine --graph slice)")
    return replace(selection, candidates=tuple(chosen))
