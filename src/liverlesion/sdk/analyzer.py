"""``LesionAnalyzer``: load a model package once, then turn CT slices into Predictions on any backend.

One analyzer may be shared by many threads: inputs, resampling and postprocessing keep
no shared state, and each backend makes ``infer`` thread-safe in its own way (see
``liverlesion.backends``). ``close`` waits for predictions in flight, then frees the
backend; later calls raise a clear error.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..backends.base import MODEL_GRID
from ..backends.registry import BACKEND_NAMES, probe_machine
from ..errors import BackendError, InputError, LiverLesionError, PackageError
from ..grid import ModelGrid, check_spacing
from ..package import ModelPackage, PackageLimits, load_package
from ..package.digest import check_digest, normalize_digest
from .geometry import MAX_TILT_DEG
from .inputs import SliceInput
from .loader import load_first
from .options import PredictOptions
from .postprocess import Postprocessor
from .prediction import Prediction
from .selection import Selection, select
from .slice_graph import GRAPH_CHOICES, slice_feeds, with_graph

log = logging.getLogger("liverlesion.sdk")

#: Slices per device batch in ``predict_batch`` when neither the caller nor the backend bounds it.
DEFAULT_BATCH = 8
#: Warm-up runs on load: the first allocates the runtime's buffers, the second confirms the steady state.
WARMUP_RUNS = 2


def _ms(seconds: float) -> float:
    return seconds * 1000.0


class LesionAnalyzer:
    """Liver, lesions, lesion types and measurements for CT slices, from one model package."""

    def __init__(self, package: ModelPackage, backend: Any, selection: Selection, *,
                 owns_package: bool = True) -> None:
        """Use :meth:`load`; this wraps an already loaded package and backend."""
        self.package = package
        self.manifest = package.manifest
        self.selection = selection
        self._backend = backend
        self._owns_package = owns_package
        self._post = Postprocessor.from_manifest(self.manifest)
        self._model = {"name": self.manifest.model_name, "arch": self.manifest.arch,
                       "version": self.manifest.model.version}
        self._busy = threading.Condition()
        self._active = 0
        self._closed = False
        self.warmup_ms: list[float] = []
        spec = self.manifest.input
        try:
            self.default_spacing = check_spacing(spec.default_spacing_mm or self.grid.spacing_mm)
        except InputError as exc:
            raise PackageError(f"manifest: input.default_spacing_mm is not usable: {exc}") from None
        limits = [b for b in (backend.max_batch, spec.max_batch) if isinstance(b, int) and b > 0]
        self.max_batch = min(limits) if limits else None

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, package: str | os.PathLike[str] | ModelPackage, backend: str = "auto",
             precision: str = "auto", *, warmup: bool = True, threads: int | None = None,
             provider: str | None = None, build_engine: bool = False, verify: bool = True,
             expect_digest: str | None = None, trust_device_builds: bool = False,
             limits: PackageLimits | None = None, graph: str = "auto") -> LesionAnalyzer:
        """Open a package (folder or .zip; checksums verified) and load it on a backend.

        ``backend``: "auto" or a registered backend ("tensorrt", "onnxruntime", "openvino",
        "torch"); ``precision``: "auto", "fp32", "fp16", "int8" or "bf16" (see ``sdk.selection``
        for what auto picks, and ``analyzer.selection`` for why). ``provider``: onnxruntime's
        "cpu", "cuda" or "tensorrt". ``threads``: CPU threads of onnxruntime / OpenVINO / torch
        (at most the usable CPUs). ``build_engine``:
        build a TensorRT engine for this GPU when the package has none (minutes; the
        package folder gains the engine). ``warmup``: run the model before returning.
        ``expect_digest``: the package digest ``liverlesion inspect`` prints; any other
        package is refused (ChecksumError), and what this device built after export, which
        the digest does not cover (TensorRT engines, INT8 calibration caches, compiled-model
        caches), is not used: engines are left out (the selection says so) and OpenVINO
        compiles afresh, unless ``trust_device_builds=True``. ``limits``: package bounds
        (``package.limits``). ``graph``: "model-grid" (host resampling), "slice" (the package's
        slice graph resamples inside the graph; onnxruntime), or "auto" (the slice graph where it
        would run on a GPU; see ``sdk.slice_graph``).
        """
        if graph not in GRAPH_CHOICES:
            raise InputError(f"LesionAnalyzer.load: graph={graph!r:.40} is not accepted: give one of "
                             f"{', '.join(GRAPH_CHOICES)}")
        _check_load_arguments(package, verify, expect_digest)
        if not isinstance(trust_device_builds, bool):
            raise InputError(f"LesionAnalyzer.load: trust_device_builds must be True or False, got "
                             f"{trust_device_builds!r:.40}")
        if isinstance(package, ModelPackage):
            opened, owns, archive = package, False, False
            if expect_digest is not None:
                check_digest(package.manifest, normalize_digest(expect_digest), str(package.root))
        else:
            path = Path(os.fspath(package))
            opened = load_package(path, verify=verify, expect_digest=expect_digest, limits=limits)
            owns, archive = True, path.is_file()
        try:
            wanted = BACKEND_NAMES if backend == "auto" else (backend,)
            selection = select(opened.manifest, probe_machine(wanted), backend, precision, provider=provider,
                               build_engine=build_engine, pinned=expect_digest is not None,
                               trust_device_builds=trust_device_builds)
            selection = with_graph(selection, graph, opened.manifest)
            opened, loaded, selection = load_first(opened, selection, threads=threads,
                                                   explicit=backend != "auto", archive=archive)
        except BaseException:
            if owns:
                opened.close()
            raise
        log.info("liverlesion: %s", selection.summary())
        try:
            analyzer = cls(opened, loaded, selection, owns_package=owns)
        except BaseException:
            loaded.close()
            if owns:
                opened.close()
            raise
        if warmup:
            try:
                analyzer.warm_up()
            except BaseException:
                analyzer.close()
                raise
        return analyzer

    def warm_up(self, runs: int = WARMUP_RUNS) -> list[float]:
        """Predict a synthetic slice ``runs`` times so that the first real predict is not an outlier."""
        rows, cols = self.grid.size
        yy, xx = np.mgrid[:rows, :cols]
        body = ((yy - rows / 2) / (0.4 * rows)) ** 2 + ((xx - cols / 2) / (0.45 * cols)) ** 2 < 1
        hu = np.where(body, 50.0, -1000.0).astype(np.float32)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.predict(hu, spacing=self.grid.spacing_mm)
            times.append(_ms(time.perf_counter() - start))
        self.warmup_ms = times
        return times

    # -- what was loaded -------------------------------------------------------------------------
    @property
    def grid(self) -> ModelGrid:
        return self.manifest.grid

    @property
    def backend(self) -> str:
        return str(self._backend.name)

    @property
    def precision(self) -> str:
        return str(self._backend.precision)

    @property
    def device(self) -> str:
        return str(self._backend.device)

    @property
    def graph(self) -> str:
        """The graph the backend runs: "model-grid" (host resampling) or "slice" (resampling in the graph)."""
        return str(getattr(self._backend, "graph", MODEL_GRID))

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def model(self) -> dict[str, str]:
        return dict(self._model)

    # -- predicting --------------------------------------------------------------------------------
    def predict(self, slice: Any, *, spacing: Sequence[float] | None = None, index: int | None = None,
                frame: int | None = None, max_tilt_deg: float = MAX_TILT_DEG,
                allow_non_hu: bool = False, max_side: int | None = None) -> Prediction:
        """The Prediction for one slice: an HU array, a pydicom Dataset, a DICOM path, a NIfTI path
        with ``index``, or a SliceInput. Arrays without ``spacing`` take ``default_spacing``;
        ``max_side`` overrides ``input_limits.MAX_SIDE``."""
        options = PredictOptions(spacing, index, frame, max_tilt_deg, allow_non_hu, max_side)
        with self._using():
            return self._run([(None, slice)], options)[0]

    def predict_batch(self, slices: Iterable[Any], *, spacing: Sequence[float] | None = None,
                      index: int | None = None, frame: int | None = None, batch_size: int | None = None,
                      max_tilt_deg: float = MAX_TILT_DEG, allow_non_hu: bool = False,
                      max_side: int | None = None) -> list[Prediction]:
        """Predictions for several slices, run on the device in batches of at most ``batch_size``.

        The keyword arguments apply to every slice (give SliceInputs from ``load_slice`` for
        per-slice options). ``timings["inference_ms"]`` is each slice's share of its batch.
        A bad slice raises, naming its position; nothing is returned then.
        """
        if _is_single(slices):
            raise InputError(f"predict_batch takes a sequence of slices (or an N x rows x cols array), got "
                             f"{_describe(slices)}; for one slice use predict()")
        size = self._batch_size(batch_size)
        options = PredictOptions(spacing, index, frame, max_tilt_deg, allow_non_hu, max_side)
        results: list[Prediction] = []
        with self._using():
            for chunk in _chunks(enumerate(slices), size):
                results.extend(self._run(chunk, options))
        return results

    def predict_series(self, source: Any, **options: Any) -> Any:
        """The SeriesPrediction of a whole series (a DICOM folder, paths, Datasets, a NIfTI volume, or a 3-D HU
        array with ``spacing``): see ``sdk.series.pipeline.predict_series`` for the options."""
        from .series.pipeline import predict_series

        with self._using():
            return predict_series(self, source, **options)

    def _run(self, items: Sequence[tuple[int | None, Any]], options: PredictOptions) -> list[Prediction]:
        """The one pipeline: each slice read and resampled, one ``infer`` for them all, each decoded.

        ``items`` are (position in the batch, slice); position None is a lone ``predict``, whose
        errors are not prefixed. The inference time is the backend's own, shared out per slice.
        The three steps are apart so that the series pipeline can overlap them across batches.
        """
        results: list[Prediction] = []
        for ran in self._infer(self._prepare(items, options)):
            results.extend(self._decode(ran))
        if len(results) > 1:
            log.debug("batch of %d slices on the device", len(results))
        return results

    def _prepare(self, items: Sequence[tuple[int | None, Any]], options: PredictOptions) -> Prepared:
        """Each slice read and checked, and (host path) resampled onto the model grid; thread-safe."""
        on_host = self.graph == MODEL_GRID
        slices, stack = [], []
        for position, item in items:
            start = time.perf_counter()
            try:
                slice_ = options.load(item, self.default_spacing)
                if on_host:
                    stack.append(slice_.on_model_grid(self.grid))
            except LiverLesionError as exc:
                if position is None:
                    raise
                raise type(exc)(f"slice {position} of the batch: {exc}") from None
            slices.append((slice_, _ms(time.perf_counter() - start)))
        if not on_host:
            return Prepared(slices, None)
        batch = stack[0][None, None] if len(stack) == 1 else np.stack(stack)[:, None]
        return Prepared(slices, batch)

    def _infer(self, prepared: Prepared) -> list[Inferred]:
        """The backend's outputs for prepared slices: one run (host path), or one per stored size (slice graph)."""
        if prepared.batch is not None:
            outputs = self._backend.infer(prepared.batch)
            return [Inferred(outputs, prepared.slices, _ms(self._backend.last_inference_time()))]
        ran = []
        for _shape, group in itertools.groupby(prepared.slices, key=lambda p: p[0].shape):
            members = list(group)
            start = time.perf_counter()
            feeds = slice_feeds([slice_ for slice_, _ in members], self.grid)
            feed_ms = _ms(time.perf_counter() - start) / len(members)  # the affines, shared out
            outputs = self._backend.infer_slices(feeds)
            ran.append(Inferred(outputs, [(s, ms + feed_ms) for s, ms in members],
                                _ms(self._backend.last_inference_time())))
        return ran

    def _decode(self, ran: Inferred) -> list[Prediction]:
        """Each slice's Prediction from one run's outputs, the run's time shared out per slice; thread-safe."""
        share = ran.inference_ms / len(ran.slices)
        results = []
        for item_index, (slice_, pre_ms) in enumerate(ran.slices):
            start = time.perf_counter()
            prediction = self._finish(ran.outputs, slice_, item_index)
            post_ms = _ms(time.perf_counter() - start)
            prediction.timings.update(preprocess_ms=pre_ms, inference_ms=share, postprocess_ms=post_ms,
                                      total_ms=pre_ms + share + post_ms)
            results.append(prediction)
        return results

    def _finish(self, outputs: dict[str, np.ndarray], slice_: SliceInput, item: int) -> Prediction:
        return self._post(outputs, slice_, item, backend=self.backend, precision=self.precision,
                          model=self._model)

    def _batch_size(self, asked: int | None) -> int:
        if asked is not None and (isinstance(asked, bool) or not isinstance(asked, int) or asked < 1):
            raise InputError(f"batch_size={asked!r} is not accepted: give a positive integer")
        size = asked or DEFAULT_BATCH
        return min(size, self.max_batch) if self.max_batch else size

    # -- lifetime ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _using(self) -> Iterator[None]:
        """Count a call in flight, refusing it once the analyzer is closed."""
        with self._busy:
            if self._closed:
                raise BackendError("this LesionAnalyzer was closed; load the package again with "
                                   "LesionAnalyzer.load(...)")
            self._active += 1
        try:
            yield
        finally:
            with self._busy:
                self._active -= 1
                self._busy.notify_all()

    def close(self) -> None:
        """Wait for predictions in flight, then free the backend (and the unpacked archive). Idempotent."""
        with self._busy:
            if self._closed:
                return
            self._closed = True
            self._busy.wait_for(lambda: self._active == 0)
        self._backend.close()
        if self._owns_package:
            self.package.close()

    def __enter__(self) -> LesionAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.device
        return (f"LesionAnalyzer(model={self._model['name']!r}, backend={self.backend!r}, "
                f"precision={self.precision!r}, device={state!r})")


class Prepared(NamedTuple):
    """Slices read (with their preparation time, ms) and, on the host path, their model-grid HU batch."""

    slices: list[tuple[SliceInput, float]]
    batch: np.ndarray | None


class Inferred(NamedTuple):
    """One backend run: its outputs, the slices it ran (with preparation ms) and its inference time (ms)."""

    outputs: dict[str, np.ndarray]
    slices: list[tuple[SliceInput, float]]
    inference_ms: float


def _is_single(thing: Any) -> bool:
    """Whether ``thing`` is one slice (or a path / Dataset) rather than a sequence of slices."""
    if isinstance(thing, np.ndarray):
        return thing.ndim != 3
    if isinstance(thing, (str, bytes, os.PathLike, SliceInput)):
        return True
    pydicom = sys.modules.get("pydicom")  # a Dataset iterates over its elements; no import just for this
    return pydicom is not None and isinstance(thing, pydicom.Dataset)


def _describe(thing: Any) -> str:
    if isinstance(thing, np.ndarray):
        return f"an array of shape {thing.shape}"
    return f"a {type(thing).__name__}"


def _check_load_arguments(package: Any, verify: Any, expect_digest: Any) -> None:
    """Refuse, before anything is opened, a package argument of the wrong type (``load(None)``)."""
    if isinstance(package, ModelPackage):
        if expect_digest is not None and not package.verified:
            raise InputError("expect_digest needs a package opened with verify=True (or give its path)")
        return
    if not isinstance(package, (str, os.PathLike)) or not isinstance(os.fspath(package), str):
        raise InputError(f"LesionAnalyzer.load: package must be the path (str or os.PathLike) of a package "
                         f"folder or .zip archive, or a ModelPackage; got {type(package).__name__}")
    if not os.fspath(package).strip():
        raise InputError("LesionAnalyzer.load: package is an empty path; give a package folder or .zip archive")
    if not isinstance(verify, bool):
        raise InputError(f"LesionAnalyzer.load: verify must be True or False, got {verify!r:.40}")
    if expect_digest is not None:
        normalize_digest(expect_digest)  # the typed error for a malformed digest, before the package is read

def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
