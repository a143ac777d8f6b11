"""The model package loader: validation, checksums, archives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liverlesion.errors import ChecksumError, PackageError
from liverlesion.grid import ModelGrid
from liverlesion.labels import LESION_CLASSES, TARGET_LABELS
from liverlesion.package import SCHEMA_NAME, SCHEMA_VERSION, load_package, write_manifest
from liverlesion.package.store import file_record, write_archive
from liverlesion.preprocessing import Preprocessing
from sdk_fixtures import threshold_graph


def make_package(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    threshold_graph(root / "model_fp32.onnx", grid=ModelGrid((32, 32), (3.0, 3.0)))  # the manifest's binding
    (root / "calibration").mkdir()
    (root / "calibration" / "slices.npy").write_bytes(b"\x93NUMPY fake")
    files = [file_record(root, "model_fp32.onnx", "onnx", "fp32", opset=17, form="float"),
             file_record(root, "calibration/slices.npy", "calibration")]
    write_manifest(root, {
        "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION,
        "model": {"name": "test", "version": "0", "arch": "joint", "config": {}},
        "input": {"name": "hu", "units": "HU", "grid": ModelGrid((32, 32), (3.0, 3.0)).to_dict()},
        "preprocessing": Preprocessing().to_dict(),
        "labels": list(TARGET_LABELS), "lesion_classes": list(LESION_CLASSES),
        "files": [f.to_dict() for f in files],
    })
    return root


def test_valid_package_loads_with_its_spec(tmp_path):
    package = load_package(make_package(tmp_path / "pkg"))
    assert package.manifest.grid == ModelGrid((32, 32), (3.0, 3.0))
    assert package.manifest.find(role="onnx", precision="fp32").extra["opset"] == 17
    assert package.path(package.manifest.files[0]).is_file()


def test_changed_byte_is_refused(tmp_path):
    root = make_package(tmp_path / "pkg")
    data = bytearray((root / "model_fp32.onnx").read_bytes())
    data[5] ^= 1
    (root / "model_fp32.onnx").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="model_fp32.onnx"):
        load_package(root)


def test_truncated_file_is_refused(tmp_path):
    root = make_package(tmp_path / "pkg")
    (root / "model_fp32.onnx").write_bytes(b"short")
    with pytest.raises(ChecksumError, match="bytes"):
        load_package(root)


def test_missing_file_is_refused(tmp_path):
    root = make_package(tmp_path / "pkg")
    (root / "calibration" / "slices.npy").unlink()
    with pytest.raises(PackageError, match="missing"):
        load_package(root)


def edit_manifest(root: Path, change) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(schema_version=SCHEMA_VERSION + 1), "schema_version"),
    (lambda m: m.update(schema="something-else"), "not a model package"),
    (lambda m: m["files"][0].update(path="../escape.onnx"), "plain relative name"),
    (lambda m: m["files"][0].update(sha256="xyz"), "sha256"),
    (lambda m: m.pop("labels"), "labels"),
    (lambda m: m["input"].update(units="raw"), "units"),
    (lambda m: m.update(files=[m["files"][1]]), "no ONNX"),
])
def test_bad_manifest_is_refused(tmp_path, change, message):
    root = make_package(tmp_path / "pkg")
    edit_manifest(root, change)
    with pytest.raises(PackageError, match=message):
        load_package(root)


def test_not_a_package(tmp_path):
    with pytest.raises(PackageError, match="no manifest.json"):
        load_package(tmp_path)
    with pytest.raises(PackageError, match="does not exist"):
        load_package(tmp_path / "nowhere")
    (tmp_path / "junk.zip").write_bytes(b"PK not a zip")
    with pytest.raises(PackageError, match="archive"):
        load_package(tmp_path / "junk.zip")


def test_archive_round_trip_and_cleanup(tmp_path):
    root = make_package(tmp_path / "pkg")
    archive = write_archive(root, tmp_path / "pkg.zip")
    with load_package(archive) as package:
        extracted = package.root
        assert (extracted / "calibration" / "slices.npy").read_bytes() == (root / "calibration/slices.npy").read_bytes()
    assert not extracted.exists()


def test_archive_with_tampered_member_is_refused(tmp_path):
    import zipfile

    root = make_package(tmp_path / "pkg")
    (root / "model_fp32.onnx").write_bytes(b"x" * (root / "model_fp32.onnx").stat().st_size)
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
        for name in ("manifest.json", "model_fp32.onnx", "calibration/slices.npy"):
            zf.write(root / name, name)
    with pytest.raises(ChecksumError):
        load_package(tmp_path / "bad.zip")


def test_a_changed_engine_does_not_block_the_onnx_files_but_is_caught_on_use(tmp_path):
    root = make_package(tmp_path / "pkg")
    (root / "engines").mkdir()
    (root / "engines" / "e.engine").write_bytes(b"plan" * 100)
    data = json.loads((root / "manifest.json").read_text())
    data["files"].append(file_record(root, "engines/e.engine", "engine", "fp16").to_dict())
    (root / "manifest.json").write_text(json.dumps(data))
    (root / "engines" / "e.engine").write_bytes(b"PLAN" * 100)
    package = load_package(root)
    engine = package.manifest.find(role="engine")
    with pytest.raises(ChecksumError, match="e.engine"):
        package.verify([engine])
