"""``predict_series``: a whole series through one analyzer, its host work pipelined with inference.

Three stages overlap across batches of slices (``LesionAnalyzer._prepare`` / ``_infer`` /
``_decode``): a small reader pool reads, decodes and resamples the slices of batch k+1 while
the calling thread runs the backend on batch k, and one writer thread decodes batch k-1 into
the series' uint8 label volume (and its lesion pixels' probabilities). Queues between the stages
are bounded (the next batch being read, one decoded batch waiting), so at most about four batches
are held at once: the HU of the whole series never is, only the uint8 label volume grows with it. Each
Prediction is dropped once written; a small summary of each slice is kept. An error in any
stage stops the others and is raised in the caller as the same typed error, naming the slice;
no thread outlives the call.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

from ...errors import InputError, LiverLesionError
from ...labels import FIRST_LESION_LABEL
from ...machine.host import cpu_count
from ..geometry import MAX_TILT_DEG
from ..inputs.slice import SliceInput
from ..options import PredictOptions
from .lesions3d import LesionProbabilities, measure_series
from .result import SeriesPrediction, SliceSummary
from .source import SeriesSlices, SliceReadError, open_series

__all__ = ["MAX_READERS", "ProgressCallback", "default_readers", "predict_series"]

#: Reader threads at most: reading and resampling a slice costs less than inferring it on any backend, and
#: the backend's own intra-op threads and the writer thread share the same CPUs.
MAX_READERS = 2
#: Decoded batches that may wait for the writer thread (one more is being written).
WRITE_QUEUE = 1
#: progress(done, total): slices written so far and slices in the series; called from the calling thread.
ProgressCallback = Callable[[int, int], Any]
_STOP = object()


def default_readers(cpus: int | None = None) -> int:
    """Reader threads for ``cpus`` usable CPUs: 1 up to 4 CPUs (the backend and the writer need the rest), else 2."""
    cpus = cpu_count() if cpus is None else cpus
    return 1 if cpus <= 4 else MAX_READERS


def predict_series(analyzer: Any, source: Any, *, series_uid: str | None = None,
                   spacing: Sequence[float] | None = None, batch_size: int | None = None,
                   progress: ProgressCallback | None = None, readers: int | None = None,
                   max_tilt_deg: float = MAX_TILT_DEG, allow_non_hu: bool = False,
                   max_side: int | None = None) -> SeriesPrediction:
    """The :class:`SeriesPrediction` of one series of ``source`` run through ``analyzer``.

    ``source``: a DICOM folder, a list of DICOM paths or Datasets, a NIfTI volume, a 3-D HU array
    with ``spacing`` = (slice_mm, row_mm, col_mm), or a series already opened (``open_series``);
    ``series_uid`` picks a DICOM series (see ``open_series`` for it and the reading options).
    ``batch_size``: slices per backend run (default: the analyzer's, as ``predict_batch``);
    ``readers``: reader threads, 1 or 2 (default :func:`default_readers`); ``progress(done, total)``
    is called from the calling thread as batches are written.
    """
    start = time.perf_counter()
    size = analyzer._batch_size(batch_size)  # the arguments checked before any header is read
    workers = _check_readers(readers)
    if progress is not None and not callable(progress):
        raise InputError(f"progress={progress!r:.40} is not accepted: give a callable progress(done, total) or None")
    if isinstance(source, SeriesSlices):
        given = {"series_uid": series_uid, "spacing": spacing, "max_side": max_side}
        extra = [name for name, value in given.items() if value is not None]
        if extra or allow_non_hu or max_tilt_deg != MAX_TILT_DEG:
            raise InputError(f"predict_series: {', '.join(extra) or 'the reading options'} cannot apply to a "
                             "series already opened; pass them to open_series, or give the source itself")
        series = source
    else:
        series = open_series(source, series_uid=series_uid, spacing=spacing, max_tilt_deg=max_tilt_deg,
                             allow_non_hu=allow_non_hu, max_side=max_side)
    try:
        opened = time.perf_counter()
        run = _Run(analyzer, series, size, workers, progress)
        run.go()
    finally:
        if series is not source:  # opened here: release a NIfTI volume's inflated copy; the outputs reread headers
            series.close()
    streamed = time.perf_counter()
    measurements, lesion_ids = measure_series(run.labels, series.spacing_mm, series.positions_mm,
                                              run.lesion_probabilities(), slice_thickness_mm=series.slice_spacing_mm)
    run.probability_parts.clear()  # only the measurements needed them
    end = time.perf_counter()
    timings = {**run.timings(), "open_ms": _ms(opened - start), "measure_ms": _ms(end - streamed),
               "pipeline_s": streamed - opened, "wall_s": end - start,
               "slices_per_s": len(series) / (end - start), "batch_size": size, "readers": workers}
    summaries = tuple(s for s in run.summaries if s is not None)
    return SeriesPrediction(series=series, labels=run.labels, lesion_ids=lesion_ids, measurements=measurements,
                            slices=summaries, timings=timings, backend=analyzer.backend,
                            precision=analyzer.precision, model=analyzer.model)


def _check_readers(readers: Any) -> int:
    if readers is None:
        return default_readers()
    if isinstance(readers, bool) or not isinstance(readers, int) or not 1 <= readers <= MAX_READERS:
        raise InputError(f"readers={readers!r:.40} is not accepted: give 1..{MAX_READERS} reader threads, or None")
    return readers


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _named(exc: LiverLesionError, where: str) -> LiverLesionError:
    """``exc`` as the same type with ``where`` in front (a SliceReadError already names its slice)."""
    if isinstance(exc, SliceReadError):
        return exc
    try:
        return type(exc)(f"{where}: {exc}")
    except TypeError:  # a subclass with another constructor: keep it as it is
        return exc


class _Run:
    """One series through the three stages; fills ``labels``, ``probability`` and ``summaries``."""

    def __init__(self, analyzer: Any, series: SeriesSlices, size: int, readers: int,
                 progress: ProgressCallback | None) -> None:
        self.analyzer, self.series, self.size, self.readers, self.progress = analyzer, series, size, readers, progress
        count, (rows, cols) = len(series), series.shape
        self.labels = np.zeros((count, rows, cols), np.uint8)
        #: per slice with lesions: (flat indices of its lesion pixels in the volume, round(255 * p) of the 2-D
        #: lesion each belongs to): what measure_series averages, held for the lesion pixels only
        self.probability_parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.summaries: list[SliceSummary | None] = [None] * count
        self.options = PredictOptions()  # the series reader has applied the reading options already
        self.read_ms = self.infer_ms = self.infer_wall_ms = self.wait_read_ms = self.wait_write_ms = 0.0
        self.writer = _Writer(self)

    def go(self) -> None:
        count = len(self.series)
        pool = ThreadPoolExecutor(max_workers=self.readers, thread_name_prefix="liverlesion-series-read")
        pending: deque[Future[_Ready]] = deque()
        submitted = 0

        def top_up(limit: int) -> None:
            nonlocal submitted
            while submitted < min(limit, count):
                pending.append(pool.submit(self._read, submitted))
                submitted += 1

        self.writer.start()
        try:
            self._report()
            top_up(self.size)
            for first in range(0, count, self.size):
                last = min(first + self.size, count)
                waited = time.perf_counter()
                ready = [pending.popleft().result() for _ in range(first, last)]  # a reader's error is raised here
                self.wait_read_ms += _ms(time.perf_counter() - waited)
                top_up(last + self.size)  # the next batch is read while this one runs on the backend
                self.writer.check()
                self._infer(ready, first, last)
                self._report()
            self.writer.finish()
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            self.writer.stop()
        self._report()

    def _read(self, k: int) -> _Ready:
        """Slice ``k`` read, checked and (host path) resampled onto the model grid (a reader thread)."""
        started = time.perf_counter()
        slice_ = self.series.read(k)
        try:
            prepared = self.analyzer._prepare([(None, slice_)], self.options)
        except LiverLesionError as exc:
            raise _named(exc, self._where(k, k + 1)) from None
        grid = None if prepared.batch is None else prepared.batch[0]
        return _Ready(prepared.slices[0][0], _ms(time.perf_counter() - started), grid)

    def _infer(self, ready: list[_Ready], first: int, last: int) -> None:
        from ..analyzer import Prepared

        slices = [(item.slice_, item.ms) for item in ready]
        grids = [item.grid for item in ready if item.grid is not None]
        batch = np.stack(grids) if grids else None  # (N, 1, H, W) on the host path; None for the slice graph
        self.read_ms += sum(item.ms for item in ready)
        started = time.perf_counter()
        try:
            inferred = self.analyzer._infer(Prepared(slices, batch))
        except LiverLesionError as exc:
            raise _named(exc, self._where(first, last)) from None
        self.infer_wall_ms += _ms(time.perf_counter() - started)
        self.infer_ms += sum(ran.inference_ms for ran in inferred)
        waited = time.perf_counter()
        self.writer.put((first, last, inferred))
        self.wait_write_ms += _ms(time.perf_counter() - waited)

    def write(self, first: int, last: int, inferred: list[Any]) -> None:
        """Decode one batch into the volumes (writer thread); each Prediction is dropped once written."""
        k = first
        for ran in inferred:
            try:
                predictions = self.analyzer._decode(ran)
            except LiverLesionError as exc:
                raise _named(exc, self._where(first, last)) from None
            for prediction in predictions:
                self.labels[k] = prediction.label_map
                if prediction.lesions:
                    lut = np.zeros(len(prediction.lesions) + 1, np.uint8)
                    for lesion in prediction.lesions:
                        lut[lesion.id] = round(255.0 * lesion.probability)
                    components = prediction.lesion_components.ravel()
                    pixels = np.flatnonzero(components)
                    self.probability_parts.append((pixels + k * components.size, lut.take(components[pixels])))
                ref = self.series.refs[k]
                self.summaries[k] = SliceSummary(
                    index=k, sop_instance_uid=ref.sop_instance_uid, position_mm=ref.position_mm, name=ref.name,
                    slice_class=prediction.slice_class, slice_class_probability=prediction.slice_class_probability,
                    lesions=tuple(lesion.to_dict() for lesion in prediction.lesions),
                    liver_pixels=int(np.count_nonzero(prediction.label_map)),
                    lesion_pixels=int(np.count_nonzero(prediction.label_map >= FIRST_LESION_LABEL)))
                k += 1

    def lesion_probabilities(self) -> LesionProbabilities:
        """The lesion pixels' probabilities of the whole series, in the sparse form measure_series reads."""
        if not self.probability_parts:
            return LesionProbabilities(np.zeros(0, np.int64), np.zeros(0, np.uint8))
        index, value = zip(*self.probability_parts)
        return LesionProbabilities(np.concatenate(index).astype(np.int64, copy=False), np.concatenate(value))

    def timings(self) -> dict[str, float]:
        return {"read_ms": self.read_ms, "inference_ms": self.infer_ms, "infer_wall_ms": self.infer_wall_ms,
                "postprocess_ms": self.writer.ms, "wait_read_ms": self.wait_read_ms,
                "wait_write_ms": self.wait_write_ms}

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.writer.done, len(self.series))

    def _where(self, first: int, last: int) -> str:
        total = len(self.series)
        if last - first == 1:
            return f"slice {first} of {total} ({self.series.refs[first].name})"
        return f"slices {first}..{last - 1} of {total} ({self.series.refs[first].name} ...)"


class _Ready(NamedTuple):
    """One slice ready for the backend: the slice, its read + prepare time (ms), its (1, H, W) model-grid HU or None."""

    slice_: SliceInput
    ms: float
    grid: np.ndarray | None


class _Writer(threading.Thread):
    """The writer stage: decodes batches from a bounded queue; an error is kept for the caller, the rest drained."""

    def __init__(self, run: _Run) -> None:
        super().__init__(name="liverlesion-series-write", daemon=True)
        self.pipeline = run
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=WRITE_QUEUE)
        self.error: BaseException | None = None
        self.done = 0  # slices written: read by the calling thread for progress
        self.ms = 0.0
        self._stopped = False

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            if self.error is not None:
                continue  # drain, so that the caller's put never blocks on a failed writer
            first, last, inferred = item
            started = time.perf_counter()
            try:
                self.pipeline.write(first, last, inferred)
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, which raises it
                self.error = exc
                continue
            self.ms += _ms(time.perf_counter() - started)
            self.done = last

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, item: Any) -> None:
        self.check()
        self.queue.put(item)

    def finish(self) -> None:
        """Wait for every batch to be written; raise the writer's error, if any."""
        self.stop()
        self.check()

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.queue.put(_STOP)
            self.join()
