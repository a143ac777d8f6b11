"""End-to-end ``predict`` and raw ``Backend.infer`` for each backend x precision, batch 1 and 8.

Groups put comparable rows together: every configuration's ``predict`` at batch 1 in one
table, its raw inference at batch 1 in another, and so on. Each benchmark also checks
what it got back: label maps on the input grid that agree with the FP32 reference, raw
outputs of the right shapes with probabilities that sum to one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from liverlesion.bench.configs import BenchConfig, configurations
from liverlesion.bench.data import BenchData
from liverlesion.bench.runner import Opened
from liverlesion.errors import LiverLesionError
from liverlesion.metrics import agreement
from liverlesion.sdk import load_slice

CONFIGS = configurations()
BATCHES = (1, 8)
#: Least pixel agreement with the FP32 reference: a sanity bound (same function computed), not the
#: export's accuracy target.
MIN_AGREEMENT = 0.9


def _id(config: BenchConfig) -> str:
    return config.label.replace(" ", "-")


@pytest.fixture(scope="session")
def reference_maps(runtime: Callable[[BenchConfig], Opened], bench_data: BenchData) -> list[np.ndarray]:
    """Label maps of every slice from the FP32 reference (onnxruntime, else the torch backend)."""
    for config in (BenchConfig("onnxruntime", "fp32"), BenchConfig("torch", "fp32")):
        try:
            opened = runtime(config)
        except pytest.skip.Exception:
            continue
        return [opened.analyzer.predict(s.hu, spacing=s.spacing_mm).label_map for s in bench_data.slices]
    pytest.skip("no FP32 reference backend runs here")


def _cycle(count: int, batch: int) -> Callable[[], list[int]]:
    """Each call: the next ``batch`` slice indices, round robin."""
    counter = itertools.count()
    return lambda: [next(counter) % count for _ in range(batch)]


def _info(benchmark: Any, opened: Opened, batch: int) -> None:
    benchmark.extra_info.update(backend=opened.choice.backend, precision=opened.choice.precision,
                                device=opened.analyzer.device, batch=batch,
                                reference=opened.config.reference or "")


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_predict(benchmark: Any, runtime: Callable[[BenchConfig], Opened], bench_data: BenchData,
                 reference_maps: list[np.ndarray], config: BenchConfig, batch: int) -> None:
    """``LesionAnalyzer.predict`` (batch 1) / ``predict_batch`` on HU arrays at their native size."""
    opened = runtime(config)
    if opened.analyzer.max_batch is not None and batch > opened.analyzer.max_batch:
        pytest.skip(f"{config.label} takes at most {opened.analyzer.max_batch} slices per batch")
    analyzer, slices = opened.analyzer, bench_data.slices
    following = _cycle(len(slices), batch)

    def run() -> tuple[list[int], list[Any]]:
        picked = following()
        if batch == 1:
            s = slices[picked[0]]
            return picked, [analyzer.predict(s.hu, spacing=s.spacing_mm)]
        return picked, analyzer.predict_batch([load_slice(slices[i].hu, spacing=slices[i].spacing_mm)
                                               for i in picked], batch_size=batch)

    benchmark.group = f"predict, batch {batch}"
    _info(benchmark, opened, batch)
    picked, predictions = benchmark(run)

    assert len(predictions) == batch
    for index, prediction in zip(picked, predictions, strict=True):
        assert prediction.label_map.shape == slices[index].hu.shape
        assert prediction.label_map.dtype == np.uint8 and int(prediction.label_map.max()) <= 4
        assert (prediction.backend, prediction.precision) == (opened.choice.backend, opened.choice.precision)
        assert agreement(prediction.label_map, reference_maps[index]) >= MIN_AGREEMENT
        assert prediction.timings["inference_ms"] > 0


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_infer(benchmark: Any, runtime: Callable[[BenchConfig], Opened], bench_data: BenchData,
               config: BenchConfig, batch: int) -> None:
    """``Backend.infer`` alone, on slices already resampled to the model grid."""
    opened = runtime(config)
    grid = opened.analyzer.grid
    hu = np.stack([load_slice(s.hu, spacing=s.spacing_mm).on_model_grid(grid) for s in bench_data.slices])
    batches = [np.ascontiguousarray(hu[[(k + j) % len(hu) for j in range(batch)], None])
               for k in range(len(hu))]
    following = _cycle(len(batches), 1)
    try:
        opened.backend.infer(batches[0])
    except LiverLesionError as exc:  # e.g. a batch above an engine's profile
        pytest.skip(f"{config.label} cannot take a batch of {batch}: {exc}")

    benchmark.group = f"infer, batch {batch}"
    _info(benchmark, opened, batch)
    outputs = benchmark(lambda: opened.backend.infer(batches[following()[0]]))

    labels, probabilities = outputs["labels"], outputs["probabilities"]
    assert labels.shape == (batch, *grid.size)
    assert probabilities.shape[0] == batch and probabilities.shape[2:] == grid.size
    assert 0 <= int(labels.min()) and int(labels.max()) < probabilities.shape[1]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
    assert opened.backend.last_inference_time() > 0
