"""Issue 11, the model package: bound to its graphs, pinnable, bounded archives, no symlinks out, strict manifest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from liverlesion import LesionAnalyzer
from liverlesion.cli import main
from liverlesion.errors import ChecksumError, InputError, PackageError
from liverlesion.grid import ModelGrid
from liverlesion.package import BINDING_KEY, PackageLimits, load_package, write_manifest
from liverlesion.package.binding import read_safetensors_metadata
from liverlesion.package.protobuf import ProtobufError, parse_onnx_header, read_onnx_header
from liverlesion.package.store import file_record, read_manifest, write_archive
from sdk_fixtures import THRESHOLD_GRID, make_threshold_package, threshold_binding, threshold_graph


# -- fixtures -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A real Y-Net package (FP32, FP16, bare, both INT8 forms, weights), exported and quantized here (~5 s)."""
    from liverlesion.data.phantom import generate_phantoms
    from liverlesion.export import export_package, quantize_package
    from liverlesion.training import TrainConfig, train

    root = tmp_path_factory.mktemp("trust")
    generate_phantoms(root / "phantoms", seed=5, lits_volumes=1, lits_slices=6, lesion_slices=16, size=64)
    train(TrainConfig(data=root / "phantoms", out=root / "ckpt", arch="ynet", epochs=2, lr=1e-2, base_width=8,
                      depth=3, threads=1, batch_size=8, grid_size=32, grid_spacing=8.0))
    export_package(root / "ckpt", root / "package", eval_data=root / "phantoms", bare=True)
    quantize_package(root / "package", root / "phantoms", root / "phantoms", slices=8, allow_miss=True,
                     max_fix_rounds=0)
    return root / "package"


@pytest.fixture
def real(exported, tmp_path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "package"))


@pytest.fixture
def threshold(tmp_path) -> Path:
    return make_threshold_package(tmp_path / "threshold")


def edit(root: Path, change) -> None:
    """Apply ``change`` to the parsed manifest and write it back (no validation: the loader must refuse)."""
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def rerecord(root: Path, relative: str) -> None:
    """Update a file's size and sha256 in the manifest after it was rewritten (as a tamperer would)."""
    def change(data):
        for f in data["files"]:
            if f["path"] == relative:
                new = file_record(root, relative, f["role"]).to_dict()
                f.update(sha256=new["sha256"], size=new["size"])
    edit(root, change)


def swap(items, a, b):
    i, j = items.index(a), items.index(b)
    items[i], items[j] = items[j], items[i]


# -- 1. the manifest is bound to the graphs ---------------------------------------------------------------------
MANIFEST_EDITS = [
    ("labels", lambda m: swap(m["labels"], "liver", "lesion"), "'labels'"),  # Y-Net: background, liver, lesion
    ("lesion classes", lambda m: swap(m["lesion_classes"], "cyst", "metastasis"), "'lesion_classes'"),
    ("grid spacing", lambda m: m["input"]["grid"].update(spacing_mm=[6.0, 6.0]), "'input.grid'"),
    ("grid size", lambda m: m["input"]["grid"].update(size=[40, 40]), "'input.grid'"),
    ("HU windows", lambda m: m["preprocessing"]["windows"][0].__setitem__(1, 300.0), "'preprocessing'"),
    ("input name", lambda m: m["input"].update(name="ct"), "'input.name'"),
]


@pytest.mark.slow
@pytest.mark.parametrize("what, change, field", MANIFEST_EDITS, ids=[e[0] for e in MANIFEST_EDITS])
def test_a_manifest_edit_that_would_change_results_is_refused_naming_the_field(real, what, change, field):
    load_package(real).close()  # as exported: every file agrees with the manifest
    edit(real, change)
    with pytest.raises(PackageError, match=field):
        load_package(real)


def test_the_threshold_package_is_bound_too_and_inspect_refuses_a_swap(threshold, capsys):
    assert main(["inspect", str(threshold)]) == 0
    capsys.readouterr()
    edit(threshold, lambda m: swap(m["labels"], "cyst", "metastasis"))
    assert main(["inspect", str(threshold)]) == 2
    err = capsys.readouterr().err
    assert "'labels'" in err and "model_fp32.onnx" in err


def test_a_graph_without_the_binding_is_refused_with_a_re_export_hint(threshold):
    import onnx

    path = threshold / "model_fp32.onnx"
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(path))
    rerecord(threshold, "model_fp32.onnx")
    with pytest.raises(PackageError, match=rf"records no '{BINDING_KEY}'.*re-export"):
        load_package(threshold)


def test_a_graph_whose_input_shape_is_not_the_manifest_grid_is_refused(threshold):
    # metadata claiming the manifest's grid cannot hide a graph built for another one
    other = ModelGrid((96, 96), THRESHOLD_GRID.spacing_mm)
    threshold_graph(threshold / "model_fp32.onnx", grid=other, binding=threshold_binding(THRESHOLD_GRID))
    rerecord(threshold, "model_fp32.onnx")
    with pytest.raises(PackageError, match=r"'input.grid'.*\[N, 96, 96\]|'input.grid'.*96, 96"):
        load_package(threshold)


@pytest.mark.parametrize("content", [b"", b"\x00" * 40, b"\xff" * 40, b"\x0a\xff\xff\xff\xff\x0f", b"not onnx"],
                         ids=["empty", "zeros", "ff", "length past end", "text"])
def test_a_file_that_is_not_onnx_is_a_package_error(threshold, content):
    (threshold / "model_fp32.onnx").write_bytes(content)
    rerecord(threshold, "model_fp32.onnx")
    with pytest.raises(PackageError, match="not a readable ONNX model"):
        load_package(threshold)


@pytest.mark.slow
def test_the_runtime_reader_agrees_with_onnx_on_every_exported_graph(exported):
    import onnx

    def dims(value):
        shape = value.type.tensor_type.shape.dim
        return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
                     for d in shape)

    files = sorted(exported.glob("*.onnx"))
    assert len(files) == 5  # fp32, fp16, bare, int8 s8s8 and u8s8
    for path in files:
        model = onnx.load(str(path))
        header = read_onnx_header(path)
        metadata: dict[str, list[str]] = {}
        for entry in model.metadata_props:
            metadata.setdefault(entry.key, []).append(entry.value)
        assert header.metadata == metadata and BINDING_KEY in metadata, path.name
        for ours, theirs in ((header.inputs, model.graph.input), (header.outputs, model.graph.output)):
            assert [(t.name, t.elem_type, t.dims) for t in ours] == \
                [(v.name, v.type.tensor_type.elem_type, dims(v)) for v in theirs], path.name
        # protobuf merges a repeated message field: the reader must see what onnx sees
        twice = model.SerializeToString() + onnx.ModelProto(graph=model.graph).SerializeToString()
        merged = onnx.ModelProto.FromString(twice)
        assert [t.name for t in parse_onnx_header(twice).inputs] == [v.name for v in merged.graph.input]


def test_every_truncation_of_a_model_is_refused_as_protobuf_or_read_as_a_shorter_message(tmp_path):
    data = threshold_graph(tmp_path / "m.onnx").read_bytes()
    assert BINDING_KEY in parse_onnx_header(data).metadata
    for cut in range(len(data) - 1):
        try:
            parse_onnx_header(data[:cut])
        except ProtobufError:
            pass  # never another exception (IndexError, UnicodeDecodeError...)


@pytest.mark.slow
def test_the_weights_are_bound_and_read_without_safetensors_agreeing_with_it(real):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    path = real / "model.safetensors"
    with safe_open(str(path), framework="np") as handle:
        theirs = handle.metadata()
    assert read_safetensors_metadata(path) == theirs and BINDING_KEY in theirs
    tensors = load_file(str(path))
    bound = json.loads(theirs[BINDING_KEY])
    swap(bound["labels"], "liver", "lesion")  # weights claiming other labels than every ONNX file
    save_file(tensors, str(path), metadata={**theirs, BINDING_KEY: json.dumps(bound)})
    rerecord(real, "model.safetensors")
    with pytest.raises(PackageError, match=r"'labels'.*model\.safetensors"):
        load_package(real)
    save_file(tensors, str(path), metadata={k: v for k, v in theirs.items() if k != BINDING_KEY})
    rerecord(real, "model.safetensors")
    with pytest.raises(PackageError, match=r"model\.safetensors records no"):
        load_package(real)


@pytest.mark.parametrize("header", [b"\x05\x00", (10**9).to_bytes(8, "little") + b"{}",
                                    (2).to_bytes(8, "little") + b"[]", (4).to_bytes(8, "little") + b"{\"a\"",
                                    (28).to_bytes(8, "little") + b'{"__metadata__": {"a": 1}}  '],
                         ids=["short", "huge length", "not an object", "bad json", "metadata not strings"])
def test_a_damaged_safetensors_header_is_a_package_error(tmp_path, header):
    (tmp_path / "w.safetensors").write_bytes(header)
    with pytest.raises(PackageError):
        read_safetensors_metadata(tmp_path / "w.safetensors")


@pytest.mark.slow
def test_load_package_needs_neither_onnx_nor_safetensors_and_still_refuses_a_swap(real, threshold):
    """As on an OpenVINO-only install: importing onnx, safetensors or torch fails."""
    edit(threshold, lambda m: swap(m["lesion_classes"], "cyst", "hemangioma"))
    code = ("import sys\nfor m in ('onnx', 'safetensors', 'torch'):\n    sys.modules[m] = None\n"
            "from liverlesion.package import load_package\n"
            "load_package(sys.argv[1]).close()\n"
            "try:\n    load_package(sys.argv[2])\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    run = subprocess.run([sys.executable, "-c", code, str(real), str(threshold)], capture_output=True, text=True,
                         check=False, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("PackageError") and "'lesion_classes'" in run.stdout


# -- 2. one digest of the whole package -------------------------------------------------------------------------
def test_inspect_prints_the_digest_and_a_pinned_load_accepts_only_it(threshold, capsys):
    assert main(["inspect", str(threshold)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.split()[:1] == ["digest"])
    digest = line.split()[1]
    assert len(digest) == 64 and digest == load_package(threshold).digest
    load_package(threshold, expect_digest=digest).close()
    load_package(threshold, expect_digest=f"  sha256:{digest.upper()} ").close()
    other = "0" * 64
    with pytest.raises(ChecksumError) as caught:
        load_package(threshold, expect_digest=other)
    assert digest in str(caught.value) and other in str(caught.value)
    with LesionAnalyzer.load(threshold, "onnxruntime", warmup=False, expect_digest=digest) as analyzer:
        assert analyzer.package.digest == digest
    with pytest.raises(ChecksumError, match=other):
        LesionAnalyzer.load(threshold, "onnxruntime", warmup=False, expect_digest=other)
    with load_package(threshold) as opened:  # an already opened (verified) package is checked too
        with pytest.raises(ChecksumError, match=other):
            LesionAnalyzer.load(opened, "onnxruntime", warmup=False, expect_digest=other)


def test_predict_expect_digest(threshold, tmp_path, capsys):
    array = tmp_path / "slice.npy"
    hu = np.full((64, 64), 100, np.int16)
    hu[:8] = -1000  # some air, as in any CT slice
    np.save(array, hu, allow_pickle=False)
    digest = load_package(threshold).digest
    common = ["predict", str(threshold), str(array), "--backend", "onnxruntime", "--no-warmup"]
    assert main([*common, "--expect-digest", digest]) == 0
    capsys.readouterr()
    wrong = "ab" * 32
    assert main([*common, "--expect-digest", wrong]) == 2
    err = capsys.readouterr().err
    assert digest in err and wrong in err


def test_the_digest_ignores_formatting_but_not_content(threshold):
    digest = load_package(threshold).digest
    data = json.loads((threshold / "manifest.json").read_text())
    reordered = dict(reversed(list(data.items())))
    (threshold / "manifest.json").write_text(json.dumps(reordered, indent=7))
    assert load_package(threshold).digest == digest
    edit(threshold, lambda m: m["model"].update(version="1"))  # any field, even one no runtime reads
    assert load_package(threshold).digest != digest
    edit(threshold, lambda m: m["model"].update(version="0"))
    assert load_package(threshold).digest == digest
    threshold_graph(threshold / "model_fp32.onnx", width=49.0)  # another graph (and its new sha256)
    rerecord(threshold, "model_fp32.onnx")
    assert load_package(threshold).digest != digest
    archive = write_archive(threshold, threshold.parent / "p.zip")
    with load_package(archive) as unpacked, load_package(threshold) as folder:
        assert unpacked.digest == folder.digest


def _add_engine(root: Path, built_from: str) -> None:
    (root / "engines").mkdir(exist_ok=True)
    (root / "engines" / "e.engine").write_bytes(b"plan" * 64)
    record = file_record(root, "engines/e.engine", "engine", "fp16")

    def change(m):
        m["files"].append(record.to_dict())
        m["engines"] = [{"file": "engines/e.engine", "precision": "fp16", "plan": {"onnx_sha256": built_from}}]
    edit(root, change)


def test_an_engine_built_on_the_device_keeps_the_pin_if_built_from_the_pinned_onnx(threshold, tmp_path):
    digest = load_package(threshold).digest
    onnx_sha = read_manifest(threshold).find(role="onnx").sha256
    other = Path(shutil.copytree(threshold, tmp_path / "other"))
    _add_engine(threshold, onnx_sha)
    assert load_package(threshold).digest == digest
    load_package(threshold, expect_digest=digest).close()
    _add_engine(other, "f" * 64)
    with pytest.raises(PackageError, match="not built from an ONNX file of the pinned package"):
        load_package(other, expect_digest=digest)


@pytest.mark.parametrize("given", ["xyz", "0" * 63, "g" * 64, 123, b"0" * 64, ["0" * 64]])
def test_a_malformed_expected_digest_is_an_input_error(threshold, given):
    with pytest.raises(InputError, match="expect_digest"):
        load_package(threshold, expect_digest=given)
    with pytest.raises(InputError, match="expect_digest"):
        LesionAnalyzer.load(threshold, expect_digest=given)


def test_a_pin_needs_verification(threshold):
    digest = load_package(threshold).digest
    with pytest.raises(PackageError, match="verify"):
        load_package(threshold, verify=False, expect_digest=digest)
    with load_package(threshold, verify=False) as unverified, pytest.raises(InputError, match="verify"):
        LesionAnalyzer.load(unverified, expect_digest=digest)


# -- 3. zip archives: checked from the central directory before anything is written -------------------------------
@pytest.fixture
def temp_dir(tmp_path, monkeypatch) -> Path:
    """The temporary folder archives unpack into, to see what a failure leaves behind."""
    import tempfile

    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def opened_entries(monkeypatch) -> list[str]:
    """Names of the archive entries whose data was read."""
    names: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, mode="r", *args, **kwargs):
        if mode == "r":
            names.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return real_open(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    return names


def pack(archive: Path, entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(archive, "w", compression=method) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return archive


def package_entries(root: Path) -> list[tuple[str, bytes]]:
    manifest = read_manifest(root)
    return [("manifest.json", (root / "manifest.json").read_bytes())] + [
        (f.path, (root / f.path).read_bytes()) for f in manifest.files]


def test_an_entry_larger_than_the_manifest_says_is_refused_before_it_is_unpacked(threshold, tmp_path, temp_dir,
                                                                                 opened_entries):
    entries = [(n, d) if n != "model_fp32.onnx" else (n, b"\0" * (32 << 20)) for n, d in package_entries(threshold)]
    archive = pack(tmp_path / "bomb.zip", entries)
    assert archive.stat().st_size < 1 << 20  # 32 MiB of zeros, deflated
    with pytest.raises(ChecksumError, match=r"entry 'model_fp32\.onnx' is 33554432 bytes, the manifest says"):
        load_package(archive)
    assert opened_entries == ["manifest.json"] and not any(temp_dir.iterdir())


def test_the_total_and_the_manifest_entry_are_bounded(threshold, tmp_path, temp_dir, opened_entries):
    archive = pack(tmp_path / "p.zip", package_entries(threshold))
    load_package(archive).close()
    opened_entries.clear()
    bound = archive.stat().st_size  # the archive itself passes, what it unpacks to does not
    with pytest.raises(PackageError, match=f"unpacks to .* bytes; at most {bound} accepted"):
        load_package(archive, limits=PackageLimits(unpacked_bytes=bound))
    with pytest.raises(PackageError, match=f"archives of at most {bound - 1} bytes"):
        load_package(archive, limits=PackageLimits(unpacked_bytes=bound - 1))
    with pytest.raises(PackageError, match="manifest.json is .* bytes; a manifest of at most 100 bytes"):
        load_package(archive, limits=PackageLimits(manifest_bytes=100))
    assert opened_entries == ["manifest.json"] and not any(temp_dir.iterdir())
    big = [("manifest.json", b" " * (17 << 20) + b"{}")]  # above the 16 MiB default
    with pytest.raises(PackageError, match="a manifest of at most 16777216 bytes"):
        load_package(pack(tmp_path / "big.zip", big))
    assert opened_entries == ["manifest.json"]  # only the first, readable archive's


@pytest.mark.parametrize("twice", ["manifest.json", "model_fp32.onnx"])
def test_a_name_twice_in_the_archive_is_refused(threshold, tmp_path, temp_dir, twice):
    entries = package_entries(threshold)
    entries.append(next(e for e in entries if e[0] == twice))
    with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile itself only warns
        archive = pack(tmp_path / "dup.zip", entries)
    with pytest.raises(PackageError, match=f"'{twice}' appears twice"):
        load_package(archive)
    assert not any(temp_dir.iterdir())


def _patch_central(archive: Path, name: str, *, flags: int | None = None, method: int | None = None) -> None:
    """Set an entry's flag bits or compression method in both its local header and the central directory."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(name)
    local = info.header_offset
    central = data.index(b"PK\x01\x02")
    while data[central + 46:central + 46 + len(name)] != name.encode():
        central = data.index(b"PK\x01\x02", central + 4)
    if flags is not None:
        data[local + 6:local + 8] = flags.to_bytes(2, "little")
        data[central + 8:central + 10] = flags.to_bytes(2, "little")
    if method is not None:
        data[local + 8:local + 10] = method.to_bytes(2, "little")
        data[central + 10:central + 12] = method.to_bytes(2, "little")
    archive.write_bytes(bytes(data))


def _corrupt_data(archive: Path, name: str) -> None:
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(name)
    start = info.header_offset + 30 + len(name.encode()) + int.from_bytes(
        data[info.header_offset + 28:info.header_offset + 30], "little")
    middle = start + info.compress_size // 2
    data[middle:middle + 16] = bytes(b ^ 0x5A for b in data[middle:middle + 16])
    archive.write_bytes(bytes(data))


BROKEN = [
    ("deflate data", zipfile.ZIP_DEFLATED, lambda a: _corrupt_data(a, "model_fp32.onnx"), "cannot be unpacked"),
    ("stored data (CRC)", zipfile.ZIP_STORED, lambda a: _corrupt_data(a, "model_fp32.onnx"), "Bad CRC"),
    ("manifest data", zipfile.ZIP_DEFLATED, lambda a: _corrupt_data(a, "manifest.json"),
     "'manifest.json' cannot be unpacked"),
    ("encrypted", zipfile.ZIP_DEFLATED, lambda a: _patch_central(a, "model_fp32.onnx", flags=0x1), "encrypted"),
    ("method 99", zipfile.ZIP_DEFLATED, lambda a: _patch_central(a, "model_fp32.onnx", method=99),
     "compression method 99"),
    ("encrypted manifest", zipfile.ZIP_DEFLATED, lambda a: _patch_central(a, "manifest.json", flags=0x1),
     "'manifest.json' is encrypted"),
]


@pytest.mark.parametrize("what, method, damage, message", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_damaged_or_unsupported_entry_is_a_package_error_naming_it(threshold, tmp_path, temp_dir, what, method,
                                                                     damage, message):
    archive = pack(tmp_path / "p.zip", package_entries(threshold), method)
    damage(archive)
    with pytest.raises(PackageError, match=message) as caught:
        load_package(archive)
    assert ("manifest.json" if "manifest" in what else "model_fp32.onnx") in str(caught.value)
    assert not any(temp_dir.iterdir())


def test_an_archive_lacking_a_listed_file_is_refused_before_unpacking(threshold, tmp_path, temp_dir, opened_entries):
    entries = [e for e in package_entries(threshold) if e[0] != "model_fp32.onnx"]
    with pytest.raises(PackageError, match="lists 'model_fp32.onnx', which the archive lacks"):
        load_package(pack(tmp_path / "p.zip", entries))
    assert opened_entries == ["manifest.json"] and not any(temp_dir.iterdir())


# -- 4. symlinks out of the package --------------------------------------------------------------------------------
def _link_out(root: Path, relative: str, outside: Path) -> None:
    target = outside / Path(relative).name
    shutil.move(root / relative, target)  # the same bytes: only the link's direction is wrong
    (root / relative).symlink_to(target)


@pytest.mark.parametrize("relative", ["model_fp32.onnx", "manifest.json", "calibration"])
def test_a_symlink_leading_outside_the_package_is_refused(threshold, tmp_path, relative):
    (threshold / "calibration").mkdir()
    np.save(threshold / "calibration" / "slices.npy", np.zeros((2, 1, 8, 8), np.float32))
    edit(threshold, lambda m: m["files"].append(file_record(threshold, "calibration/slices.npy",
                                                            "calibration").to_dict()))
    load_package(threshold).close()
    outside = tmp_path / "outside"
    outside.mkdir()
    _link_out(threshold, relative, outside)
    with pytest.raises(PackageError, match="outside the package"):
        load_package(threshold)


def test_a_package_reached_through_a_symlink_and_links_inside_it_are_fine(threshold, tmp_path):
    (threshold / "models").mkdir()
    shutil.move(threshold / "model_fp32.onnx", threshold / "models" / "fp32.onnx")
    (threshold / "model_fp32.onnx").symlink_to(Path("models") / "fp32.onnx")
    (tmp_path / "current").symlink_to(threshold)
    load_package(tmp_path / "current").close()


# -- 5. manifest validation ----------------------------------------------------------------------------------------
def _text_edit(root: Path, old: str, new: str) -> None:
    path = root / "manifest.json"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


DEEP = "[" * 100_000 + "]" * 100_000
TEXT_EDITS = [
    ("nested 100,000 deep", '"engines": []', f'"engines": [], "deep": {DEEP}', "nested too deeply"),
    ("nested 100 deep", '"engines": []', '"engines": [], "deep": ' + "[" * 100 + "]" * 100, "nested 10"),
    ("5,000-digit number", '"version": "0"', '"version": "0", "n": ' + "7" * 5000, "5000 digits"),
    ("NaN", '"engines": []', '"engines": [], "x": NaN', "NaN is not a JSON number"),
    ("1e999", '"engines": []', '"engines": [], "x": 1e999', "out of range"),
    ("duplicate key", '"engines": []', '"engines": [], "labels": []', "'labels' appears twice"),
]


@pytest.mark.parametrize("what, old, new, message", TEXT_EDITS, ids=[e[0] for e in TEXT_EDITS])
def test_json_that_python_would_choke_on_or_read_ambiguously_is_refused(threshold, what, old, new, message):
    path = threshold / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text())))  # one line, so the edits below find their text
    _text_edit(threshold, old, new)
    with pytest.raises(PackageError, match=message):
        load_package(threshold)


LONG = "a" * 5000 + ".onnx"
FIELD_EDITS = [
    ("files[0] a string", lambda m: m["files"].insert(0, "model_fp32.onnx"), r"'files\[0\]' must be an object"),
    ("grid.size negative", lambda m: m["input"]["grid"].update(size=[-5, 128]), r"grid\.size \[-5, 128\]"),
    ("grid.size huge", lambda m: m["input"]["grid"].update(size=[100000, 100000]), "integers from 8 to 2048"),
    ("grid.size float", lambda m: m["input"]["grid"].update(size=[128.5, 128]), "grid.size"),
    ("grid.size string", lambda m: m["input"]["grid"].update(size=["128", 128]), "grid.size"),
    ("grid.size bool", lambda m: m["input"]["grid"].update(size=[True, 128]), "grid.size"),
    ("grid.size one", lambda m: m["input"]["grid"].update(size=[128]), "grid.size"),
    ("grid spacing 0", lambda m: m["input"]["grid"].update(spacing_mm=[0, 2]), "grid.spacing_mm"),
    ("grid spacing 1e300", lambda m: m["input"]["grid"].update(spacing_mm=[1e300, 2]), "grid.spacing_mm"),
    ("grid spacing text", lambda m: m["input"]["grid"].update(spacing_mm="2"), "grid.spacing_mm"),
    ("grid not object", lambda m: m["input"].update(grid=[128, 128]), "'input.grid' must be an object"),
    ("long path", lambda m: m["files"][0].update(path=LONG), "5005 characters; at most 255"),
    ("negative size", lambda m: m["files"][0].update(size=-1), "size is -1"),
    ("accuracy a list", lambda m: m.update(accuracy=[1]), "'manifest.accuracy' must be an object"),
    ("accuracy record a string", lambda m: m.update(accuracy={"fp32": "good"}), "'accuracy.fp32' must be an object"),
    ("accuracy score a string", lambda m: m.update(accuracy={"fp16": {"lesion_dice": "high"}}),
     "'accuracy.fp16.lesion_dice' must be"),
    ("accuracy verdict a string", lambda m: m.update(accuracy={"fp16": {"meets_target": "yes"}}),
     "'accuracy.fp16.meets_target' must be true or false"),
    ("engines an object", lambda m: m.update(engines={"a": 1}), "'manifest.engines' must be a list"),
    ("engine a number", lambda m: m.update(engines=[1]), r"'engines\[0\]' must be an object"),
    ("schema_version true", lambda m: m.update(schema_version=True), "schema_version must be the integer 1"),
    ("schema_version 1.0", lambda m: m.update(schema_version=1.0), "schema_version must be the integer 1"),
    ("schema_version '1'", lambda m: m.update(schema_version="1"), "schema_version must be the integer 1"),
    ("label a number", lambda m: m["labels"].append(7), r"'labels\[5\]' must be a non-empty string"),
    ("label twice", lambda m: m["labels"].append("liver"), "'labels' lists a name twice"),
    ("classes not a list", lambda m: m.update(lesion_classes="cyst"), "'manifest.lesion_classes' must be a list"),
    ("outputs a list", lambda m: m.update(outputs=[]), "'manifest.outputs' must be an object"),
    ("versions a list", lambda m: m.update(versions=["1"]), "'manifest.versions' must be an object"),
    ("excluded blocks a string", lambda m: m.update(quantization={"extra_excluded_blocks": "x"}),
     "'quantization.extra_excluded_blocks' must be a list"),
    ("parameters a string", lambda m: m["model"].update(parameters="many"), "'model.parameters' must be an integer"),
    ("windows empty", lambda m: m["preprocessing"].update(windows=[]), "1 to 16"),
    ("window text", lambda m: m["preprocessing"].update(windows=[["a", "b"]]), r"windows\[0\]' must be a number"),
    ("max_batch 0", lambda m: m["input"].update(max_batch=0), "max_batch"),
]


@pytest.mark.parametrize("what, change, message", FIELD_EDITS, ids=[e[0] for e in FIELD_EDITS])
def test_a_malformed_manifest_field_is_a_package_error_naming_it(threshold, what, change, message):
    edit(threshold, change)
    with pytest.raises(PackageError, match=message):
        load_package(threshold)


@pytest.mark.parametrize("change", [lambda m: m.update(accuracy={"fp32": "good"}),
                                    lambda m: m.update(engines={"e": 1}),
                                    lambda m: m.update(accuracy={"fp32": {"lesion_dice": None}})],
                         ids=["accuracy", "engines", "accuracy null score"])
def test_inspect_and_predict_see_the_same_manifest(threshold, capsys, change):
    edit(threshold, change)
    try:
        load_package(threshold).close()
    except PackageError as exc:  # refused: by both, with the same message
        assert main(["inspect", str(threshold)]) == 2
        assert str(exc) in capsys.readouterr().err
        with pytest.raises(PackageError, match="manifest"):
            LesionAnalyzer.load(threshold, "onnxruntime", warmup=False)
    else:  # accepted (a null score is "not measured"): then inspect shows it
        assert main(["inspect", str(threshold)]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.split()[:1] == ["fp32"])
        assert line.split()[1] == "-"


def test_a_manifest_file_above_the_limit_is_refused_before_it_is_read(threshold, monkeypatch):
    path = threshold / "manifest.json"
    with open(path, "a") as handle:
        handle.write(" " * (17 << 20))
    read = []
    real_open = open

    def spy(file, mode="r", *args, **kwargs):
        if str(file).endswith("manifest.json") and "r" in mode:
            read.append(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    with pytest.raises(PackageError, match="a manifest of at most 16777216 bytes"):
        load_package(threshold)
    assert not read
    monkeypatch.undo()
    load_package(threshold, limits=PackageLimits(manifest_bytes=18 << 20)).close()  # the limit is configurable


@pytest.mark.parametrize("kind", ["directory", "not utf-8", "fifo"])
def test_a_manifest_that_is_not_a_json_file_is_refused(threshold, kind):
    path = threshold / "manifest.json"
    path.unlink()
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(b'{"schema": "\xff"}')
    with pytest.raises(PackageError, match="not a regular file|not UTF-8"):
        load_package(threshold)


def test_the_grid_bound_is_configurable(threshold):
    edit(threshold, lambda m: m["input"]["grid"].update(size=[4096, 4096]))
    with pytest.raises(PackageError, match="from 8 to 2048"):
        load_package(threshold)
    # a wider bound lets the manifest through, and then the graph (128 x 128) disagrees with it
    with pytest.raises(PackageError, match="'input.grid'"):
        load_package(threshold, limits=PackageLimits(grid_side=(8, 8192)))


# -- 6. LesionAnalyzer.load arguments -----------------------------------------------------------------------------
@pytest.mark.parametrize("given", [None, 3, 2.5, b"/tmp/pkg", ["pkg"], "", "   "])
def test_load_refuses_what_is_not_a_package_path(given):
    with pytest.raises(InputError, match="package"):
        LesionAnalyzer.load(given)  # type: ignore[arg-type]


def test_write_manifest_refuses_what_the_loader_would(threshold):
    data = read_manifest(threshold).to_dict()
    data["input"]["grid"]["size"] = [0, 0]
    with pytest.raises(PackageError, match="grid.size"):
        write_manifest(threshold, data)
