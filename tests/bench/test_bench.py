"""liverlesion.bench: timing math, the runner's rows, the reports, the CLI. No wall-clock asserts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from liverlesion.bench import BenchOptions, configurations, load_bench_data, run_benchmark
from liverlesion.bench.configs import BACKEND_SPECS
from liverlesion.bench.machine import format_header, machine_info
from liverlesion.bench.report import format_table, to_markdown, write_json, write_markdown, write_plot
from liverlesion.bench.runner import _batches
from liverlesion.bench.soak import memory_soak
from liverlesion.bench.timing import PeakRss, Timing, interleaved, percentiles, rss_bytes, throughput
from liverlesion.errors import InputError

MB = 2**20


# -- timing math ----------------------------------------------------------------------------------
def test_percentiles_of_0_to_100_are_the_ranks() -> None:
    # 101 evenly spaced values: the q-th percentile is q itself.
    assert percentiles(list(range(101))) == {"p50": 50.0, "p90": 90.0, "p99": 99.0}


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentiles([10.0, 20.0], qs=(50,)) == {"p50": 15.0}
    with pytest.raises(InputError):
        percentiles([])


def test_throughput_is_total_items_over_total_time() -> None:
    # 3 calls of 4 items in 0.5 + 0.5 + 1.0 s: 12 items in 2 s; the mean of per-call rates would say 6.67.
    assert throughput([0.5, 0.5, 1.0], 4) == pytest.approx(6.0)


def test_timing_summary_is_per_item() -> None:
    summary = Timing(seconds=[0.08, 0.08, 0.08, 0.16], items=8).summary()
    assert summary["p50_ms"] == pytest.approx(10.0)  # 80 ms per call of 8 slices
    assert summary["p99_ms"] <= 20.0 and summary["p99_ms"] > summary["p50_ms"]
    assert summary["throughput_per_s"] == pytest.approx(32 / 0.40)
    assert summary["iterations"] == 4


def test_interleaved_warms_up_untimed_and_rotates_the_order() -> None:
    seen: list[tuple[str, int]] = []
    calls = {name: (lambda round_, n=name: seen.append((n, round_))) for name in ("a", "b", "c")}
    synced: list[int] = []
    timings = interleaved(calls, iterations=3, warmup=2, items=2, sync=lambda: synced.append(1))
    assert {n: len(t.seconds) for n, t in timings.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t.items == 2 for t in timings.values())
    timed = seen[6:]  # after 2 warm-up rounds of 3 calls
    assert [n for n, _ in timed] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert sorted({r for _, r in timed}) == [2, 3, 4]
    assert len(synced) == 2 * 9  # before and after each timed call, never around warm-up
    with pytest.raises(InputError):
        interleaved(calls, iterations=0, warmup=0)


def test_peak_rss_sees_a_temporary_allocation() -> None:
    peak = PeakRss()
    block = np.ones(64 * MB, dtype=np.uint8)  # touched, so resident
    peak.sample()
    del block
    assert peak.peak_bytes() - peak.start_bytes >= 48 * MB


def test_memory_soak_measures_retained_memory() -> None:
    kept: list[np.ndarray] = []
    leaky = memory_soak(lambda i: kept.append(np.ones(8 * MB, dtype=np.uint8)), 10, warmup=0, samples=5)
    # 80 MB kept; the start sample may already hold the first block, and malloc rounds: 60 MB at least
    assert leaky["rss_end_mb"] - leaky["rss_start_mb"] >= 0.75 * 80
    assert leaky["predictions"] == 10 and len(leaky["samples"]) == 6
    kept.clear()
    flat = memory_soak(lambda i: np.ones(8 * MB, dtype=np.uint8).sum(), 10, warmup=1)
    assert abs(flat["rss_end_mb"] - flat["rss_start_mb"]) < 8
    assert flat["meets_target"] == (flat["growth_percent"] < flat["target_percent"])


def test_batches_cycle_through_every_slice_equally() -> None:
    rounds = _batches(6, 4)
    assert all(len(r) == 4 for r in rounds)
    counts = np.bincount(np.concatenate(rounds), minlength=6)
    assert len(set(counts.tolist())) == 1  # the pattern's period uses every slice equally often


def test_configurations_run_torch_at_fp32_only() -> None:
    configs = configurations()
    assert {c.name for c in configs} == set(BACKEND_SPECS)
    assert [c.precision for c in configs if c.name == "torch"] == ["fp32"]
    assert len(configs) == (len(BACKEND_SPECS) - 1) * 3 + 1 + 1  # + OpenVINO bf16
    assert [c.name for c in configs if c.precision == "bf16"] == ["openvino"]
    with pytest.raises(InputError, match="unknown backend"):
        configurations(["onnx"])
    with pytest.raises(InputError):
        BenchOptions(batch_sizes=(0,))


# -- machine ----------------------------------------------------------------------------------------
def test_machine_info_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVERLESION_NO_GPU", "1")
    info = machine_info()
    assert info["gpu"] is None and info["cpus_usable"] >= 1
    assert info["versions"]["numpy"] == np.__version__
    header = format_header(info)
    assert info["cpu"] in header and "GPU: none" in header


def test_rss_is_positive() -> None:
    assert rss_bytes() > 0


# -- the runner and its reports, on a tiny package -----------------------------------------------------
@pytest.fixture(scope="module")
def bench_result(sdk_world) -> dict:
    """Every configuration on sdk_world's package (FP32 + FP16 + torch weights, no INT8), 2 iterations."""
    data = load_bench_data(None, 3, size=128)
    options = BenchOptions(batch_sizes=(1, 2), iterations=2, warmup=1, memory_soak=4, progress=False)
    return run_benchmark(sdk_world.package, data, options)


@pytest.mark.slow
def test_runner_gives_every_configuration_a_row(bench_result: dict) -> None:
    rows = bench_result["rows"]
    for config in configurations():
        mine = [r for r in rows if r["config"] == config.label]
        assert mine, f"no row for {config.label}"
        for row in mine:
            if row["status"] == "ok":
                assert row["latency_ms"]["p50"] > 0 and row["raw_latency_ms"]["p50"] > 0
                assert row["throughput_sps"] > 0 and row["overhead"] > 0 and row["peak_rss_mb"] > 0
                assert row["model_size_bytes"] > 0 and 0.0 <= row["liver_dice"] <= 1.0
                assert row["latency_ms"]["p50"] <= row["latency_ms"]["p90"] <= row["latency_ms"]["p99"]
                # host time is a part of each timed call's own wall time, so every percentile is below it
                host, latency = row["host_ms"], row["latency_ms"]
                assert all(0 <= host[q] <= latency[q] for q in ("p50", "p90", "p99"))
                assert 0 <= row["host_share"] <= 1
            else:
                assert row["reason"], f"{row['config']} did not run and says nothing why"
    ok = {(r["config"], r["batch"]) for r in rows if r["status"] == "ok"}
    assert {("onnxruntime fp32", 1), ("onnxruntime fp32", 2), ("onnxruntime fp16", 1)} <= ok
    int8 = next(r for r in rows if r["config"] == "onnxruntime int8")
    assert int8["status"] == "unavailable" and "int8" in int8["reason"]
    if importlib.util.find_spec("openvino") is None:
        openvino = {r["precision"]: r for r in rows if r["backend"] == "openvino"}
        # what the package could run says the runtime is missing (int8: this package has none, said first)
        assert all(openvino[p]["status"] == "not installed" for p in ("fp32", "bf16", "fp16"))
        assert "liverlesion[openvino]" in openvino["fp32"]["reason"]


@pytest.mark.slow
def test_runner_reference_rows_and_summary(bench_result: dict) -> None:
    rows = [r for r in bench_result["rows"] if r["status"] == "ok"]
    torch_rows = [r for r in rows if r["backend"] == "torch"]
    assert torch_rows and all(r["reference_row"] == "PyTorch eager FP32" for r in torch_rows)
    assert bench_result["reference"] == "torch fp32"
    assert all(r["agreement_with_reference"] == 1.0 for r in torch_rows)
    # The fused ONNX graph computes the same function as PyTorch: labels agree on almost every pixel.
    assert all(r["agreement_with_reference"] > 0.99 for r in rows if r["precision"] == "fp32")
    speedups = bench_result["summary"]["speedup_vs_torch_eager"]
    assert sorted(s["batch"] for s in speedups) == [1, 2]
    for item in speedups:
        assert item["speedup"] == pytest.approx(item["torch_fp32_ms"] / item["fastest_ms"], rel=1e-3)
    soak = bench_result["memory_soak"]
    assert soak["predictions"] == 4 and soak["config"] in {r["config"] for r in rows}


@pytest.mark.slow
def test_reports_parse(bench_result: dict, tmp_path: Path) -> None:
    loaded = json.loads(write_json(bench_result, tmp_path / "bench.json").read_text())
    assert loaded["schema"] == "liverlesion.bench" and len(loaded["rows"]) == len(bench_result["rows"])
    assert loaded["machine"]["cpu"] == bench_result["machine"]["cpu"]

    markdown = write_markdown(bench_result, tmp_path / "bench.md").read_text()
    assert markdown == to_markdown(bench_result)
    tables = [line for line in markdown.splitlines() if line.startswith("|")]
    widths = {line.count("|") for line in tables}
    ok = sum(r["status"] == "ok" for r in bench_result["rows"])
    # rows that did not run: one line per backend and reason (precisions sharing a reason merged)
    not_ok = len({(r["backend"], r["batch"], r["status"], r["reason"]) for r in bench_result["rows"]
                  if r["status"] != "ok"})
    assert len(tables) == (ok + 2) + (not_ok + 2 if not_ok else 0)
    assert len(widths) == (2 if not_ok else 1)  # every row of a table has its header's columns

    # one line per row that ran, whichever backends ran on this machine (OpenVINO's precisions depend on the CPU)
    configs = tuple({r["config"] for r in bench_result["rows"] if r["status"] == "ok"})
    assert "host p50" in tables[0] and "host %" in tables[0]
    assert loaded["summary"]["host_time"] and all(r["status"] != "ok" or r["host_ms"] for r in loaded["rows"])
    text = format_table(bench_result)
    measured = [line for line in text.splitlines() if line.startswith(configs) and ": " not in line]
    assert len(measured) == ok  # rows that did not run read "config: status: reason"


@pytest.mark.slow
def test_plot_is_a_png(bench_result: dict, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = write_plot(bench_result, tmp_path / "bench.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))


# -- data and CLI -------------------------------------------------------------------------------------
def test_bench_data_from_lits_and_lesion_slices(sdk_world) -> None:
    lits = load_bench_data(sdk_world.phantoms / "lits", 3)
    assert len(lits) == 3 and lits.classes is None
    assert all(s.labels.max() <= 2 and (s.labels >= 1).any() for s in lits.slices)  # slices with liver
    lesions = load_bench_data(sdk_world.phantoms, 4)  # the phantom layout: lesion_slices/ is preferred
    assert len(lesions) == 4 and lesions.classes is not None
    assert all(s.hu.shape == s.labels.shape for s in lesions.slices)
    with pytest.raises(InputError):
        load_bench_data(None, 0)


@pytest.mark.slow
def test_cli_bench_writes_its_outputs(sdk_world, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from liverlesion.cli import main

    out = tmp_path / "bench.json"
    code = main(["bench", str(sdk_world.package), "--backends", "onnxruntime", "tensorrt",
                 "--precisions", "fp32", "--batch-sizes", "1", "--iterations", "2", "--warmup", "0", "--data",
                 str(sdk_world.phantoms / "lesion_slices"), "--slices", "2", "--quiet", "--json", str(out),
                 "--markdown", str(tmp_path / "bench.md")])
    assert code == 0
    result = json.loads(out.read_text())
    first = result["rows"][0]
    assert (first["config"], first["status"]) == ("onnxruntime fp32", "ok")
    assert result["data"]["slices"] == 2 and "lesion-slice dataset" in result["data"]["description"]
    printed = capsys.readouterr().out
    assert "onnxruntime fp32" in printed and "tensorrt fp32" in printed
