"""Lesion-slice dataset: round trip, the documented layout, atomic replacement, and every refusal."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from liverlesion.data.lesion_slices import LesionSlice, read_lesion_slices, write_lesion_slices
from liverlesion.errors import DataFormatError, InputError
from liverlesion.labels import CYST, HEMANGIOMA, LIVER, METASTASIS


def _slice(case_id: str, patient: str, label: int, kind: str, shape=(20, 24), seed: int = 0) -> LesionSlice:
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    mask[4:16, 3:20] = LIVER
    mask[8:12, 8:12] = label
    hu = rng.normal(60.0, 30.0, shape).astype(np.float32)
    return LesionSlice(case_id=case_id, patient_id=patient, hu=hu, mask=mask, spacing_mm=(0.7, 0.75),
                       lesion_class=kind)


def _dataset() -> list[LesionSlice]:
    return [_slice("P1-1", "P1", CYST, "cyst", seed=1), _slice("P1-2", "P1", CYST, "cyst", seed=2),
            _slice("P2-1", "P2", HEMANGIOMA, "hemangioma", seed=3),
            _slice("P3-1", "P3", METASTASIS, "metastasis", shape=(30, 18), seed=4)]


def test_round_trip(tmp_path):
    written = _dataset()
    assert write_lesion_slices(tmp_path / "ds", written) == tmp_path / "ds"
    read = read_lesion_slices(tmp_path / "ds")
    assert [s.case_id for s in read] == [s.case_id for s in written]
    for a, b in zip(written, read):
        assert (b.patient_id, b.lesion_class) == (a.patient_id, a.lesion_class)
        assert b.spacing_mm == pytest.approx(a.spacing_mm)
        assert b.hu.dtype == np.float32 and b.mask.dtype == np.uint8
        np.testing.assert_array_equal(b.hu, np.rint(a.hu))  # whole HU on disk
        np.testing.assert_array_equal(b.mask, a.mask)


def test_layout_on_disk_is_the_documented_one(tmp_path):
    write_lesion_slices(tmp_path, _dataset())
    index = json.loads((tmp_path / "dataset.json").read_text())
    assert (index["format"], index["version"]) == ("liverlesion-lesion-slices", 1)
    assert index["classes"] == ["cyst", "hemangioma", "metastasis"]
    case = index["cases"][3]
    assert case["image"] == "images/P3-1.npy" and case["mask"] == "masks/P3-1.npy"
    assert np.load(tmp_path / case["image"]).dtype == np.int16
    assert np.load(tmp_path / case["mask"]).shape == (30, 18)


def test_rewrite_replaces_whole_dataset_and_failure_keeps_the_old(tmp_path):
    root = tmp_path / "ds"
    write_lesion_slices(root, _dataset())
    write_lesion_slices(root, _dataset()[2:])
    assert sorted(p.name for p in (root / "images").iterdir()) == ["P2-1.npy", "P3-1.npy"]
    bad = replace(_dataset()[0], case_id="late", lesion_class="adenoma")
    with pytest.raises(InputError, match="adenoma"):
        write_lesion_slices(root, [*_dataset(), bad])
    assert [s.case_id for s in read_lesion_slices(root)] == ["P2-1", "P3-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp folder left behind


def test_refuses_to_overwrite_a_folder_that_is_not_a_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(InputError, match="refusing to overwrite"):
        write_lesion_slices(tmp_path, _dataset())
    assert (tmp_path / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize("change, message", [
    ({"lesion_class": "adenoma"}, "class 'adenoma' is unknown"),
    ({"case_id": "../escape"}, "case_id must be"),
    ({"patient_id": ""}, "patient_id"),
    ({"spacing_mm": (0.7, -1.0)}, "pixel spacing"),
    ({"hu": np.zeros((2, 20, 24), np.float32)}, "hu must be a 2D array"),
    ({"hu": np.full((20, 24), np.nan, np.float32)}, "NaN"),
    ({"hu": np.full((20, 24), 1e6, np.float32)}, "int16"),
    ({"mask": np.zeros((20, 23), np.uint8)}, "mask must be an integer array of the image's shape"),
    ({"mask": np.zeros((20, 24), np.float32)}, "mask must be an integer array"),
    ({"mask": np.full((20, 24), 5, np.uint8)}, r"label values \[5\]"),
    ({"mask": np.ones((20, 24), np.uint8)}, "no pixel of label 2"),
])
def test_writer_refuses_bad_slices(tmp_path, change, message):
    with pytest.raises(InputError, match=message):
        write_lesion_slices(tmp_path / "ds", [replace(_dataset()[0], **change)])
    assert not (tmp_path / "ds").exists()


def test_writer_refuses_duplicates_and_nothing(tmp_path):
    with pytest.raises(InputError, match="used twice"):
        write_lesion_slices(tmp_path / "ds", [_dataset()[0], _dataset()[0]])
    with pytest.raises(InputError, match="no slices"):
        write_lesion_slices(tmp_path / "ds", [])


def _edit_index(root, edit):
    index = json.loads((root / "dataset.json").read_text())
    edit(index)
    (root / "dataset.json").write_text(json.dumps(index))


@pytest.mark.parametrize("edit, message", [
    (lambda ix: ix.update(format="nnunet"), "format is 'nnunet'"),
    (lambda ix: ix.update(version=2), "version 2 is not supported"),
    (lambda ix: ix.update(labels=["background", "liver", "tumor"]), "labels"),
    (lambda ix: ix.update(classes=["cyst", "metastasis"]), "classes"),
    (lambda ix: ix.update(cases=[]), "non-empty list"),
    (lambda ix: ix["cases"][1].pop("mask"), "case 1: each case needs the keys"),
    (lambda ix: ix["cases"][1].update(id=ix["cases"][0]["id"]), "not a valid, unique slice id"),
    (lambda ix: ix["cases"][2].update({"class": "lipoma"}), "class 'lipoma' is unknown"),
    (lambda ix: ix["cases"][2].update(spacing_mm=[0.7]), "pixel spacing"),
    (lambda ix: ix["cases"][2].update(image="../../etc/passwd"), "points outside the dataset folder"),
    (lambda ix: ix["cases"][2].update(mask="masks/nothing.npy"), r"nothing\.npy does not exist"),
    (lambda ix: ix["cases"][2].update(mask=ix["cases"][3]["mask"]), r"P3-1\.npy: shape \(30, 18\) does not match"),
    (lambda ix: ix["cases"][2].update({"class": "cyst"}), r"P2-1\.npy: class is 'cyst' but the mask has no pixel"),
])
def test_reader_names_every_inconsistency(tmp_path, edit, message):
    write_lesion_slices(tmp_path, _dataset())
    _edit_index(tmp_path, edit)
    with pytest.raises(DataFormatError, match=message):
        read_lesion_slices(tmp_path)


def test_reader_refuses_bad_files(tmp_path):
    with pytest.raises(DataFormatError, match=r"dataset\.json does not exist"):
        read_lesion_slices(tmp_path)
    write_lesion_slices(tmp_path, _dataset())
    mask_path = tmp_path / "masks" / "P2-1.npy"
    np.save(mask_path, np.full((20, 24), 9, np.uint8))
    with pytest.raises(DataFormatError, match=r"P2-1\.npy: mask has label values \[9\]"):
        read_lesion_slices(tmp_path)
    np.save(mask_path, np.zeros((20, 24), np.float32))
    with pytest.raises(DataFormatError, match=r"P2-1\.npy holds float32; expected uint8"):
        read_lesion_slices(tmp_path)
    np.save(mask_path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataFormatError, match=r"P2-1\.npy cannot be read"):  # never unpickled
        read_lesion_slices(tmp_path)
    mask_path.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataFormatError, match=r"P2-1\.npy cannot be read"):
        read_lesion_slices(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="cannot be read as JSON"):
        read_lesion_slices(tmp_path)
