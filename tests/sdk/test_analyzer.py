"""LesionAnalyzer end to end: phantom and real DICOM slices through predict, on onnxruntime and torch."""

from __future__ import annotations

import copy
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import get_decoder
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from concurrency import run_together
from dicom_files import real
from liverlesion import LesionAnalyzer, Prediction
from liverlesion.data.lesion_slices import read_lesion_slices
from liverlesion.errors import (
    BackendError,
    ChecksumError,
    DicomError,
    InputError,
    LiverLesionError,
    MissingDependencyError,
    PackageError,
)
from liverlesion.package import load_package
from liverlesion.sdk import load_slice, save_dicom
from sdk_fixtures import CYST_DISCS, LIVER_DISC, THRESHOLD_GRID, drawn_slice

AXIAL_CT = ["CT_small.dcm", "693_J2KI.dcm", "693_UNCI.dcm", "693_UNCR.dcm", "693_J2KR.dcm",
            "explicit_VR-UN.dcm"]




@pytest.fixture(scope="module")
def ort(sdk_world):
    with LesionAnalyzer.load(sdk_world.package, "onnxruntime", "fp32") as analyzer:
        yield analyzer


@pytest.fixture(scope="module")
def vino(sdk_world):
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'liverlesion[openvino]'")
    with LesionAnalyzer.load(sdk_world.package, "openvino", "fp32", threads=1) as analyzer:
        yield analyzer


@pytest.fixture(scope="module")
def reference(sdk_world):
    # One torch thread: with two, a busy 2-core machine makes each of the many tiny ops wait for a core.
    with LesionAnalyzer.load(sdk_world.package, "torch", threads=1) as analyzer:
        yield analyzer


@pytest.fixture(scope="module")
def threshold(sdk_world):
    with LesionAnalyzer.load(sdk_world.threshold) as analyzer:
        yield analyzer


@pytest.fixture(scope="module")
def phantom_slices(sdk_world):
    return read_lesion_slices(sdk_world.phantoms / "lesion_slices")


def same(a: Prediction, b: Prediction, atol: float = 1e-6) -> None:
    """Identical label maps and lesions; probabilities equal to ``atol``."""
    np.testing.assert_array_equal(a.label_map, b.label_map)
    assert a.slice_class == b.slice_class
    assert [(x.id, x.label, x.pixels, x.bbox) for x in a.lesions] == [(x.id, x.label, x.pixels, x.bbox)
                                                                     for x in b.lesions]
    probabilities = [x.probability for x in b.lesions]
    np.testing.assert_allclose([x.probability for x in a.lesions], probabilities, atol=atol)


# -- the package API ---------------------------------------------------------------------------
def test_import_liverlesion_stays_light_and_exports_the_analyzer_lazily():
    script = (
        "import sys\n"
        "import liverlesion\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'numpy', 'liverlesion.sdk') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from liverlesion import LesionAnalyzer, Prediction\n"
        "assert LesionAnalyzer.__module__ == 'liverlesion.sdk.analyzer'\n"
        "assert Prediction.__module__ == 'liverlesion.sdk.prediction'\n"
        "assert not [m for m in ('torch', 'onnxruntime') if m in sys.modules]\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    import liverlesion

    with pytest.raises(AttributeError, match="NoSuchThing"):
        liverlesion.NoSuchThing  # noqa: B018


def test_load_records_and_logs_what_it_chose(sdk_world, caplog):
    with caplog.at_level(logging.INFO, logger="liverlesion.sdk"):
        analyzer = LesionAnalyzer.load(sdk_world.package, warmup=False)
    with analyzer:
        chosen = analyzer.selection.chosen
        assert (chosen.backend, chosen.precision) == (analyzer.backend, analyzer.precision)
        assert set(analyzer.selection.backends) == {"tensorrt", "tensorrt-rtx", "onnxruntime", "openvino", "torch"}
        assert analyzer.selection.summary() in caplog.text
        json.dumps(analyzer.selection.to_dict())
        assert analyzer.warmup_ms == []
        assert analyzer.warm_up(3) == analyzer.warmup_ms and len(analyzer.warmup_ms) == 3


# -- round trips against the torch reference ----------------------------------------------------
def test_fp32_onnx_gives_the_torch_reference_label_maps_on_phantom_slices(ort, reference, phantom_slices):
    for item in phantom_slices:
        a = ort.predict(item.hu, spacing=item.spacing_mm)
        b = reference.predict(item.hu, spacing=item.spacing_mm)
        assert (a.backend, b.backend) == ("onnxruntime", "torch")
        assert a.shape == item.hu.shape and a.label_map.dtype == np.uint8
        same(a, b, atol=1e-4)


def test_predict_batch_equals_looping_predict(ort, phantom_slices):
    items = phantom_slices[:7]
    spacing = items[0].spacing_mm
    batched = ort.predict_batch([x.hu for x in items], spacing=spacing, batch_size=3)  # 3, 3, 1
    looped = [ort.predict(x.hu, spacing=spacing) for x in items]
    assert len(batched) == len(looped)
    for a, b in zip(batched, looped, strict=True):
        same(a, b)
        assert set(a.timings) >= {"preprocess_ms", "inference_ms", "postprocess_ms", "total_ms"}
    stacked = ort.predict_batch(np.stack([x.hu for x in items[:3]]), spacing=spacing)
    for a, b in zip(stacked, looped[:3], strict=True):
        same(a, b)
    assert ort.predict_batch([]) == []


def test_predict_batch_refuses_one_slice_and_names_a_bad_item(ort, phantom_slices):
    with pytest.raises(InputError, match=r"sequence of slices.*predict"):
        ort.predict_batch(phantom_slices[0].hu)
    with pytest.raises(InputError, match="sequence of slices"):
        ort.predict_batch(real("CT_small.dcm"))
    with pytest.raises(InputError, match=r"slice 1 of the batch.*NaN"):
        ort.predict_batch([phantom_slices[0].hu, np.full((8, 8), np.nan)], spacing=(1, 1))
    with pytest.raises(InputError, match="batch_size"):
        ort.predict_batch([phantom_slices[0].hu], batch_size=0)


# -- spacing, orientation and default spacing --------------------------------------------------
def test_lesion_areas_agree_across_pixel_spacings_through_predict(threshold):
    """The same drawing at 0.6 and 0.9 mm: areas in mm2 agree with each other and with the drawn discs."""
    results = {s: threshold.predict(drawn_slice(s), spacing=(s, s)) for s in (0.6, 0.9)}
    half_pixel = THRESHOLD_GRID.spacing_mm[0] / 2  # labels come from the model grid: edges move <= this
    for spacing, prediction in results.items():
        found = sorted(prediction.lesions, key=lambda x: -x.area_mm2)
        assert [x.label for x in found] == ["cyst", "cyst"], spacing
        for lesion, (_, radius, _) in zip(found, CYST_DISCS, strict=True):
            assert abs(lesion.area_mm2 - np.pi * radius ** 2) <= 2 * np.pi * radius * (half_pixel + spacing)
        radius = LIVER_DISC[1]
        edge = 2 * np.pi * radius * (half_pixel + spacing)
        assert abs(prediction.liver_area_mm2 - np.pi * radius ** 2) <= edge
    fine, coarse = (sorted(results[s].lesions, key=lambda x: -x.area_mm2) for s in (0.6, 0.9))
    for a, b, (centre, radius, _) in zip(fine, coarse, CYST_DISCS, strict=True):
        assert abs(a.area_mm2 - b.area_mm2) <= 2 * np.pi * radius * 2 * half_pixel
        # centroids in mm from the slice centre agree within a model pixel
        mm_a = (np.array(a.centroid) - (np.array(results[0.6].shape) - 1) / 2) * 0.6
        mm_b = (np.array(b.centroid) - (np.array(results[0.9].shape) - 1) / 2) * 0.9
        np.testing.assert_allclose(mm_a, centre, atol=2 * half_pixel)
        np.testing.assert_allclose(mm_b, mm_a, atol=2 * half_pixel)


def test_a_flipped_or_transposed_dicom_gets_its_label_map_on_the_stored_pixels(ort):
    source = pydicom.dcmread(real("CT_small.dcm"))
    plain = ort.predict(source)
    assert plain.lesion_mask.any() or plain.liver_mask.any()
    assert not np.array_equal(plain.label_map, plain.label_map[::-1])  # else a flip would go unnoticed
    cases = {(1, 0, 0, 0, -1, 0): lambda a: a[::-1], (0, 1, 0, 1, 0, 0): lambda a: a.T}
    for orientation, change in cases.items():
        stored = copy.deepcopy(source)
        stored.ImageOrientationPatient = list(orientation)
        stored.PixelData = np.ascontiguousarray(change(source.pixel_array)).tobytes()
        result = ort.predict(stored)
        np.testing.assert_array_equal(result.label_map, change(plain.label_map))
        areas = sorted(x.area_mm2 for x in plain.lesions)
        assert sorted(x.area_mm2 for x in result.lesions) == pytest.approx(areas)


def test_arrays_without_spacing_take_the_package_default(sdk_world, ort, tmp_path, phantom_slices):
    hu = phantom_slices[0].hu
    assert ort.default_spacing == ort.grid.spacing_mm  # the exported package records no default_spacing_mm
    result = ort.predict(hu)
    assert result.spacing_mm == ort.grid.spacing_mm and result.source["default_spacing"] is True
    same(result, ort.predict(hu, spacing=ort.grid.spacing_mm))
    from liverlesion.export import export_package

    root = tmp_path / "package"
    export_package(sdk_world.checkpoint, root, default_spacing_mm=(0.75, 0.8))
    assert load_package(root).manifest.raw["input"]["default_spacing_mm"] == [0.75, 0.8]
    with pytest.raises(InputError, match="spacing"):
        export_package(sdk_world.checkpoint, tmp_path / "other", default_spacing_mm=(0.0, 1.0))
    with LesionAnalyzer.load(root, "onnxruntime", warmup=False) as analyzer:
        assert analyzer.predict(hu).spacing_mm == (0.75, 0.8)
        assert analyzer.predict(hu, spacing=(1.5, 1.5)).spacing_mm == (1.5, 1.5)


# -- real DICOM, NIfTI ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", AXIAL_CT)
def test_every_real_axial_ct_goes_through_predict(ort, name):
    path = real(name)
    ds = pydicom.dcmread(path)
    result = ort.predict(path)
    assert result.shape == (ds.Rows, ds.Columns) and result.label_map.dtype == np.uint8
    assert set(np.unique(result.label_map)) <= set(range(5))
    assert result.source["sop_instance_uid"] == ds.SOPInstanceUID
    assert result.spacing_mm == pytest.approx(tuple(float(v) for v in ds.PixelSpacing))
    same(result, ort.predict(ds))
    slice_ = load_slice(ds)
    if slice_.orientation.is_identity:  # the same pixels as an HU array give the same answer
        same(result, ort.predict(slice_.hu, spacing=slice_.spacing_mm))
    json.dumps(result.to_dict())


def test_enhanced_multiframe_ct_is_predicted_frame_by_frame_or_refused(ort):
    path = real("eCT_Supplemental.dcm")
    with pytest.raises(DicomError, match="frame="):
        ort.predict(path)
    with pytest.raises(DicomError, match="Rescale Type"):
        ort.predict(path, frame=0)
    ds = pydicom.dcmread(path)
    for frame in (0, 1):
        result = ort.predict(ds, frame=frame, allow_non_hu=True)
        assert result.shape == (ds.Rows, ds.Columns) and result.source["frame"] == frame


def test_jpeg2000_without_its_plugin_is_refused_through_predict(ort, monkeypatch):
    path = real("693_J2KR.dcm")
    decoder = get_decoder(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0")})
    with pytest.raises(DicomError, match="pylibjpeg-openjpeg"):
        ort.predict(path)


def test_a_nifti_slice_goes_through_predict(ort, sdk_world):
    volume = sorted((sdk_world.phantoms / "lits").glob("volume-*.nii*"))[0]
    result = ort.predict(volume, index=2)
    assert result.source == {**result.source, "kind": "nifti", "index": 2}
    assert result.shape == load_slice(volume, index=2).shape
    with pytest.raises(InputError, match="index"):
        ort.predict(volume)


# -- DICOM out ------------------------------------------------------------------------------------
def test_dicom_seg_and_sr_from_predict_read_back_on_the_source_geometry(threshold, tmp_path):
    hd = pytest.importorskip("highdicom")
    source = pydicom.dcmread(real("CT_small.dcm"))
    result = threshold.predict(real("CT_small.dcm"))
    assert result.liver_mask.any() and result.lesions  # the threshold graph finds liver and lesions here
    seg_path = save_dicom(result.to_dicom_seg(), tmp_path / "seg.dcm")
    seg = pydicom.dcmread(seg_path)
    assert seg.SOPClassUID == SegmentationStorage and (seg.Rows, seg.Columns) == (source.Rows, source.Columns)
    shared = seg.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(shared.PixelMeasuresSequence[0].PixelSpacing, source.PixelSpacing)
    np.testing.assert_allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient,
                               source.ImageOrientationPatient)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose(position, source.ImagePositionPatient)
    read = hd.seg.segread(seg_path)
    names = {int(s.SegmentNumber): str(s.SegmentLabel).lower() for s in seg.SegmentSequence}
    masks = read.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=sorted(names))[0]
    for channel, number in enumerate(sorted(names)):
        name = names[number]
        expected = result.liver_mask if name == "liver" else np.isin(
            result.lesion_components, [x.id for x in result.lesions if x.label == name])
        np.testing.assert_array_equal(masks[..., channel], expected)

    sr_path = save_dicom(result.to_dicom_sr(source, read), tmp_path / "sr.dcm")
    assert pydicom.dcmread(sr_path).SOPClassUID == Comprehensive3DSRStorage
    content = hd.sr.srread(sr_path).content
    groups = {g.tracking_identifier: g for g in content.get_volumetric_roi_measurement_groups()}
    for lesion in result.lesions:
        values = {m.name.meaning: m.value for m in groups[f"Lesion {lesion.id}"].get_measurements()}
        assert values["Area"] == pytest.approx(lesion.area_mm2)
        assert values["Probability"] == pytest.approx(lesion.probability)


# -- threads and lifetime -------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_eight_threads_sharing_one_analyzer_get_the_serial_results(backend, request, phantom_slices):
    analyzer = request.getfixturevalue({"onnxruntime": "ort", "openvino": "vino", "torch": "reference"}[backend])
    inputs = [(x.hu, x.spacing_mm) for x in phantom_slices[:5]]
    serial = [analyzer.predict(hu, spacing=s) for hu, s in inputs]
    results: dict[tuple[int, int], Prediction] = {}
    def work(thread: int) -> None:
        for k in range(25):
            hu, spacing = inputs[(thread + k) % len(inputs)]
            results[thread, k] = analyzer.predict(hu, spacing=spacing)

    errors = run_together(8, work)
    assert not errors, errors
    assert len(results) == 200
    for (thread, k), prediction in results.items():
        same(prediction, serial[(thread + k) % len(inputs)])


def test_close_waits_and_then_refuses_with_a_clear_error(sdk_world, phantom_slices):
    hu, spacing = phantom_slices[0].hu, phantom_slices[0].spacing_mm
    with LesionAnalyzer.load(sdk_world.package, "onnxruntime", warmup=False) as analyzer:
        assert analyzer.predict(hu, spacing=spacing).backend == "onnxruntime"
    assert analyzer.closed and "closed" in repr(analyzer)
    with pytest.raises(BackendError, match=r"closed.*LesionAnalyzer\.load"):
        analyzer.predict(hu, spacing=spacing)
    with pytest.raises(BackendError, match="closed"):
        analyzer.predict_batch([hu], spacing=spacing)
    analyzer.close()  # idempotent


def test_closing_an_archive_analyzer_removes_its_unpacked_files(sdk_world, tmp_path):
    from liverlesion.package.store import write_archive

    archive = write_archive(sdk_world.package, tmp_path / "package.zip")
    analyzer = LesionAnalyzer.load(archive, "onnxruntime", warmup=False)
    unpacked = analyzer.package.root
    assert unpacked.is_dir() and unpacked != tmp_path
    analyzer.close()
    assert not unpacked.exists()


# -- bad input ------------------------------------------------------------------------------------
BAD_ARRAYS = {
    "3D": (np.zeros((2, 16, 16)), "not 2D"),
    "1D": (np.zeros(16), "not 2D"),
    "empty": (np.zeros((0, 16)), "empty"),
    "NaN": (np.full((16, 16), np.nan), "NaN"),
    "inf": (np.full((16, 16), np.inf), "NaN or infinite"),
    "strings": (np.full((16, 16), "a"), "not numeric"),
    "objects": (np.empty((16, 16), dtype=object), "not numeric"),
    "complex": (np.zeros((16, 16), np.complex64), "not numeric"),
    "bool": (np.zeros((16, 16), bool), "not numeric"),
}


@pytest.mark.parametrize("name", BAD_ARRAYS)
def test_bad_arrays_are_refused_by_predict(ort, name):
    array, message = BAD_ARRAYS[name]
    with pytest.raises(InputError, match=message) as info:
        ort.predict(array, spacing=(1.0, 1.0))
    assert "accepted" in str(info.value)


@pytest.mark.parametrize("spacing", [(0.0, 1.0), (-1.0, 1.0), (1000.0, 1000.0), (float("nan"), 1.0), (1.0,),
                                     "ab"])
def test_absurd_spacings_are_refused_by_predict(ort, spacing):
    with pytest.raises(InputError, match="spacing"):
        ort.predict(np.zeros((16, 16)), spacing=spacing)


def test_bad_files_and_objects_are_refused_by_predict(ort, tmp_path):
    data = Path(real("CT_small.dcm")).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.dcm").write_bytes(b"this is not DICOM" * 20)
    headless = pydicom.dcmread(real("CT_small.dcm"))
    del headless.PixelData
    headless.save_as(tmp_path / "header_only.dcm")
    cases = [
        (tmp_path / "cut.dcm", DicomError, "cut.dcm.*(truncated|corrupt)"),
        (tmp_path / "notes.dcm", DicomError, "notes.dcm is not a DICOM file"),
        (tmp_path / "header_only.dcm", DicomError, "no pixel data"),
        (headless, DicomError, "no pixel data"),
        (tmp_path / "missing.dcm", InputError, "no such file"),
        ([[1, 2], [3, 4]], InputError, "cannot analyse a list.*accepted"),
        (pydicom.dcmread(real("MR_small.dcm")), DicomError, "modality is 'MR'"),
    ]
    for thing, kind, message in cases:
        with pytest.raises(kind, match=message):
            ort.predict(thing)


def test_a_tampered_or_incomplete_package_is_refused(sdk_world, tmp_path):
    root = shutil.copytree(sdk_world.package, tmp_path / "package")
    onnx_file = root / "model_fp32.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"sha256 of 'model_fp32\.onnx'"):
        LesionAnalyzer.load(root)
    onnx_file.unlink()
    with pytest.raises(PackageError, match="missing"):
        LesionAnalyzer.load(root)
    with pytest.raises(PackageError, match="does not exist"):
        LesionAnalyzer.load(tmp_path / "nothing")


def test_a_backend_that_is_not_installed_names_its_extra_and_auto_moves_on(sdk_world, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=r"liverlesion\[openvino\]"):
        LesionAnalyzer.load(sdk_world.package, "openvino")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # 'import onnxruntime' now fails
    with pytest.raises(MissingDependencyError, match=r"liverlesion\[onnxruntime\]"):
        LesionAnalyzer.load(sdk_world.package, "onnxruntime")
    with LesionAnalyzer.load(sdk_world.package, warmup=False) as analyzer:
        assert analyzer.backend == "torch"
        assert "onnxruntime is not installed" in analyzer.selection.backends["onnxruntime"]
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingDependencyError, match=r"liverlesion\[train\]"):
        LesionAnalyzer.load(sdk_world.package, "torch")
    with pytest.raises(BackendError, match="no backend can run this package"):
        LesionAnalyzer.load(sdk_world.package)


def test_bad_backend_or_precision_requests_are_refused(sdk_world):
    cases = [({"backend": "cuda"}, "unknown backend 'cuda'"), ({"precision": "fp8"}, "unknown precision"),
             ({"precision": "int8"}, "no int8 model; it has: fp16, fp32"),
             ({"backend": "torch", "precision": "fp16"}, "fp32 only"),
             ({"backend": "torch", "provider": "cpu"}, "provider='cpu' applies to the onnxruntime backend"),
             ({"provider": "cuda"}, "no CUDAExecutionProvider"), ({"backend": "tensorrt"}, "tensorrt")]
    for kwargs, message in cases:
        with pytest.raises(LiverLesionError, match=message):
            LesionAnalyzer.load(sdk_world.package, **kwargs)


def test_auto_moves_past_a_choice_that_fails_to_load_and_records_why(sdk_world, monkeypatch):
    from liverlesion.backends import onnxruntime as ort_backend

    def broken(self, *args, **kwargs):
        raise BackendError("onnxruntime could not start (simulated)")

    monkeypatch.setattr(ort_backend.OnnxRuntimeBackend, "__init__", broken)
    monkeypatch.setitem(sys.modules, "openvino", None)  # else auto would take OpenVINO before onnxruntime
    with LesionAnalyzer.load(sdk_world.package, warmup=False, threads=1) as analyzer:
        assert analyzer.backend == "torch"
        failed = [(c.backend, c.precision, why) for c, why in analyzer.selection.failures]
        assert [f[:2] for f in failed] == [("onnxruntime", "fp32"), ("onnxruntime", "fp16")]
        assert all("simulated" in why for *_, why in failed)
        assert "failed to load" in analyzer.selection.summary()
    with pytest.raises(BackendError, match="simulated"):
        LesionAnalyzer.load(sdk_world.package, "onnxruntime", "fp32")
