"""Timing and memory measurement: warm-up, timed calls, percentiles, throughput, host time, peak RSS.

Every timed call is bracketed by an optional ``sync`` hook, so that work a device queued
asynchronously is inside the measurement. The backends of this package return host
arrays only after their own synchronisation (the TensorRT backend waits on its stream,
onnxruntime's ``run`` returns host outputs), so their hook is ``None``; the hook is
there for callers that time device-resident work.
"""

from __future__ import annotations

import functools
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

#: The percentiles every latency summary reports.
PERCENTILES = (50, 90, 99)

Sync = Callable[[], None] | None


def percentiles(values: Sequence[float], qs: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """``{"p50": .., "p90": .., "p99": ..}`` of ``values`` (linear interpolation between ranks)."""
    if not len(values):
        raise InputError("percentiles of no values: time at least one iteration")
    array = np.asarray(values, dtype=np.float64)
    return {f"p{q:g}": float(np.percentile(array, q)) for q in qs}


def throughput(seconds: Sequence[float], items_per_call: int) -> float:
    """Items per second over all calls: total items / total time (not the mean of per-call rates)."""
    total = float(np.sum(seconds))
    return len(seconds) * items_per_call / total if total > 0 else float("inf")


@dataclass
class Timing:
    """Wall-clock seconds of each timed call, each call handling ``items`` items (slices)."""

    seconds: list[float] = field(default_factory=list)
    items: int = 1

    def per_item_ms(self) -> list[float]:
        return [1000.0 * s / self.items for s in self.seconds]

    def summary(self) -> dict[str, float | int]:
        """Latency per item in ms at each percentile, the mean, throughput in items/s, iterations."""
        per_item = self.per_item_ms()
        result: dict[str, float | int] = {f"{k}_ms": v for k, v in percentiles(per_item).items()}
        result["mean_ms"] = float(np.mean(per_item))
        result["throughput_per_s"] = throughput(self.seconds, self.items)
        result["iterations"] = len(self.seconds)
        return result


#: The ``Prediction.timings`` keys host time is derived from.
HOST_KEYS = ("total_ms", "inference_ms")


@dataclass
class HostTime:
    """Host time per slice of each timed end-to-end call, from that call's own ``Prediction.timings``.

    Host time is ``total_ms - inference_ms`` (reading, resampling, decoding: everything but the
    runtime's ``infer``), averaged over the call's slices; ``extra_ms`` adds host work the caller
    timed in the same call outside ``predict`` (the bench's reading of a batch).
    """

    host_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)

    def add(self, timings: Sequence[Mapping[str, float]], extra_ms: float = 0.0) -> None:
        """Record one call; calls whose inference time the backend did not report (NaN) are left out."""
        if not timings:
            raise InputError("host time of a call without predictions: give the timings of at least one slice")
        for item in timings:
            missing = [k for k in HOST_KEYS if k not in item]
            if missing:
                raise InputError(f"Prediction.timings lacks {', '.join(missing)} (has {', '.join(item) or 'none'}); "
                                 f"host time needs {' and '.join(HOST_KEYS)}")
        total = sum(float(t["total_ms"]) for t in timings) + extra_ms
        inference = sum(float(t["inference_ms"]) for t in timings)
        if not (np.isfinite(total) and np.isfinite(inference)):
            return
        self.host_ms.append((total - inference) / len(timings))
        self.total_ms.append(total / len(timings))

    def summary(self) -> dict[str, float] | None:
        """Host ms per slice at each percentile and the mean, and ``share`` (p50 of host / total); None if empty."""
        if not self.host_ms:
            return None
        result = {f"{k}_ms": v for k, v in percentiles(self.host_ms).items()}
        result["mean_ms"] = float(np.mean(self.host_ms))
        shares = [h / t for h, t in zip(self.host_ms, self.total_ms, strict=True) if t > 0]
        result["share"] = float(np.median(shares)) if shares else float("nan")
        return result


def time_call(fn: Callable[[], Any], sync: Sync = None) -> tuple[float, Any]:
    """(seconds, result) of one call, synchronised before and after when ``sync`` is given."""
    if sync is not None:
        sync()
    start = time.perf_counter()
    result = fn()
    if sync is not None:
        sync()
    return time.perf_counter() - start, result


def interleaved(calls: Mapping[str, Callable[[int], Any]], *, iterations: int, warmup: int,
                items: int = 1, sync: Sync = None,
                after_each: Callable[[int], None] | None = None) -> dict[str, Timing]:
    """Time several calls in turn, ``warmup`` untimed rounds first, then ``iterations`` timed rounds.

    Each call gets the round number (to cycle through inputs). The order rotates every
    round, so that load from other processes on a shared machine falls on all of them
    alike and their ratio stays meaningful. ``after_each(round)`` runs after each timed round.
    """
    if iterations < 1 or warmup < 0:
        raise InputError(f"iterations must be >= 1 and warmup >= 0, got {iterations} and {warmup}")
    names = list(calls)
    for round_ in range(warmup):
        for name in names:
            calls[name](round_)
    timings = {name: Timing(items=items) for name in names}
    for round_ in range(iterations):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, _ = time_call(functools.partial(calls[name], warmup + round_), sync)
            timings[name].seconds.append(seconds)
        if after_each is not None:
            after_each(round_)
    return timings


# -- host memory ---------------------------------------------------------------------------------
def rss_bytes() -> int:
    """Resident memory of this process now (psutil; else /proc; else the peak from getrusage)."""
    try:
        import psutil  # type: ignore[import-untyped, unused-ignore]

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    status = _proc_status()
    if "VmRSS" in status:
        return status["VmRSS"]
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (getrusage: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _proc_status() -> dict[str, int]:
    """VmRSS / VmHWM from /proc/self/status in bytes (empty where there is no /proc)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM") and rest.strip().endswith("kB"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0: clear_refs 5); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class PeakRss:
    """Peak resident memory over a stretch of code.

    On Linux the kernel's high-water mark is reset at the start and read at the end, which
    also sees peaks inside a call; elsewhere the peak is the largest of the samples taken
    with :meth:`sample` (call it after each timed call) and the start and end values.
    """

    def __init__(self) -> None:
        self.start_bytes = rss_bytes()
        self._exact = _reset_peak() and "VmHWM" in _proc_status()
        self._peak = self.start_bytes

    def sample(self) -> None:
        self._peak = max(self._peak, rss_bytes())

    def peak_bytes(self) -> int:
        self.sample()
        if self._exact:
            return max(self._peak, _proc_status().get("VmHWM", 0))
        return self._peak

    @property
    def method(self) -> str:
        return "kernel high-water mark (VmHWM)" if self._exact else "samples after each call"

