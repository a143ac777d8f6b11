"""Memory soak: many predictions in a row, and how much resident memory grew meanwhile.

The baseline is taken after a warm-up (first-use allocations: runtime arenas, the
postprocessor's geometry cache, lazily imported modules are not leaks), and again
after a garbage collection at the end, so that only memory that stays counts.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from ..errors import InputError
from .progress import Progress
from .timing import rss_bytes

#: Largest growth over the soak that counts as flat, in percent of the baseline.
TARGET_GROWTH_PERCENT = 5.0
_MB = 2**20


def memory_soak(predict: Callable[[int], Any], count: int, *, warmup: int | None = None, samples: int = 20,
                progress: Progress | None = None) -> dict[str, Any]:
    """Call ``predict(i)`` ``count`` times after ``warmup`` calls; resident memory at ``samples`` points."""
    if count < 1:
        raise InputError(f"a memory soak needs at least one prediction, got {count}")
    warm = warmup if warmup is not None else min(500, max(1, count // 20))
    for i in range(warm):
        predict(i)
    gc.collect()
    start = rss_bytes()
    step = max(1, count // max(1, samples))
    points: list[tuple[int, float]] = [(0, start / _MB)]
    began = time.perf_counter()
    for i in range(count):
        predict(warm + i)
        if (i + 1) % step == 0 or i + 1 == count:
            points.append((i + 1, rss_bytes() / _MB))
            if progress is not None:
                progress.update(i + 1, count, "predictions")
    seconds = time.perf_counter() - began
    gc.collect()
    end = rss_bytes()
    growth = 100.0 * (end - start) / start
    return {"predictions": count, "warmup": warm, "rss_start_mb": round(start / _MB, 2),
            "rss_end_mb": round(end / _MB, 2), "rss_max_mb": round(max(mb for _, mb in points), 2),
            "growth_percent": round(growth, 3), "target_percent": TARGET_GROWTH_PERCENT,
            "meets_target": growth < TARGET_GROWTH_PERCENT, "seconds": round(seconds, 2),
            "predictions_per_s": round(count / seconds, 2) if seconds > 0 else None,
            "samples": [[n, round(mb, 2)] for n, mb in points]}
