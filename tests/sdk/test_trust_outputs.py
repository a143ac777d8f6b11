"""Issue 11 (trust), outputs: DICOM that validators accept, nothing written outside the output folder,
a CLI that reports each bad input and goes on, typed errors from the DICOM output API."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_files import real
from dicom_validators import dciodvfy, dsrdump
from liverlesion import errors
from liverlesion.cli import main
from liverlesion.errors import InputError, LiverLesionError
from liverlesion.sdk import load_slice, save_dicom, to_dicom_seg, to_dicom_sr, write_overlay
from liverlesion.sdk.outputs.dicom import DEIDENTIFIED_WITHOUT_METHOD, check_uid
from test_dicom_output import model_labels, predict

hd = pytest.importorskip("highdicom")


# -- validators (tests/dicom_validators.py) ------------------------------------------------------------------
def _source(name: str) -> tuple[pydicom.Dataset, int | None]:
    """A source dataset for the validator table, and the frame to analyse."""
    if name == "enhanced_ct_frame":
        return pydicom.dcmread(real("eCT_Supplemental.dcm")), 1
    ds = pydicom.dcmread(real("CT_small.dcm"))
    if name == "deidentified":  # says so, names no method: the outputs must name one (Type 1C)
        ds.PatientIdentityRemoved = "YES"
    if name == "deidentified_with_method":
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "site profile 7"
    return ds, None


def _labels(kind: str) -> np.ndarray:
    labels = model_labels()  # liver, two metastases, a cyst
    if kind == "liver_only":
        return np.where(labels > 0, 1, 0).astype(np.int32)
    if kind == "no_liver":
        return np.zeros_like(labels)
    if kind == "every_type":
        y, x = np.mgrid[:64, :64]
        labels[(y - 36) ** 2 + (x - 22) ** 2 < 9] = 3  # a hemangioma too
    return labels


VALIDATED = [("ct_small", "lesions"), ("ct_small", "every_type"), ("ct_small", "liver_only"),
             ("ct_small", "no_liver"), ("enhanced_ct_frame", "lesions"), ("enhanced_ct_frame", "liver_only"),
             ("deidentified", "lesions"), ("deidentified_with_method", "every_type")]


@pytest.mark.parametrize(("source_name", "kind"), VALIDATED, ids=[f"{s}-{k}" for s, k in VALIDATED])
def test_seg_and_sr_pass_dciodvfy_and_dsrdump(source_name, kind, tmp_path):
    source, frame = _source(source_name)
    slice_ = load_slice(source, frame=frame, allow_non_hu=frame is not None)
    prediction = predict(slice_, _labels(kind))
    seg = prediction.to_dicom_seg()
    sr = prediction.to_dicom_sr(None, seg)
    seg_path, sr_path = save_dicom(seg, tmp_path / "seg.dcm"), save_dicom(sr, tmp_path / "sr.dcm")
    for path in (seg_path, sr_path):
        dciodvfy(path)
    dsrdump(sr_path)


@pytest.mark.parametrize("with_method", [False, True])
def test_a_deidentified_source_gives_outputs_that_name_a_deidentification_method(with_method):
    source, _ = _source("deidentified_with_method" if with_method else "deidentified")
    prediction = predict(load_slice(source))
    seg = prediction.to_dicom_seg()
    for obj in (seg, prediction.to_dicom_sr(None, seg)):
        assert obj.PatientIdentityRemoved == "YES"
        assert obj.DeidentificationMethod == ("site profile 7" if with_method else DEIDENTIFIED_WITHOUT_METHOD)


def test_sr_references_segments_not_frames(tmp_path):
    """Each ROI's IMAGE reference names its segment and no SEG frame (PS3.3 C.18.4: never both)."""
    prediction = predict(load_slice(real("CT_small.dcm")))
    seg = prediction.to_dicom_seg()
    sr = pydicom.dcmread(save_dicom(prediction.to_dicom_sr(None, seg), tmp_path / "sr.dcm"))

    def items(dataset):
        for item in dataset.get("ContentSequence", []):
            yield item
            yield from items(item)

    references = [ref for item in items(sr) if item.ValueType == "IMAGE"
                  for ref in item.ReferencedSOPSequence if ref.ReferencedSOPInstanceUID == seg.SOPInstanceUID]
    assert len(references) == len(prediction.lesions) + 1
    for ref in references:
        assert "ReferencedSegmentNumber" in ref and "ReferencedFrameNumber" not in ref


# -- UIDs and names that cannot leave the folder --------------------------------------------------------------
@pytest.mark.parametrize("uid", ["0", "1.2.840.10008.5.1.4.1.1.2", "1.0.2", "2.25." + "9" * 39])
def test_conformant_uids_are_accepted(uid):
    assert check_uid(uid, "uid") == uid


BAD_UIDS = {"traversal": "../../X", "absolute": "/tmp/abs", "empty": "", "leading zero": "1.02.3",
            "empty component": "1..2", "leading dot": ".1.2", "trailing dot": "1.2.", "letters": "1.2.a",
            "space": "1.2 .3", "65 characters": "1." + "2" * 63, "300 characters": "1" * 300,
            "nul": "1.2\x00.3", "separator": "1.2/3", "none": None}


@pytest.mark.parametrize("uid", BAD_UIDS.values(), ids=BAD_UIDS.keys())
def test_non_conformant_uids_are_refused(uid):
    with pytest.raises(InputError, match="not a DICOM UID.*PS3.5 9.1"):
        check_uid(uid, "SOP Instance UID")


def _with_uid(tmp_path: Path, name: str, uid: str) -> Path:
    ds = pydicom.dcmread(real("CT_small.dcm"))
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    path = tmp_path / "inputs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the value it is told to write
        ds.save_as(path)
    return path


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("uid", ["../../X", "ABSOLUTE", "1" * 300, "1.2\x00.3"],
                         ids=["traversal", "absolute", "300 characters", "nul"])
def test_cli_never_writes_outside_the_output_folder(sdk_world, tmp_path, capsys, uid):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    if uid == "ABSOLUTE":
        uid = str(outside / "X")
    bad = _with_uid(tmp_path, "bad.dcm", uid)
    out = tmp_path / "a" / "b" / "out"
    before = _files(tmp_path)
    code = main(["predict", str(sdk_world.package), str(bad), real("CT_small.dcm"), "--dicom-seg", str(out),
                 "--dicom-sr", str(out), "--json", str(tmp_path / "r.json"), "--no-warmup"])
    err = capsys.readouterr().err
    assert code == 1, err
    results = json.loads((tmp_path / "r.json").read_text())
    assert results[0]["error_type"] in vars(errors) and not results[0].get("unexpected"), results[0]
    assert "files" in results[1]  # the next input still ran
    written = _files(tmp_path) - before - {tmp_path / "r.json"}
    assert written and all(p.parent == out for p in written), sorted(map(str, written))
    assert len(written) == 2 and "Traceback" not in err


def test_two_inputs_with_one_sop_instance_do_not_overwrite_each_others_seg(sdk_world, tmp_path, capsys):
    copy = tmp_path / "copy" / "CT_small.dcm"
    copy.parent.mkdir()
    shutil.copy(real("CT_small.dcm"), copy)
    out = tmp_path / "seg"
    code = main(["predict", str(sdk_world.package), real("CT_small.dcm"), str(copy), "--dicom-seg", str(out),
                 "--json", str(tmp_path / "r.json"), "--no-warmup"])
    err = capsys.readouterr().err
    assert code == 1
    results = json.loads((tmp_path / "r.json").read_text())
    assert "files" in results[0] and results[1]["error_type"] == "InputError"
    assert "already" in results[1]["error"] and "not overwriting" in results[1]["error"]
    written = list(out.iterdir())
    assert len(written) == 1 and results[0]["files"] == [str(written[0])], err


# -- the CLI reports a bad input and goes on ------------------------------------------------------------------
def _without(tmp_path: Path, keyword: str) -> Path:
    ds = pydicom.dcmread(real("CT_small.dcm"))
    del ds[keyword]
    ds.SOPInstanceUID = pydicom.uid.generate_uid()  # distinct outputs for each input
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / f"no_{keyword}.dcm"
    ds.save_as(path)
    return path


def test_inputs_lacking_what_seg_needs_are_reported_and_the_run_goes_on(sdk_world, tmp_path, capsys):
    inputs = [_without(tmp_path, "PatientID"), Path(real("CT_small.dcm")), _without(tmp_path, "StudyInstanceUID")]
    out, report = tmp_path / "seg", tmp_path / "out" / "r.json"
    code = main(["predict", str(sdk_world.package), *map(str, inputs), "--dicom-seg", str(out),
                 "--dicom-sr", str(tmp_path / "sr"), "--json", str(report), "--no-warmup"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "2 of 3 input(s) failed" in err
    results = json.loads(report.read_text())
    assert [r["input"] for r in results] == [str(p) for p in inputs]
    for index, keyword in ((0, "PatientID"), (2, "StudyInstanceUID")):
        assert results[index]["error_type"] in vars(errors) and keyword in results[index]["error"]
        assert f"{inputs[index]}: error:" in err
    assert len(results[1]["files"]) == 2
    assert len(list(out.iterdir())) == 1 and len(list((tmp_path / "sr").iterdir())) == 1  # no half pair


def test_an_unexpected_exception_is_reported_for_its_input_and_the_run_goes_on(sdk_world, tmp_path, capsys,
                                                                                monkeypatch):
    from liverlesion.cli import predict as cli_predict

    real_load = cli_predict._load_input

    def load(analyzer, path, args):
        if path.name == "boom.dcm":
            raise RuntimeError("simulated bug")
        return real_load(analyzer, path, args)

    monkeypatch.setattr(cli_predict, "_load_input", load)
    boom = tmp_path / "boom.dcm"
    shutil.copy(real("CT_small.dcm"), boom)
    code = main(["predict", str(sdk_world.package), str(boom), real("CT_small.dcm"), "--json",
                 str(tmp_path / "r.json"), "--no-warmup"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "boom.dcm: unexpected error" in err and "RuntimeError: simulated bug" in err
    results = json.loads((tmp_path / "r.json").read_text())
    assert results[0]["unexpected"] is True and results[0]["error_type"] == "RuntimeError"
    assert "lesions" in results[1]


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder no file can be created in, for real (root passes os.access and chmod: use /sys there)."""
    candidates = [Path("/sys"), Path("/proc")]
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        candidates.insert(0, folder)
    for folder in candidates:
        try:
            fd, name = tempfile.mkstemp(dir=folder)
        except OSError:
            return folder
        os.close(fd)
        os.unlink(name)
    pytest.skip("no folder that refuses new files was found on this machine")


TARGETS = {
    "json into a read-only folder": ("--json", "ro/sub/r.json"),
    "dicom-seg into a read-only folder": ("--dicom-seg", "ro/seg"),
    "dicom-sr into a read-only folder": ("--dicom-sr", "ro"),
    "overlay png into a read-only folder": ("--overlay", "ro/o.png"),
    "overlay folder in a read-only folder": ("--overlay", "ro/overlays"),
    "json onto a folder": ("--json", "folder"),
    "overlay png onto a folder": ("--overlay", "folder.png"),
    "dicom-seg onto a file": ("--dicom-seg", "file.txt"),
    "dicom-sr below a file": ("--dicom-sr", "file.txt/sr"),
    "overlay folder onto a file": ("--overlay", "file.txt"),
    "json below a file": ("--json", "file.txt/r.json"),
}


@pytest.mark.parametrize(("option", "target"), TARGETS.values(), ids=TARGETS.keys())
def test_unusable_output_targets_are_refused_before_the_model_is_loaded(tmp_path, capsys, monkeypatch, option,
                                                                         target):
    from liverlesion.sdk import LesionAnalyzer

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the output targets were checked")

    monkeypatch.setattr(LesionAnalyzer, "load", no_load)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "file.txt").write_text("x")
    if target.startswith("ro"):
        path = _unwritable_folder(tmp_path) / target.removeprefix("ro").lstrip("/")
        if target == "ro":
            path = _unwritable_folder(tmp_path)
    else:
        path = tmp_path / target
    code = main(["predict", str(tmp_path / "package"), real("CT_small.dcm"), option, str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("liverlesion predict: error: ") and option in err


def test_a_writable_target_passes_whatever_os_access_says(tmp_path, capsys, monkeypatch):
    """The check is real: a folder this process can write into passes, whatever os.access says."""
    from liverlesion.sdk import LesionAnalyzer

    loaded = []

    def load(*args, **kwargs):
        loaded.append(1)
        raise errors.PackageError("stop here")

    monkeypatch.setattr(LesionAnalyzer, "load", load)
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # a check by os.access would refuse
    code = main(["predict", str(tmp_path / "package"), real("CT_small.dcm"), "--json",
                 str(tmp_path / "new" / "r.json"), "--dicom-seg", str(tmp_path / "seg")])
    assert code == 2 and loaded == [1] and "stop here" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and not (tmp_path / "seg").exists()  # nothing created before a run


# -- API: typed errors naming what is wrong and what is accepted ----------------------------------------------
@pytest.fixture
def ct():
    slice_ = load_slice(real("CT_small.dcm"))
    return pydicom.dcmread(real("CT_small.dcm")), predict(slice_)


def _set(keyword, value):
    def change(ds):
        setattr(ds, keyword, value)
    return change


def _delete(keyword):
    def change(ds):
        del ds[keyword]
    return change


BAD_SOURCES = {
    "position with two values": (_set("ImagePositionPatient", [1.0, 2.0]), "ImagePositionPatient.*3 finite"),
    "position not finite": (_set("ImagePositionPatient", [1.0, float("nan"), 0.0]), "ImagePositionPatient"),
    "orientation with five values": (_set("ImageOrientationPatient", [1, 0, 0, 0, 1]), "ImageOrientationPatient"),
    "zero pixel spacing": (_set("PixelSpacing", [0.0, 0.7]), "PixelSpacing.*positive"),
    "no pixel spacing": (_delete("PixelSpacing"), "PixelSpacing"),
    "no patient id": (_delete("PatientID"), r"PatientID \(0010,0020\)"),
    "no patient name": (_delete("PatientName"), "PatientName"),
    "no study uid": (_delete("StudyInstanceUID"), "StudyInstanceUID"),
    "no series uid": (_delete("SeriesInstanceUID"), "SeriesInstanceUID"),
    "no sop class": (_delete("SOPClassUID"), "SOPClassUID"),
    "no study date": (_delete("StudyDate"), "StudyDate"),
    "no accession number": (_delete("AccessionNumber"), "AccessionNumber"),
    "no frame of reference": (_delete("FrameOfReferenceUID"), "Frame"),
    "study uid with a leading zero": (_set("StudyInstanceUID", "1.2.03"), "StudyInstanceUID.*leading zero"),
    "frame of reference of 300 characters": (_set("FrameOfReferenceUID", "1" * 300), "300 characters"),
}


@pytest.mark.parametrize(("change", "message"), BAD_SOURCES.values(), ids=BAD_SOURCES.keys())
def test_a_source_seg_and_sr_cannot_be_built_on_is_a_typed_error(ct, change, message):
    source, prediction = ct
    seg = prediction.to_dicom_seg(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values set here
        change(source)
    with pytest.raises(LiverLesionError, match=message):
        prediction.to_dicom_seg(source)
    with pytest.raises(LiverLesionError, match=message):
        prediction.to_dicom_sr(source, seg)


def test_to_dicom_sr_without_a_seg_or_source_is_a_typed_error(ct):
    source, prediction = ct
    with pytest.raises(InputError, match="Segmentation made from this prediction.*got NoneType"):
        prediction.to_dicom_sr(None, None)
    with pytest.raises(InputError, match="needs a Prediction"):
        to_dicom_sr(None, None, None)
    with pytest.raises(InputError, match="pydicom Dataset.*got str"):
        to_dicom_seg(prediction, real("CT_small.dcm"))
    from_array = predict(load_slice(np.full((128, 128), -1000.0, np.float32), spacing=(0.66, 0.66)))
    with pytest.raises(InputError, match="source image"):
        from_array.to_dicom_sr(None, None)
    other = predict(load_slice(pydicom.dcmread(real("CT_small.dcm"))))
    other_source = pydicom.dcmread(real("CT_small.dcm"))
    other_source.SOPInstanceUID = pydicom.uid.generate_uid()
    foreign = to_dicom_seg(predict(load_slice(other_source)), other_source)
    with pytest.raises(InputError, match="was not made on source image"):
        other.to_dicom_sr(source, foreign)


@pytest.mark.parametrize("value", [0, -1, 2**31, 1.5, True, "2"])
def test_bad_series_or_instance_numbers_are_typed_errors(ct, value):
    source, prediction = ct
    with pytest.raises(InputError, match="series_number"):
        prediction.to_dicom_seg(source, series_number=value)
    with pytest.raises(InputError, match="instance_number"):
        prediction.to_dicom_sr(source, prediction.to_dicom_seg(source), instance_number=value)


def _write(kind, prediction, path):
    if kind == "save_dicom":
        return save_dicom(prediction.to_dicom_seg(), path)
    pytest.importorskip("matplotlib")
    return write_overlay(load_slice(real("CT_small.dcm")).hu, prediction, path)


@pytest.mark.parametrize("kind", ["save_dicom", "overlay"])
def test_writing_into_a_missing_folder_or_onto_a_folder_is_a_typed_error(ct, tmp_path, kind):
    """A missing folder is refused, not created (an unmounted share must not become a local folder)."""
    _, prediction = ct
    with pytest.raises(InputError, match=r"does not exist; create it first"):
        _write(kind, prediction, tmp_path / "missing" / "x.out")
    assert not (tmp_path / "missing").exists()
    (tmp_path / "dir").mkdir()
    with pytest.raises(InputError, match="is a folder, where a file is needed"):
        _write(kind, prediction, tmp_path / "dir")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is not a folder"):
        _write(kind, prediction, tmp_path / "file" / "x.out")
    assert _write(kind, prediction, tmp_path / "ok.out").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file", "ok.out"]  # no temporary left behind


@pytest.mark.parametrize(("option", "value"), [("window", (240, -160)), ("window", (0, float("inf"))),
                                               ("alpha", 2.0), ("dpi", 0), ("dpi", 1e9)])
def test_bad_overlay_styles_are_typed_errors(ct, tmp_path, option, value):
    pytest.importorskip("matplotlib")
    _, prediction = ct
    with pytest.raises(InputError, match=option):
        write_overlay(load_slice(real("CT_small.dcm")).hu, prediction, tmp_path / "o.png", **{option: value})
    assert not list(tmp_path.iterdir())


def test_save_dicom_refuses_what_is_not_a_dataset(tmp_path):
    with pytest.raises(InputError, match="pydicom Dataset.*got NoneType"):
        save_dicom(None, tmp_path / "x.dcm")
    with pytest.raises(InputError, match="not a path"):
        save_dicom(pydicom.Dataset(), None)


def test_the_seg_and_sr_the_cli_writes_pass_the_validators(sdk_world, tmp_path, capsys):
    names = ["CT_small.dcm", "explicit_VR-UN.dcm"]
    code = main(["predict", str(sdk_world.package), *map(real, names), "--dicom-sr", str(tmp_path / "out"),
                 "--slice-thickness", "2.5", "--no-warmup"])
    assert code == 0, capsys.readouterr().err
    written = sorted((tmp_path / "out").iterdir())
    assert len(written) == 2 * len(names)
    for path in written:
        dciodvfy(path)
        if path.name.endswith("_sr.dcm"):
            dsrdump(path)
    source = pydicom.dcmread(real("CT_small.dcm"), stop_before_pixels=True)
    seg = pydicom.dcmread(tmp_path / "out" / f"{source.SOPInstanceUID}_seg.dcm")
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == float(source.SliceThickness)  # the source's own wins


def test_a_source_without_slice_thickness_needs_one_for_its_seg(sdk_world, tmp_path, capsys):
    """explicit_VR-UN.dcm leaves Slice Thickness empty (Type 2); the SEG's is Type 1C (dciodvfy)."""
    source = pydicom.dcmread(real("explicit_VR-UN.dcm"))
    prediction = predict(load_slice(source), np.zeros((64, 64), np.int32))
    with pytest.raises(LiverLesionError, match="Slice Thickness.*slice_thickness_mm"):
        prediction.to_dicom_seg()
    for bad in (0, -1.0, float("nan"), "2", True, 1e6):
        with pytest.raises(InputError, match="slice_thickness_mm"):
            prediction.to_dicom_seg(slice_thickness_mm=bad)
    seg = prediction.to_dicom_seg(slice_thickness_mm=2.5)
    assert float(seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness) == 2.5
    dciodvfy(save_dicom(seg, tmp_path / "seg.dcm"))
    code = main(["predict", str(sdk_world.package), real("explicit_VR-UN.dcm"), "--dicom-seg",
                 str(tmp_path / "cli"), "--no-warmup"])
    err = capsys.readouterr().err
    assert code == 1 and "--slice-thickness" in err and "Traceback" not in err


# -- review of issue 11: paths that cannot be looked at, targets that are not regular files --------------------
def _as_nobody(call) -> list[str]:
    """[exception type, message] of ``call()`` run in a forked child as uid/gid 65534 (["ok", ""] if none)."""
    if not hasattr(os, "fork") or os.geteuid() != 0:
        pytest.skip("needs root (to become another user) and fork")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery, only the call and one write
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                call()
                result = ["ok", ""]
            except BaseException as exc:  # noqa: BLE001 - reported to the parent, whatever it is
                result = [f"{type(exc).__module__}.{type(exc).__name__}", str(exc)]
            os.write(write, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


@pytest.mark.parametrize("kind", ["json file", "json file, folder must exist", "seg folder", "make folder"])
def test_a_target_below_a_folder_this_user_may_not_search_is_a_typed_error(tmp_path, kind):
    from liverlesion.sdk.outputs.targets import check_file, check_folder, make_folder

    locked = tmp_path / "locked"  # root's, 0700: another user may not even look inside
    (locked / "inner").mkdir(parents=True)
    locked.chmod(0o700)
    calls = {
        "json file": lambda: check_file(locked / "inner" / "r.json", "--json", create_parents=True),
        "json file, folder must exist": lambda: check_file(locked / "inner" / "r.json", "--json"),
        "seg folder": lambda: check_folder(locked / "inner" / "seg", "--dicom-seg", probe=True),
        "make folder": lambda: make_folder(locked / "inner" / "seg", "--dicom-seg"),
    }
    kind_of_error, message = _as_nobody(calls[kind])
    assert kind_of_error == "liverlesion.errors.InputError", (kind_of_error, message)
    assert message.startswith(("--json: ", "--dicom-seg: ")) and "Permission denied" in message


def _special_targets(tmp_path: Path) -> dict[str, Path]:
    """A symbolic link to a file, a dangling one, a FIFO and (as root) a character device like /dev/null."""
    target = tmp_path / "target.txt"
    target.write_text("keep me")
    targets = {"link to a file": tmp_path / "link.json", "dangling link": tmp_path / "dangling.json",
               "fifo": tmp_path / "fifo.json"}
    targets["link to a file"].symlink_to(target)
    targets["dangling link"].symlink_to(tmp_path / "nowhere.json")
    os.mkfifo(targets["fifo"])
    if os.geteuid() == 0:
        device = tmp_path / "null.json"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null (or /dev/stdout's tty) is
        targets["character device"] = device
    return targets


SPECIAL = ["link to a file", "dangling link", "fifo", "character device"]


@pytest.mark.parametrize("kind", SPECIAL)
def test_cli_refuses_an_existing_target_that_is_not_a_regular_file(tmp_path, capsys, monkeypatch, kind):
    from liverlesion.sdk import LesionAnalyzer

    targets = _special_targets(tmp_path)
    if kind not in targets:
        pytest.skip("a character device needs root to make")
    monkeypatch.setattr(LesionAnalyzer, "load", lambda *a, **k: pytest.fail("the targets were not checked first"))
    before = {name: os.lstat(path) for name, path in targets.items()}
    for option in ("--json", "--overlay"):
        path = targets[kind]
        if option == "--overlay":
            path = path.rename(path.with_suffix(".png"))
        code = main(["predict", str(tmp_path / "package"), real("CT_small.dcm"), option, str(path)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith(f"liverlesion predict: error: {option}: ") and "Traceback" not in err
        assert "not a regular file; refusing to replace it" in err
        assert ("--json -" in err) == (option == "--json")
        assert os.lstat(path).st_mode == before[kind].st_mode  # still a link / FIFO / device
    assert (tmp_path / "target.txt").read_text() == "keep me"


@pytest.mark.parametrize("kind", SPECIAL[:3])
def test_the_sdk_writers_refuse_an_existing_target_that_is_not_a_regular_file(ct, tmp_path, kind):
    _, prediction = ct
    path = _special_targets(tmp_path)[kind]
    with pytest.raises(InputError, match="save_dicom: .* is a (symbolic link|FIFO).*not a regular file"):
        save_dicom(prediction.to_dicom_seg(), path)
    if kind != "fifo":
        assert path.is_symlink()
    assert (tmp_path / "target.txt").read_text() == "keep me"
    matplotlib = pytest.importorskip("matplotlib")
    assert matplotlib
    with pytest.raises(InputError, match="overlay: .*not a regular file"):
        write_overlay(load_slice(real("CT_small.dcm")).hu, prediction, path)


def test_an_existing_regular_file_is_replaced(ct, tmp_path):
    _, prediction = ct
    path = tmp_path / "seg.dcm"
    path.write_bytes(b"old")
    save_dicom(prediction.to_dicom_seg(), path)
    assert pydicom.dcmread(path).Modality == "SEG"


# -- review of issue 11: output modes follow the umask ---------------------------------------------------------
@pytest.fixture
def umask():
    """Sets the process umask for one test, and restores it."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda value: os.umask(value)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600), (0o000, 0o666)])
def test_outputs_get_the_mode_the_umask_gives_not_mkstemps_0600(ct, tmp_path, umask, mask, mode):
    from liverlesion.atomic import atomic_write_bytes

    _, prediction = ct
    umask(mask)
    (tmp_path / "old.bin").write_bytes(b"old")
    (tmp_path / "old.bin").chmod(0o600)
    written = [tmp_path / "new.bin", tmp_path / "old.bin"]
    for path in written:
        atomic_write_bytes(path, b"new")
    written.append(save_dicom(prediction.to_dicom_seg(), tmp_path / "seg.dcm"))
    if importlib.util.find_spec("matplotlib") is not None:
        written.append(write_overlay(load_slice(real("CT_small.dcm")).hu, prediction, tmp_path / "o.png"))
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path.name


def test_the_umask_is_read_without_proc_too(monkeypatch, umask):
    from liverlesion import atomic

    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    umask(0o027)
    assert atomic.current_umask() == 0o027
    monkeypatch.setattr(atomic, "open", no_proc, raising=False)  # module global before the builtin
    assert atomic.current_umask() == 0o027
    assert os.umask(0o027) == 0o027  # and it was left as it was


def test_the_cli_json_gets_the_umask_mode(sdk_world, tmp_path, capsys, umask):
    umask(0o022)
    report = tmp_path / "r.json"
    assert main(["predict", str(sdk_world.package), real("CT_small.dcm"), "--json", str(report),
                 "--no-warmup"]) == 0
    assert stat.S_IMODE(report.stat().st_mode) == 0o644


# -- review of issue 11: overlay styles of numpy scalars ---------------------------------------------------------
@pytest.mark.parametrize("style", [{"alpha": np.float32(0.5)}, {"alpha": np.float64(1.0)}, {"dpi": np.int64(100)},
                                   {"dpi": np.int32(72)}, {"window": (np.float32(-160), np.int16(240))},
                                   {"window": np.array([-100.0, 200.0])}], ids=repr)
def test_numpy_scalars_are_overlay_styles_too(ct, tmp_path, style):
    pytest.importorskip("matplotlib")
    _, prediction = ct
    path = write_overlay(load_slice(real("CT_small.dcm")).hu, prediction, tmp_path / "o.png", **style)
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(("option", "value"), [("alpha", np.bool_(True)), ("alpha", float("nan")),
                                               ("dpi", np.bool_(True)), ("dpi", np.float64(100)),
                                               ("window", "12"), ("alpha", "0.5")], ids=repr)
def test_overlay_styles_that_are_not_numbers_are_refused(ct, tmp_path, option, value):
    pytest.importorskip("matplotlib")
    _, prediction = ct
    with pytest.raises(InputError, match=option):
        write_overlay(load_slice(real("CT_small.dcm")).hu, prediction, tmp_path / "o.png", **{option: value})


# -- review of issue 11: only the CLI pre-check probes a folder ---------------------------------------------------
def test_the_sdk_writers_create_no_probe_file(ct, tmp_path, monkeypatch):
    """A probe file would show up in a watched folder (a PACS import folder): atomic_write_bytes proves as much."""
    from liverlesion.sdk.outputs import targets as output_targets

    def probe(folder, what):
        raise AssertionError(f"{what} probed {folder}")

    _, prediction = ct
    monkeypatch.setattr(output_targets, "_probe", probe)
    save_dicom(prediction.to_dicom_seg(), tmp_path / "seg.dcm")
    if importlib.util.find_spec("matplotlib") is not None:
        write_overlay(load_slice(real("CT_small.dcm")).hu, prediction, tmp_path / "o.png")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_cli_probes_each_target_before_the_model_is_loaded(tmp_path, capsys, monkeypatch):
    from liverlesion.sdk import LesionAnalyzer
    from liverlesion.sdk.outputs import targets as output_targets

    probed = []
    real_probe = output_targets._probe
    monkeypatch.setattr(output_targets, "_probe", lambda folder, what: (probed.append(what), real_probe(folder, what)))
    monkeypatch.setattr(LesionAnalyzer, "load", lambda *a, **k: (_ for _ in ()).throw(errors.PackageError("stop")))
    code = main(["predict", str(tmp_path / "package"), real("CT_small.dcm"), "--json", str(tmp_path / "r.json"),
                 "--dicom-seg", str(tmp_path / "seg"), "--dicom-sr", str(tmp_path / "sr"), "--overlay",
                 str(tmp_path / "o.png")])
    assert code == 2 and "stop" in capsys.readouterr().err
    assert probed == ["--json", "--dicom-seg", "--dicom-sr", "--overlay"]


# -- review of issue 11: one reading of Number of Frames for outputs too ------------------------------------------
def test_a_source_with_a_malformed_number_of_frames_gets_no_seg(ct):
    source, prediction = ct
    tag = pydicom.datadict.tag_for_keyword("NumberOfFrames")
    source._dict[tag] = pydicom.dataelem.RawDataElement(pydicom.tag.Tag(tag), "UN", 1, b"\x01", 0, False, True)
    with pytest.raises(errors.DicomError, match="NumberOfFrames"):
        prediction.to_dicom_seg(source)
