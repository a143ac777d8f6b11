"""Host time (issue 14): total minus inference from each timed call's own Prediction.timings, in every report.

A fake analyzer whose timings are known stands in for a real one, so the figures are exact; nothing here
depends on how fast this machine is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from liverlesion.bench import BenchOptions, configurations, runner
from liverlesion.bench.machine import machine_info
from liverlesion.bench.progress import Progress
from liverlesion.bench.report import HOST_LEGEND, format_table, to_markdown, write_json
from liverlesion.bench.runner import HOST_TARGET_MS, Opened, _empty_row, _Inputs, _time_batch, summarize
from liverlesion.bench.timing import HostTime, PeakRss
from liverlesion.errors import InputError
from liverlesion.sdk.inputs import load_slice


def timings(pre: float, inference: float, post: float, total: float | None = None) -> dict[str, float]:
    """A Prediction.timings dict; ``total`` may differ from the sum, to tell total - inference from pre + post."""
    return {"preprocess_ms": pre, "inference_ms": inference, "postprocess_ms": post,
            "total_ms": pre + inference + post if total is None else total}


# -- HostTime -------------------------------------------------------------------------------------
def test_host_time_is_total_minus_inference_per_slice_of_each_call() -> None:
    host = HostTime()
    host.add([timings(0.5, 3.0, 0.5, total=5.0), timings(0.5, 4.0, 0.5, total=7.0)])  # (2 + 3) / 2 slices
    host.add([timings(0.2, 1.0, 0.3)], extra_ms=0.5)  # 0.5 + 0.5 ms of host work timed outside predict
    assert host.host_ms == pytest.approx([2.5, 1.0])
    assert host.total_ms == pytest.approx([6.0, 2.0])
    summary = host.summary()
    assert summary is not None
    assert summary["p50_ms"] == pytest.approx(1.75) and summary["mean_ms"] == pytest.approx(1.75)
    assert summary["p90_ms"] == pytest.approx(1.0 + 0.9 * 1.5)
    assert summary["share"] == pytest.approx(np.median([2.5 / 6.0, 1.0 / 2.0]))


def test_host_time_leaves_out_calls_without_an_inference_time() -> None:
    host = HostTime()
    host.add([timings(0.5, float("nan"), 0.5)])  # a backend that did not time its run
    assert host.summary() is None
    host.add([timings(0.5, 2.0, 0.5)])
    summary = host.summary()
    assert summary is not None and summary["p50_ms"] == pytest.approx(1.0) and len(host.host_ms) == 1


def test_host_time_refuses_timings_it_cannot_use() -> None:
    host = HostTime()
    with pytest.raises(InputError, match="lacks inference_ms.*needs total_ms and inference_ms"):
        host.add([{"total_ms": 3.0, "preprocess_ms": 1.0}])
    with pytest.raises(InputError, match="at least one slice"):
        host.add([])
    assert host.host_ms == []


# -- the runner, on a fake analyzer -------------------------------------------------------------------
class FakeAnalyzer:
    """Predictions whose timings follow a schedule: call k (warm-up included) gets ``schedule[k]``."""

    def __init__(self, schedule: list[list[dict[str, float]]]) -> None:
        self.schedule, self.calls = schedule, 0

    def _next(self, count: int) -> list[Any]:
        planned = self.schedule[self.calls]
        self.calls += 1
        assert len(planned) == count
        return [SimpleNamespace(timings=t) for t in planned]

    def predict(self, hu: np.ndarray, *, spacing: Any) -> Any:
        return self._next(1)[0]

    def predict_batch(self, slices: list[Any], *, batch_size: int) -> list[Any]:
        return self._next(len(slices))


def fake_inputs(count: int) -> _Inputs:
    """``count`` small slices of water and air; the timing only counts ``slices`` (the fake analyzer reads nothing)."""
    hu = np.full((16, 16), 40.0, dtype=np.float32)
    hu[:4] = -1000.0  # air above the body, as load_slice wants of a CT slice
    arrays = [(hu, (1.0, 1.0)) for _ in range(count)]
    return _Inputs(slices=[None] * count, grids=np.zeros((count, 1, 8, 8), dtype=np.float32), arrays=arrays)


def time_fake(schedule: list[list[dict[str, float]]], batch: int, warmup: int) -> dict[str, Any]:
    options = BenchOptions(batch_sizes=(batch,), iterations=len(schedule) - warmup, warmup=warmup, progress=False)
    backend = SimpleNamespace(infer=lambda batch_: {})
    opened = Opened(config=None, analyzer=FakeAnalyzer(schedule), backend=backend, choice=None)  # type: ignore[arg-type]
    return _time_batch(opened, fake_inputs(4), batch, options, PeakRss(), {"index": None, "peak": None},
                       Progress(1, enabled=False))


def test_runner_host_column_is_total_minus_inference_of_the_timed_calls() -> None:
    # warm-up calls with 100 ms of host work: were they counted, every percentile would show it
    schedule = [[timings(50.0, 1.0, 50.0)]] * 2 + [[timings(0.1 * k, 2.0, 0.1, total=2.5 + 0.1 * k)]
                                                   for k in range(1, 6)]
    row = time_fake(schedule, batch=1, warmup=2)
    hosts = [0.5 + 0.1 * k for k in range(1, 6)]  # total - inference, not pre + post (0.1 k + 0.1)
    assert row["host_ms"]["p50"] == pytest.approx(np.percentile(hosts, 50), abs=1e-4)
    assert row["host_ms"]["p90"] == pytest.approx(np.percentile(hosts, 90), abs=1e-4)
    assert row["host_ms"]["p99"] == pytest.approx(np.percentile(hosts, 99), abs=1e-4)
    assert row["host_share"] == pytest.approx(np.median([h / (h + 2.0) for h in hosts]), abs=1e-4)
    # the stage medians are as before, from the same predictions
    assert row["stages_ms"]["inference"] == pytest.approx(2.0)


def test_runner_host_column_at_batch_two_is_per_slice_and_counts_the_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_read(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.005)  # sleeps at least 5 ms: a lower bound on the reading, whatever the machine
        return load_slice(*args, **kwargs)

    monkeypatch.setattr(runner, "load_slice", slow_read)
    call = [timings(0.2, 1.0, 0.3, total=2.0), timings(0.2, 1.0, 0.3, total=4.0)]  # host 1 and 3: 2 per slice
    row = time_fake([call] * 4, batch=2, warmup=1)
    # plus the bench's own load_slice of the batch (2 x >= 5 ms over 2 slices), timed in the same call
    assert row["host_ms"]["p50"] >= 2.0 + 5.0
    assert row["host_ms"]["p50"] <= row["host_ms"]["p90"] <= row["host_ms"]["p99"]
    assert (2.0 + 5.0) / (3.0 + 5.0) <= row["host_share"] < 1.0


# -- summary and reports -----------------------------------------------------------------------------
def ok_row(label: str, batch: int, p50: float, host: dict[str, float] | None, share: float | None) -> dict[str, Any]:
    config = next(c for c in configurations() if c.label == label)
    return {**_empty_row(config, "ok", ""), "batch": batch, "device": "CPU", "model_size_bytes": 1_000_000,
            "latency_ms": {"p50": p50, "p90": p50 + 1, "p99": p50 + 2, "mean": p50}, "throughput_sps": 1000 / p50,
            "raw_latency_ms": {"p50": p50 - 1, "p90": p50, "p99": p50, "mean": p50 - 1}, "overhead": 1.2,
            "host_ms": host, "host_share": share}


@pytest.fixture
def result(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("LIVERLESION_NO_GPU", "1")
    rows = [ok_row("onnxruntime fp32", 1, 6.0, {"p50": 0.61, "p90": 0.73, "p99": 0.9, "mean": 0.65}, 0.1017),
            ok_row("openvino int8", 1, 2.5, {"p50": 0.58, "p90": 0.67, "p99": 0.8, "mean": 0.6}, 0.232),
            ok_row("torch fp32", 1, 9.0, {"p50": 0.4, "p90": 0.5, "p99": 0.6, "mean": 0.45}, 0.044),
            ok_row("onnxruntime fp16", 1, 5.0, None, None)]  # a row from a result before issue 14
    return {"machine": machine_info(), "created": "2026-01-01T00:00:00Z", "liverlesion": "0",
            "package": {"name": "demo", "arch": "joint", "parameters": 1, "gflops_per_slice": 1.0,
                        "grid": {"size": [128, 128], "spacing_mm": [3.0, 3.0]}},
            "data": {"description": "phantoms", "shapes": [[512, 512]]},
            "options": {"iterations": 2, "warmup": 1, "threads": None},
            "reference": None, "rows": rows, "summary": summarize(rows), "memory_soak": None}


def test_summary_gives_the_host_time_of_the_fastest_cpu_configuration(result: dict[str, Any]) -> None:
    summary = result["summary"]
    assert summary["host_time"] == [{"batch": 1, "config": "openvino int8", "host_ms": 0.58, "host_share": 0.232,
                                     "target_ms": HOST_TARGET_MS}]
    # the speed-up keeps its meaning: end to end of the same fastest configuration against PyTorch eager
    assert summary["speedup_vs_torch_eager"] == [{"batch": 1, "fastest": "openvino int8", "fastest_ms": 2.5,
                                                  "torch_fp32_ms": 9.0, "speedup": 3.6, "target": 3.0}]
    without_torch = summarize([r for r in result["rows"] if r["backend"] != "torch"])
    assert without_torch["speedup_vs_torch_eager"] == [] and without_torch["host_time"][0]["host_ms"] == 0.58


def test_table_has_the_host_columns_and_their_legend(result: dict[str, Any]) -> None:
    lines = format_table(result).splitlines()
    header = next(line for line in lines if line.startswith("config "))
    names = header.split()
    for column in ("host", "p50", "p90", "%"):
        assert column in names
    assert header.index("host p50") < header.index("host p90") < header.index("host %") < header.index("GFLOP/s")
    openvino = next(line for line in lines if line.startswith("openvino int8"))
    assert "0.58" in openvino.split() and "0.67" in openvino.split() and "23" in openvino.split()
    assert HOST_LEGEND in lines
    assert any(line.startswith("batch 1: host time of the fastest CPU configuration openvino int8 0.58 ms/slice")
               and "target <= 0.25 ms per 512 x 512 slice" in line for line in lines)


def test_markdown_has_the_host_columns(result: dict[str, Any]) -> None:
    lines = to_markdown(result).splitlines()
    table = [line.strip("|").split(" | ") for line in lines if line.startswith("| ")]
    header, rows = [c.strip() for c in table[0]], {r[0].strip(): [c.strip() for c in r] for r in table[1:]}
    at = {name: header.index(name) for name in ("host p50", "host p90", "host %")}
    assert [rows["openvino int8"][i] for i in at.values()] == ["0.58", "0.67", "23"]
    assert [rows["onnxruntime fp32"][i] for i in at.values()] == ["0.61", "0.73", "10"]
    assert [rows["onnxruntime fp16"][i] for i in at.values()] == ["-", "-", "-"]  # older results still print
    assert all(len(r) == len(header) for r in rows.values())
    assert HOST_LEGEND in lines


def test_json_has_the_host_fields(result: dict[str, Any], tmp_path: Path) -> None:
    loaded = json.loads(write_json(result, tmp_path / "bench.json").read_text())
    row = next(r for r in loaded["rows"] if r["config"] == "openvino int8")
    assert row["host_ms"] == {"p50": 0.58, "p90": 0.67, "p99": 0.8, "mean": 0.6} and row["host_share"] == 0.232
    assert loaded["summary"]["host_time"][0]["target_ms"] == 0.25
    assert all("host_ms" in r and "host_share" in r for r in loaded["rows"])
