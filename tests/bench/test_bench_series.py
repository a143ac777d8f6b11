"""``liverlesion bench --series``: the synthesised series, the rows, the CLI, and a pytest-benchmark case.

No wall-clock asserts: the rows are checked for what they must hold and for their own arithmetic.
"""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from liverlesion.bench import series as bench_series
from liverlesion.bench.series import TARGET_RATIO, format_series_table, run_series_bench, synthesize_series
from liverlesion.cli import main
from liverlesion.errors import InputError
from liverlesion.sdk import LesionAnalyzer
from liverlesion.sdk.series.source import open_series
from sdk_fixtures import make_threshold_package


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return make_threshold_package(tmp_path_factory.mktemp("threshold") / "package")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """24 slices of 128 x 128, the size of the benchmark case."""
    return synthesize_series(tmp_path_factory.mktemp("bench") / "ct", 24, side=128)


def test_the_series_is_a_ct_series_sorted_feet_to_head_with_continuous_anatomy(small):
    s = open_series(small.folder)
    assert len(s) == 24 and s.shape == (128, 128) and s.info.modality == "CT" and s.gaps == ()
    assert np.diff(s.positions_mm) == pytest.approx(np.full(23, small.slice_mm))
    assert s.spacing_mm == pytest.approx(small.spacing_mm)
    assert [ref.source for ref in s.refs] == list(small.paths)
    first = s.read(0).hu
    assert first.min() <= -1000 and first.max() > 0  # air around a body


def test_a_series_longer_than_the_phantom_reads_it_back_and_forth(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_series, "PHANTOM_SLICES", 5)
    s = open_series(synthesize_series(tmp_path / "ct", 12, side=64).folder)
    planes = [s.read(k).hu for k in range(len(s))]
    assert not np.array_equal(planes[0], planes[1])
    for k, plane in enumerate([0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3]):  # neighbours stay neighbours
        np.testing.assert_array_equal(planes[k], planes[plane])


def test_without_pydicoms_test_file_a_minimal_ct_header_is_built(tmp_path, monkeypatch):
    monkeypatch.setattr("pydicom.data.get_testdata_file", lambda *args, **kwargs: None)
    made = synthesize_series(tmp_path / "ct", 3, side=64)
    ds = pydicom.dcmread(made.paths[0])
    assert ds.Manufacturer == "liverlesion bench" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert open_series(made.folder).read(2).hu.shape == (64, 64)


def test_bad_sizes_are_refused(tmp_path):
    for slices, side in ((1, 64), (4, 32), (4, 2048), (True, 64)):
        with pytest.raises(InputError):
            synthesize_series(tmp_path / "ct", slices, side=side)


def test_a_row_times_end_to_end_against_raw_inference(package, small):
    result = run_series_bench(package, slices=24, side=128, backends=("onnxruntime", "no-such-backend"),
                              batch_sizes=(4,), folder=small.folder.parent / "run", progress=False)
    ok, bad = result["rows"]
    assert bad["status"] == "unavailable" and "no-such-backend" in bad["reason"]
    assert ok["status"] == "ok" and ok["backend"] == "onnxruntime" and ok["batch"] == 4 and ok["slices"] == 24
    assert ok["end_to_end_per_s"] == pytest.approx(24 / ok["end_to_end_s"], rel=1e-3)
    assert ok["ratio"] == pytest.approx(ok["end_to_end_per_s"] / ok["raw_per_s"], rel=1e-2)
    assert ok["met"] == (ok["ratio"] >= TARGET_RATIO) and ok["peak_memory_mb"] >= 0
    assert ok["predict_series_s"] + ok["seg_sr_s"] == pytest.approx(ok["end_to_end_s"], abs=2e-3)
    table = format_series_table(result)
    assert "onnxruntime" in table and "unavailable" in table and ("VmHWM" in table or "samples" in table)
    json.dumps(result, allow_nan=False)


def test_the_cli_runs_the_series_bench_and_refuses_the_per_slice_outputs(package, tmp_path, capsys):
    out = tmp_path / "series.json"
    assert main(["bench", str(package), "--series", "4", "--backends", "onnxruntime", "--quiet",
                 "--json", str(out)]) == 0
    assert "onnxruntime" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["schema"] == "liverlesion.bench.series" and report["series"]["slices"] == 4
    assert report["series"]["side"] == 512 and report["rows"][0]["status"] == "ok"
    assert report["rows"][0]["precision"] == "fp32"  # auto's choice for a package of one FP32 graph
    assert main(["bench", str(package), "--series", "--markdown", str(tmp_path / "t.md")]) == 2


def test_benchmark_a_small_series_to_seg_and_sr(package, small, benchmark, tmp_path):
    from liverlesion.sdk import save_dicom

    with LesionAnalyzer.load(package, "onnxruntime") as analyzer:
        def series_to_files():
            result = analyzer.predict_series(small.folder, batch_size=8)
            seg = result.to_dicom_seg()
            save_dicom(seg, tmp_path / "seg.dcm")
            save_dicom(result.to_dicom_sr(seg), tmp_path / "sr.dcm")
            return result

        result = benchmark.pedantic(series_to_files, rounds=3, warmup_rounds=1)
    assert result.labels.shape == (24, 128, 128)
    assert pydicom.dcmread(tmp_path / "seg.dcm").NumberOfFrames >= 1
