"""``liverlesion bench --serve``: a real served run at smoke size (speed is the benchmark's, not asserted here)."""

from __future__ import annotations

import json

import pytest

from liverlesion.cli import main
from serving_process import require_client, serve_python

pytestmark = pytest.mark.serving
REQUESTS = 3


def test_bench_serve_reports_every_client_count_against_in_process(threshold_package, tmp_path, monkeypatch, capsys):
    serve_python()
    require_client()
    monkeypatch.chdir(tmp_path)  # the server's log is written in the working folder
    monkeypatch.setenv("LIVERLESION_SERVE_PYTHON", str(serve_python()))
    out = tmp_path / "serve.json"
    assert main(["bench", str(threshold_package), "--serve", str(REQUESTS), "--quiet", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["served"]
    assert [row["clients"] for row in rows] == [1, 4, 8]
    for row in rows:
        assert row["failed"] == 0 and row["answered"] == row["requests"] == row["clients"] * REQUESTS
        assert row["mismatched"] == 0  # every served answer is the in-process one
        assert row["executions"] >= 1 and 1.0 <= row["mean_batch"] <= result["max_batch"]
        assert row["p50_ms"] <= row["p99_ms"]
        assert set(row["time_split_ms"]) >= {"triton_queue_ms", "python_backend_and_ipc_ms", "sdk_ms"}
    ratio = rows[-1]["requests_per_s"] / result["in_process"]["slices_per_s"]
    assert result["ratio_at_most_clients"] == pytest.approx(ratio)
    assert result["meets_target"] == (ratio >= result["target_ratio"])
    table = capsys.readouterr().out
    assert "in-process predict_batch" in table and "served at 8 clients" in table
    assert (tmp_path / "liverlesion-bench-serve.log").is_file()
