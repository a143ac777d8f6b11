"""Phantoms: written in both formats, deterministic, and with the anatomy and lesion statistics promised."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from liverlesion.cli import main
from liverlesion.data import (
    find_lits_cases,
    generate_phantoms,
    read_lesion_slices,
    read_lits_case,
    select_slices,
)
from liverlesion.errors import InputError
from liverlesion.labels import FIRST_LESION_LABEL, LESION_CLASSES, LIVER

SMALL = {"lits_volumes": 2, "lits_slices": 16, "lesion_slices": 15, "size": 128}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("phantoms")
    return out, generate_phantoms(out, seed=3, **SMALL)


@pytest.fixture(scope="module")
def lesion_slices(phantoms):
    return read_lesion_slices(phantoms[0] / "lesion_slices")


@pytest.fixture(scope="module")
def volumes(phantoms):
    return [read_lits_case(case) for case in find_lits_cases(phantoms[0] / "lits")]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "phantoms.json"}


def test_same_seed_same_bytes_other_seed_differs(phantoms, tmp_path):
    out, _ = phantoms
    generate_phantoms(tmp_path / "again", seed=3, **SMALL)
    generate_phantoms(tmp_path / "other", seed=4, **SMALL)
    first, again, other = _files(out), _files(tmp_path / "again"), _files(tmp_path / "other")
    assert first == again
    volumes = [name for name in first if name.startswith("lits/")]
    assert volumes and all(first[name] != other[name] for name in volumes)
    images = [name for name in first if name.startswith("lesion_slices/images/")]
    assert {first[name] for name in images}.isdisjoint(other[name] for name in other if "images/" in name)


def test_summary_describes_what_was_written(phantoms, volumes, lesion_slices):
    out, summary = phantoms
    assert json.loads((out / "phantoms.json").read_text()) == summary
    assert "NOT clinical" in summary["note"]
    assert [c["liver_slices"] for c in summary["lits"]["cases"]] == \
        [len(select_slices(v, require="liver")) for v in volumes]
    assert summary["lesion_slices"]["slices"] == len(lesion_slices)


def test_lits_volumes_geometry_and_header(volumes):
    assert [v.case.case_id for v in volumes] == [0, 1]
    for volume in volumes:
        assert volume.hu.shape == (16, 128, 128)
        row, col = volume.spacing_mm
        assert row == col and 0.6 <= row * 128 / 512 <= 0.95  # 0.6-0.95 mm at 512 px
        assert 1.0 <= volume.slice_thickness_mm <= 5.0
        header = __import__("nibabel").load(str(volume.case.volume_path)).header
        assert header.get_xyzt_units()[0] == "mm" and int(header["sform_code"]) > 0


def test_lits_labels_liver_in_most_slices_tumours_inside(volumes):
    tumour_voxels = 0
    for volume in volumes:
        labels = volume.labels
        assert set(np.unique(labels)) <= {0, 1, 2}
        liver_slices = select_slices(volume, require="liver")
        assert 0.5 * len(labels) <= len(liver_slices) < len(labels)  # most but not all
        fractions = (labels >= 1).reshape(len(labels), -1).mean(axis=1)
        assert 0.01 < fractions.max() < 0.4
        tumour = labels == 2
        tumour_voxels += int(tumour.sum())
        ring = ndimage.binary_dilation(tumour, structure=ndimage.generate_binary_structure(3, 1)) & ~tumour
        if ring.any():
            assert (labels[ring] >= 1).mean() > 0.9  # tumours are surrounded by liver
    assert tumour_voxels > 0


def test_lits_anatomy_in_the_documented_orientation(volumes):
    for volume in volumes:
        k = int(np.argmax((volume.labels >= 1).sum(axis=(1, 2))))
        hu, liver = volume.hu[k], volume.labels[k] >= 1
        cols = np.nonzero(liver)[1]
        assert cols.mean() < 64  # the liver is on the patient's right: image left
        bone_rows, bone_cols = np.nonzero(hu > 350)
        assert np.median(bone_rows) > 64 and abs(np.median(bone_cols) - 64) < 20  # spine: posterior, midline
        assert hu[0, 0] < -900  # air outside the body
        assert 100 < np.median(hu[ndimage.binary_erosion(liver, iterations=2)]) < 140


def test_noise_is_ct_like(volumes):
    air = volumes[0].hu[:, :8, :]  # the rows above the patient are air
    assert 8.0 < air.std() < 22.0
    assert -1010 < air.mean() < -990


def test_lesion_slices_balanced_grouped_by_patient(lesion_slices):
    classes = [s.lesion_class for s in lesion_slices]
    assert sorted(set(classes)) == sorted(LESION_CLASSES)
    assert max(map(classes.count, LESION_CLASSES)) - min(map(classes.count, LESION_CLASSES)) <= 1
    patients: dict[str, set[str]] = {}
    for s in lesion_slices:
        patients.setdefault(s.patient_id, set()).add(s.lesion_class)
    assert len(patients) < len(lesion_slices)  # several slices per patient
    assert all(len(kinds) == 1 for kinds in patients.values())


def test_lesion_slice_labels_one_type_per_slice_inside_liver(lesion_slices):
    for s in lesion_slices:
        label = FIRST_LESION_LABEL + LESION_CLASSES.index(s.lesion_class)
        lesion = s.mask >= FIRST_LESION_LABEL
        assert set(np.unique(s.mask[lesion])) == {label}
        assert 0.02 < (s.mask >= LIVER).mean() < 0.4
        ring = ndimage.binary_dilation(lesion) & ~lesion
        assert (s.mask[ring] == LIVER).mean() > 0.9  # lesions lie inside the liver


def test_lesion_hu_follows_radiology(lesion_slices):
    means: dict[str, list[float]] = {kind: [] for kind in (*LESION_CLASSES, "liver")}
    rim_minus_centre = []
    for s in lesion_slices:
        lesion = s.mask >= FIRST_LESION_LABEL
        means[s.lesion_class].append(float(s.hu[lesion].mean()))
        means["liver"].append(float(np.median(s.hu[ndimage.binary_erosion(s.mask == LIVER, iterations=2)])))
        if s.lesion_class == "hemangioma":
            parts, count = ndimage.label(lesion)
            for part in range(1, count + 1):
                depth = ndimage.distance_transform_edt(parts == part)
                if depth.max() >= 3:
                    rim = (parts == part) & (depth <= depth.max() * 0.35)
                    rim_minus_centre.append(s.hu[rim].mean() - s.hu[depth >= depth.max() * 0.6].mean())
    average = {kind: np.mean(values) for kind, values in means.items()}
    assert average["cyst"] < 30 < average["metastasis"] < average["liver"]
    assert average["metastasis"] < average["hemangioma"]
    assert rim_minus_centre and np.mean(rim_minus_centre) > 5


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="size"):
        generate_phantoms(tmp_path, size=16)
    with pytest.raises(InputError, match="lits_volumes"):
        generate_phantoms(tmp_path, lits_volumes=-1)


def test_never_replaces_data_it_did_not_write(tmp_path):
    (tmp_path / "lits").mkdir()
    (tmp_path / "lits" / "volume-0.nii.gz").write_bytes(b"someone's real scan")
    with pytest.raises(InputError, match="refusing to replace"):
        generate_phantoms(tmp_path, **SMALL)
    assert (tmp_path / "lits" / "volume-0.nii.gz").read_bytes() == b"someone's real scan"


def test_cli_writes_phantoms(tmp_path, capsys):
    code = main(["phantom", "--out", str(tmp_path), "--seed", "1", "--lits-volumes", "1", "--lits-slices", "4",
                 "--lesion-slices", "3", "--size", "64"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "3 slices (1 cyst, 1 hemangioma, 1 metastasis)" in printed and "NOT clinical" in printed
    assert len(find_lits_cases(tmp_path / "lits")) == 1 and len(read_lesion_slices(tmp_path / "lesion_slices")) == 3
