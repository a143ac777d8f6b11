"""``liverlesion predict``: lines printed, JSON, DICOM SEG/SR and overlays written, bad inputs reported."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from dicom_files import real
from liverlesion import LesionAnalyzer
from liverlesion.cli import main


@pytest.fixture(scope="module")
def volume(sdk_world):
    return sorted((sdk_world.phantoms / "lits").glob("volume-*.nii*"))[0]


def test_predict_prints_a_line_per_input_and_writes_the_json_list(sdk_world, volume, tmp_path, capsys):
    array = tmp_path / "slice.npy"
    hu = np.full((40, 50), 40, np.int16)
    hu[:, :5] = -1000  # some air, as a CT slice has
    np.save(array, hu, allow_pickle=False)
    out = tmp_path / "results" / "out.json"
    code = main(["predict", str(sdk_world.package), real("CT_small.dcm"), str(volume), str(array),
                 "--index", "2", "--spacing", "0.8", "0.8", "--json", str(out), "--backend", "onnxruntime",
                 "--precision", "fp32"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert printed[0].startswith(f"{sdk_world.package}: onnxruntime")  # what was chosen, and why
    lines = printed[1:]
    assert len(lines) == 3
    for line, name in zip(lines, ("CT_small.dcm", volume.name, "slice.npy"), strict=True):
        assert name in line and " ms" in line and "liver" in line and line.endswith("[onnxruntime fp32]")
    results = json.loads(out.read_text())
    assert [r["input"].rsplit("/", 1)[-1] for r in results] == ["CT_small.dcm", volume.name, "slice.npy"]
    assert results[1]["source"]["index"] == 2 and results[2]["spacing_mm"] == [0.8, 0.8]
    with LesionAnalyzer.load(sdk_world.package, "onnxruntime", warmup=False) as analyzer:
        expected = analyzer.predict(real("CT_small.dcm")).to_dict()
    assert results[0]["lesions"] == expected["lesions"] and results[0]["masks"] == expected["masks"]


def test_predict_writes_seg_and_sr_named_after_the_source_instance(sdk_world, tmp_path, capsys):
    names = ["CT_small.dcm", "explicit_VR-UN.dcm"]
    code = main(["predict", str(sdk_world.package), *map(real, names), "--dicom-seg", str(tmp_path / "seg"),
                 "--dicom-sr", str(tmp_path / "sr"), "--backend", "torch", "--threads", "1", "--no-warmup",
                 "--slice-thickness", "2.5"])  # explicit_VR-UN.dcm records an empty Slice Thickness
    assert code == 0, capsys.readouterr().err
    for name in names:
        source = pydicom.dcmread(real(name), stop_before_pixels=True)
        seg = pydicom.dcmread(tmp_path / "seg" / f"{source.SOPInstanceUID}_seg.dcm")
        sr = pydicom.dcmread(tmp_path / "sr" / f"{source.SOPInstanceUID}_sr.dcm")
        assert seg.SOPClassUID == SegmentationStorage and sr.SOPClassUID == Comprehensive3DSRStorage
        assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns)
        assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == \
            source.SOPInstanceUID
        evidence = {item.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                    for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
        assert evidence == {source.SOPInstanceUID, seg.SOPInstanceUID}


def test_predict_writes_overlay_pngs_to_a_file_or_a_folder(sdk_world, volume, tmp_path):
    from PIL import Image

    assert main(["predict", str(sdk_world.package), real("CT_small.dcm"), "--overlay",
                 str(tmp_path / "one.png"), "--no-warmup"]) == 0
    with Image.open(tmp_path / "one.png") as image:
        assert image.format == "PNG" and image.size[0] >= 128
    assert main(["predict", str(sdk_world.package), real("CT_small.dcm"), str(volume), "--index", "1",
                 "--overlay", str(tmp_path / "overlays"), "--no-warmup"]) == 0
    written = sorted(p.name for p in (tmp_path / "overlays").iterdir())
    assert written == ["CT_small_1.png", f"{volume.name.removesuffix('.gz').removesuffix('.nii')}_2.png"]


def test_bad_inputs_are_reported_and_the_others_still_run(sdk_world, tmp_path, capsys):
    (tmp_path / "notes.dcm").write_bytes(b"not DICOM" * 30)
    (tmp_path / "cube.npy").write_bytes(b"garbage")
    out = tmp_path / "out.json"
    code = main(["predict", str(sdk_world.package), str(tmp_path / "notes.dcm"), real("CT_small.dcm"),
                 str(tmp_path / "cube.npy"), "--json", str(out), "--dicom-seg", str(tmp_path / "seg"),
                 "--no-warmup"])
    captured = capsys.readouterr()
    assert code == 1
    assert "notes.dcm: error:" in captured.err and "cube.npy: error:" in captured.err
    assert "2 of 3 input(s) failed" in captured.err
    results = json.loads(out.read_text())
    assert [("error" in r) for r in results] == [True, False, True]
    assert results[0]["error_type"] == "DicomError" and results[2]["error_type"] == "DataFormatError"
    assert len(list((tmp_path / "seg").iterdir())) == 1
    # a non-DICOM input cannot get a SEG: said per input
    np.save(tmp_path / "a.npy", np.full((8, 8), -1000, np.int16), allow_pickle=False)
    assert main(["predict", str(sdk_world.package), str(tmp_path / "a.npy"), "--dicom-seg",
                 str(tmp_path / "s2"), "--no-warmup"]) == 1
    assert "need a DICOM input" in capsys.readouterr().err


def test_a_bad_package_or_backend_fails_with_a_message(sdk_world, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nowhere"), real("CT_small.dcm")]) == 2
    assert "predict: error: model package" in capsys.readouterr().err
    assert main(["predict", str(sdk_world.package), real("CT_small.dcm"), "--precision", "int8"]) == 2
    assert "no int8 model" in capsys.readouterr().err


def test_json_to_stdout_keeps_stdout_for_the_json(sdk_world, capsys):
    assert main(["predict", str(sdk_world.package), real("CT_small.dcm"), "--json", "-", "--masks", "rle",
                 "--no-warmup"]) == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert len(results) == 1 and results[0]["masks"]["label_map_rle"]["shape"] == [128, 128]
    assert "CT_small.dcm" in captured.err


def test_a_source_without_frame_of_reference_gets_no_seg_and_a_clear_error(sdk_world, tmp_path, capsys):
    code = main(["predict", str(sdk_world.package), real("693_UNCR.dcm"), "--dicom-seg",
                 str(tmp_path / "seg"), "--no-warmup"])
    assert code == 1
    assert "Frame of Reference UID" in capsys.readouterr().err


def test_npy_inputs_are_checked_from_their_header_and_take_allow_non_hu(sdk_world, tmp_path, capsys):
    raw = tmp_path / "raw.npy"  # stored values (HU + 1024): never negative, so no air or fat
    np.save(raw, np.full((40, 50), 1064, np.uint16), allow_pickle=False)
    huge = tmp_path / "huge.npy"  # a header claiming 30000 x 30000 pixels over a few bytes of data
    with open(huge, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<i2", "fortran_order": False,
                                                      "shape": (30000, 30000)})
        handle.write(b"\0" * 64)
    args = ["predict", str(sdk_world.package), str(raw), str(huge), "--no-warmup", "--spacing", "8", "8"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "raw.npy: error:" in err and "too little air or fat" in err
    assert "huge.npy: error:" in err
    assert main([*args[:3], *args[4:], "--allow-non-hu"]) == 0  # raw.npy alone, accepted knowingly


def test_a_fifo_given_as_an_npy_input_is_refused_without_opening_it(sdk_world, tmp_path, capsys, monkeypatch):
    """np.load on a FIFO waits for a writer forever: the input is checked to be a regular file first."""
    import os
    import stat
    from pathlib import Path

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    real_load = np.load

    def load(file, *args, **kwargs):
        if stat.S_ISFIFO(os.stat(file).st_mode):
            raise AssertionError(f"np.load opened the FIFO {file}; it would wait for a writer")
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(np, "load", load)
    good = tmp_path / "good.npy"
    hu = np.full((40, 50), 40, np.int16)
    hu[:, :5] = -1000
    np.save(good, hu, allow_pickle=False)
    report = tmp_path / "r.json"
    code = main(["predict", str(sdk_world.package), str(fifo), str(good), "--spacing", "0.8", "0.8",
                 "--json", str(report), "--no-warmup"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    results = json.loads(report.read_text())
    assert results[0]["error_type"] == "InputError" and "is a FIFO (named pipe), not a regular file" in \
        results[0]["error"]
    assert "lesions" in results[1] and Path(results[1]["input"]).name == "good.npy"
