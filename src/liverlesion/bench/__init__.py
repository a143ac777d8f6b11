"""Benchmarks of a model package: latency, throughput, memory and accuracy per backend and precision.

``liverlesion bench PACKAGE`` (``cli/bench.py``) drives :func:`run_benchmark`; the
pytest-benchmark suite in ``benchmarks/`` reuses :func:`open_config` and :mod:`.timing`.
Modules: :mod:`.configs` (what can run), :mod:`.machine` (what it ran on), :mod:`.timing`
(percentiles, throughput, memory), :mod:`.data` (the slices), :mod:`.runner` (the
configurations, timed and scored), :mod:`.soak` (memory growth), :mod:`.report` (table,
JSON, markdown, plot). Names below are imported on first use, so that the CLI's parser
can read :mod:`.configs` without loading the SDK.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "BACKEND_SPECS": "configs", "BenchConfig": "configs", "configurations": "configs",
    "BenchData": "data", "BenchSlice": "data", "load_bench_data": "data",
    "format_header": "machine", "machine_info": "machine",
    "BenchOptions": "runner", "open_config": "runner", "run_benchmark": "runner",
    "Timing": "timing", "percentiles": "timing", "throughput": "timing",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
