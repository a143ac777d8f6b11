"""``liverlesion predict-series``: a drawn DICOM series through the HU-threshold package, outputs written whole.

The series' lesions are known from the HU drawn (tests/sdk_fixtures.py's threshold graph on its
own model grid), so the printed summary and the written files are checked against the drawing.
"""

from __future__ import annotations

import io
import json

import nibabel as nib
import numpy as np
import pydicom
import pytest

from dicom_validators import dciodvfy, dsrdump
from liverlesion.cli import main
from sdk_fixtures import THRESHOLD_HU, make_threshold_package
from series_files import ct_series, sphere_volume, write_series

SIDE, PIXEL_MM, SLICE_MM, SLICES = 128, 2.0, 2.5, 16
RADIUS_MM = 8.0
ONNX = ["--backend", "onnxruntime", "--no-warmup"]


def drawn_volume() -> np.ndarray:
    """Soft tissue in air, a liver block, one metastasis ball of RADIUS_MM at slice 8 (z = 20 mm)."""
    hu = np.full((SLICES, SIDE, SIDE), THRESHOLD_HU["background"][0])
    hu[:, :, :8] = THRESHOLD_HU["background"][1]
    hu[2:14, 30:100, 30:100] = THRESHOLD_HU["liver"]
    hu[sphere_volume(hu.shape, (20.0, 130.0, 130.0), RADIUS_MM, (PIXEL_MM, PIXEL_MM), SLICE_MM)] = \
        THRESHOLD_HU["metastasis"]
    return hu


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return make_threshold_package(tmp_path_factory.mktemp("threshold") / "package")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two CT series in one folder (and the first alone in another): (both, one, series UIDs, first's datasets)."""
    root = tmp_path_factory.mktemp("study")
    first = ct_series(drawn_volume(), (PIXEL_MM, PIXEL_MM), SLICE_MM, series_uid="1.2.826.0.1.3680043.10.1",
                      description="portal venous")
    second = ct_series(drawn_volume()[:4], (PIXEL_MM, PIXEL_MM), SLICE_MM, series_uid="1.2.826.0.1.3680043.10.2",
                       description="arterial")
    write_series(root / "both" / "a", first)
    write_series(root / "both" / "b", second)
    write_series(root / "one", first)
    return root / "both", root / "one", (first[0].SeriesInstanceUID, second[0].SeriesInstanceUID), first


def test_a_series_prints_its_choice_and_lesions_and_writes_every_output(package, study, tmp_path, capsys):
    _, one, (uid, _), datasets = study
    out = tmp_path / "out"
    code = main(["predict-series", str(package), str(one), *ONNX, "--dicom-seg", str(out / "seg.dcm"),
                 "--dicom-sr", str(out / "sr.dcm"), "--json", str(out / "series.json"),
                 "--nifti", str(out / "labels.nii.gz")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    lines = printed.out.splitlines()
    assert lines[0].startswith(f"series {uid}") and "the only CT image series" in lines[0]
    assert any(line.startswith("lesion 1: metastasis") and "slices 5-11 (largest 8)" in line for line in lines)
    assert "1 lesion(s)" in printed.out and "burden" in printed.out
    assert f"{SLICES}/{SLICES} slices" in printed.err  # the progress note

    report = json.loads((out / "series.json").read_text())
    (lesion,) = report["measurements"]["lesions"]
    assert lesion["label"] == "metastasis" and abs(lesion["axes"]["long_mm"] - 2 * RADIUS_MM) <= 2 * PIXEL_MM
    assert report["series"]["info"]["series_uid"] == uid and len(report["slices"]) == SLICES
    assert set(report["files"]) == {"--dicom-seg", "--dicom-sr", "--nifti"}

    seg, sr = pydicom.dcmread(out / "seg.dcm"), pydicom.dcmread(out / "sr.dcm")
    referenced = {item.ReferencedSOPInstanceUID for series in seg.ReferencedSeriesSequence
                  for item in series.ReferencedInstanceSequence}
    assert referenced == {ds.SOPInstanceUID for ds in datasets}
    assert sr.CurrentRequestedProcedureEvidenceSequence  # the SR names its evidence: the CT images and the SEG
    dciodvfy(out / "seg.dcm")
    dsrdump(out / "sr.dcm")
    labels = np.asarray(nib.load(str(out / "labels.nii.gz")).dataobj)
    assert labels.shape == (SIDE, SIDE, SLICES) and set(np.unique(labels)) == {0, 1, 4}


def test_several_series_and_none_chosen_exit_2_with_the_list_before_the_model_loads(study, tmp_path, capsys):
    both, _, (a, b), _ = study
    missing = tmp_path / "no-such-package"  # never opened: the series is chosen first
    code = main(["predict-series", str(missing), str(both), "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2
    assert a in err and b in err and "'portal venous'" in err and "'arterial'" in err and "--series-uid" in err
    assert "no-such-package" not in err and not (tmp_path / "r.json").exists()


def test_series_uid_picks_one_and_says_so(package, study, capsys):
    both, _, (_, b), _ = study
    assert main(["predict-series", str(package), str(both), "--series-uid", b, *ONNX]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"series {b}") and "4 image(s)" in first and "asked for with --series-uid" in first


def test_output_targets_are_checked_before_anything_is_read(study, tmp_path, capsys):
    _, one, _, _ = study
    (tmp_path / "file").write_text("not a folder")
    missing = tmp_path / "no-such-package"
    for bad in (["--json", str(tmp_path / "file" / "r.json")], ["--nifti", str(tmp_path / "labels.png")],
                ["--dicom-seg", str(tmp_path / "x.dcm"), "--json", str(tmp_path / "x.dcm")]):
        assert main(["predict-series", str(missing), str(one), *bad]) == 2
        err = capsys.readouterr().err
        assert bad[0] in err and "no-such-package" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_dicom_outputs_of_a_volume_are_refused_before_the_model_loads(study, tmp_path, capsys):
    np.save(tmp_path / "ct.npy", drawn_volume().astype(np.float32))
    missing = tmp_path / "no-such-package"
    code = main(["predict-series", str(missing), str(tmp_path / "ct.npy"), "--spacing", str(SLICE_MM),
                 str(PIXEL_MM), str(PIXEL_MM), "--dicom-seg", str(tmp_path / "seg.dcm")])
    assert code == 2 and "need a DICOM series" in capsys.readouterr().err


def test_a_npy_volume_runs_and_its_json_goes_to_stdout(package, tmp_path, capsys):
    np.save(tmp_path / "ct.npy", drawn_volume().astype(np.float32))
    code = main(["predict-series", str(package), str(tmp_path / "ct.npy"), "--spacing", str(SLICE_MM),
                 str(PIXEL_MM), str(PIXEL_MM), *ONNX, "--json", "-", "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    report = json.loads(printed.out)  # nothing else on stdout
    assert [x["label"] for x in report["measurements"]["lesions"]] == ["metastasis"]
    assert "a 3-D array holds one series" in printed.err


def test_when_an_output_cannot_be_built_none_is_written(package, study, tmp_path, monkeypatch, capsys):
    from liverlesion.errors import DicomError
    from liverlesion.sdk.series.result import SeriesPrediction

    def broken(self, seg, **options):
        raise DicomError("no SR today")

    monkeypatch.setattr(SeriesPrediction, "to_dicom_sr", broken)
    _, one, _, _ = study
    out = tmp_path / "out"
    code = main(["predict-series", str(package), str(one), *ONNX, "--dicom-seg", str(out / "seg.dcm"),
                 "--dicom-sr", str(out / "sr.dcm"), "--json", str(out / "r.json"), "--nifti", str(out / "l.nii")])
    assert code == 2 and "no SR today" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_the_progress_bar_counts_slices_on_a_terminal(package, study, monkeypatch, capsys):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    _, one, _, _ = study
    assert main(["predict-series", str(package), str(one), *ONNX]) == 0
    drawn = screen.getvalue().split("\r")
    assert any(f"| {SLICES}/{SLICES} slices" in frame for frame in drawn)
    assert any("| 0/16 slices" in frame for frame in drawn)
