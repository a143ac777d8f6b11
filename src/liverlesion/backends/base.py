"""The interface every inference backend implements."""

from __future__ import annotations

import abc
import threading
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import InputError
from ..package import ModelPackage
from ..package.manifest import GRAPHS as ALL_GRAPHS
from ..package.manifest import MODEL_GRID_GRAPH, SLICE_GRAPH

#: The two graphs a package may hold (``Backend.graph``).
MODEL_GRID, SLICE, GRAPHS = MODEL_GRID_GRAPH, SLICE_GRAPH, ALL_GRAPHS
#: The slice graph's inputs and their shapes past the batch (H, W: the stored slice, 2 or more each).
SLICE_FEEDS = {"pixels": (1, "H", "W"), "rescale": (2,), "theta": (2, 3), "theta_back": (2, 3)}


def check_slice_feeds(feeds: object, max_batch: int | None) -> int:
    """The batch size of a valid slice-graph feed, or InputError saying which input is wrong and why."""
    if not isinstance(feeds, dict) or set(feeds) != set(SLICE_FEEDS):
        got = sorted(feeds) if isinstance(feeds, dict) else type(feeds).__name__
        raise InputError(f"slice-graph inputs must be a dict of {', '.join(SLICE_FEEDS)}; got {got}")
    batch = None
    for name, tail in SLICE_FEEDS.items():
        value = feeds[name]
        ok = isinstance(value, np.ndarray) and value.dtype == np.float32 and value.ndim == len(tail) + 1 and all(
            (isinstance(t, int) and d == t) or (isinstance(t, str) and d >= 2) for d, t in zip(value.shape[1:], tail))
        if not ok or (batch is not None and value.shape[0] != batch) or value.shape[0] < 1:
            got = f"{type(value).__name__} {getattr(value, 'dtype', '')} {getattr(value, 'shape', '')}"
            raise InputError(f"slice-graph input {name!r} must be float32 of shape (N, {', '.join(map(str, tail))}) "
                             f"with the same N >= 1 as the others (H, W >= 2), got {got}")
        batch = value.shape[0]
    assert batch is not None
    if max_batch is not None and batch > max_batch:
        raise InputError(f"batch of {batch} exceeds this model's maximum batch {max_batch}")
    return batch


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of a graph input; -1 marks a dynamic dimension."""

    name: str
    dtype: str
    shape: tuple[int, ...]


class Backend(abc.ABC):
    """Runs a package's fused graph. Subclasses set ``name`` and implement ``_run``.

    Lifecycle: construct (loads the model), ``infer`` any number of times, ``close``
    (also via a ``with`` block). ``infer`` is safe to call from several threads;
    each backend documents how (a lock, or per-thread contexts).
    """

    name: ClassVar[str] = "base"
    #: Whether this backend can run a package's slice graph (``graph="slice"``: resampling in the graph).
    runs_slice_graph: ClassVar[bool] = False
    #: Which graph this instance runs: "model-grid" (HU on the model grid in) or "slice" (the slice as stored).
    graph: str = MODEL_GRID

    def __init__(self, package: ModelPackage, precision: str) -> None:
        self.package = package
        self.precision = precision
        self._timing = threading.local()  # per thread: threads sharing one backend each read their own
        self._closed = False

    # -- what subclasses provide ---------------------------------------------
    @classmethod
    @abc.abstractmethod
    def availability(cls) -> tuple[bool, str]:
        """(usable on this machine, reason) without loading any model or touching a GPU driver unsafely."""

    @abc.abstractmethod
    def _run(self, hu: np.ndarray) -> dict[str, np.ndarray]:
        """Run the graph on N x 1 x H x W float32 HU; return outputs by name."""

    @abc.abstractmethod
    def model_file(self) -> tuple[str, int]:
        """The package file this backend runs (its path in the package) and its size in bytes."""

    def _release(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Free runtime resources (sessions, contexts, device buffers); nothing by default."""

    @property
    def device(self) -> str:
        """Where inference runs, in words (e.g. 'CPU', 'CUDA:0 NVIDIA H100')."""
        return "CPU"

    @property
    def max_batch(self) -> int | None:
        """Largest batch the loaded model accepts, None when unbounded."""
        return None

    # -- the common part ------------------------------------------------------
    def input_metadata(self) -> TensorSpec:
        rows, cols = self.package.manifest.grid.size
        return TensorSpec(name=self.package.manifest.input_name, dtype="float32", shape=(-1, 1, rows, cols))

    def infer(self, hu: np.ndarray) -> dict[str, np.ndarray]:
        """Check the batch against the input spec, run it, and time the run."""
        if self._closed:
            raise InputError(f"the {self.name} backend was closed; load the model again")
        if self.graph != MODEL_GRID:
            raise InputError(f"this {self.name} backend was loaded for the {self.graph} graph: feed it with "
                             "infer_slices (the slice as stored and its affines), not HU on the model grid")
        spec = self.input_metadata()
        if not isinstance(hu, np.ndarray) or hu.dtype != np.float32 or hu.ndim != 4 \
                or hu.shape[1:] != spec.shape[1:] or hu.shape[0] < 1:
            got = f"{type(hu).__name__} {getattr(hu, 'dtype', '')} {getattr(hu, 'shape', '')}"
            raise InputError(f"backend input must be float32 of shape (N, {', '.join(map(str, spec.shape[1:]))}) "
                             f"with N >= 1, got {got}")
        if self.max_batch is not None and hu.shape[0] > self.max_batch:
            raise InputError(f"batch of {hu.shape[0]} exceeds this model's maximum batch {self.max_batch}")
        start = time.perf_counter()
        outputs = self._run(np.ascontiguousarray(hu))
        self._timing.seconds = time.perf_counter() - start
        return outputs

    def _run_slices(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the slice graph on its four inputs (backends with ``runs_slice_graph``)."""
        raise InputError(f"the {self.name} backend runs no slice graph")

    def infer_slices(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check the slice graph's inputs (``SLICE_FEEDS``: one stored size per batch), run them, time the run."""
        if self._closed:
            raise InputError(f"the {self.name} backend was closed; load the model again")
        if self.graph != SLICE:
            raise InputError(f"this {self.name} backend was loaded for the {self.graph} graph; load it with "
                             "graph='slice' to feed stored slices")
        check_slice_feeds(feeds, self.max_batch)
        start = time.perf_counter()
        outputs = self._run_slices({name: np.ascontiguousarray(feeds[name]) for name in SLICE_FEEDS})
        self._timing.seconds = time.perf_counter() - start
        return outputs

    def last_inference_time(self) -> float:
        """Seconds taken by this thread's last ``infer`` call (the runtime only, no host pre/postprocessing)."""
        return float(getattr(self._timing, "seconds", float("nan")))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(precision={self.precision!r}, device={self.device!r})"
