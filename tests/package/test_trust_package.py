"""Issue 11, the model package: bound to its graphs, pinnable, bounded archives, no symlinks out, strict manifest."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from liverlesion import LesionAnalyzer
from liverlesion.cli import main
from liverlesion.errors import ChecksumError, InputError, PackageError
from liverlesion.grid import ModelGrid, check_spacing
from liverlesion.package import BINDING_KEY, PackageLimits, load_package, write_manifest
from liverlesion.package.binding import read_safetensors_metadata
from liverlesion.package.jsonsafe import json_depth, loads_bounded
from liverlesion.package.protobuf import ProtobufError, parse_onnx_header, read_onnx_header
from liverlesion.package.store import file_record, read_manifest, write_archive
from liverlesion.sdk.selection import Machine, select
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
    ("default spacing", lambda m: m["input"].update(default_spacing_mm=[0.7, 0.7]), "'input.default_spacing_mm'"),
]


@pytest.mark.slow
@pytest.mark.parametrize("what, change, field", MANIFEST_EDITS, ids=[e[0] for e in MANIFEST_EDITS])
def test_a_manifest_edit_that_would_change_results_is_refused_naming_the_field(real, what, change, field):
    load_package(real).close()  # as exported: every file agrees with the manifest
    edit(real, change)
    with pytest.raises(PackageError, match=field):
        load_package(real)


def _record(manifest: dict, path: str) -> dict:
    return next(f for f in manifest["files"] if f["path"] == path)


def _swap_fields(a: str, b: str, *keys: str):
    """A manifest edit swapping ``keys`` between the records of files ``a`` and ``b``."""
    def change(m):
        x, y = _record(m, a), _record(m, b)
        for key in keys:
            x[key], y[key] = y.get(key), x.get(key)
    return change


FP32, FP16, S8S8, U8S8 = "model_fp32.onnx", "model_fp16.onnx", "model_int8_qdq_s8s8.onnx", "model_int8_qdq_u8s8.onnx"
RECORD_SWAPS = [  # onnxruntime would report the first precision while it runs the other file
    ("fp32 and u8s8: precision and form", FP32, U8S8, ("precision", "form"), FP32),
    ("the two INT8 forms", S8S8, U8S8, ("form",), S8S8),
    ("the two INT8 accuracy records", S8S8, U8S8, ("accuracy",), S8S8),
    ("fp32 and fp16: precision", FP32, FP16, ("precision",), FP32),
    ("fp32 and u8s8: everything but the path", FP32, U8S8, ("precision", "form", "accuracy", "runtimes"), FP32),
]


@pytest.mark.slow
@pytest.mark.parametrize("what, a, b, keys, named", RECORD_SWAPS, ids=[e[0] for e in RECORD_SWAPS])
def test_swapped_file_records_are_refused_naming_the_file(real, what, a, b, keys, named):
    edit(real, _swap_fields(a, b, *keys))
    with pytest.raises(PackageError, match=rf"record of '{re.escape(named)}' says .* exported as .*swapped"):
        load_package(real)


@pytest.mark.slow
def test_swapped_files_behind_swapped_checksums_are_refused(real):
    """The files renamed into each other's place and the sha256 and size swapped to match: still refused."""
    (real / FP32).rename(real / "tmp.onnx")
    (real / U8S8).rename(real / FP32)
    (real / "tmp.onnx").rename(real / U8S8)
    edit(real, _swap_fields(FP32, U8S8, "sha256", "size"))
    with pytest.raises(PackageError, match="swapped"):
        load_package(real)


@pytest.mark.slow
def test_every_exported_file_records_its_own_identity(exported):
    """Each model file's binding names the record it belongs to: role, precision, form, format, accuracy."""
    manifest = read_manifest(exported)
    stamped = {}
    for record in manifest.files:
        if record.path.endswith(".onnx"):
            stamped[record.path] = json.loads(read_onnx_header(exported / record.path).metadata[BINDING_KEY][0])
        elif record.path.endswith(".safetensors"):
            stamped[record.path] = json.loads(read_safetensors_metadata(exported / record.path)[BINDING_KEY])
    assert set(stamped) == {FP32, FP16, S8S8, U8S8, "model_bare_fp32.onnx", "model.safetensors"}
    for path, binding in stamped.items():
        record = manifest.find(role=binding["file"]["role"], precision=binding["file"]["precision"],
                               **{k: v for k, v in binding["file"].items() if k not in ("role", "precision")
                                  and v is not None})
        assert record is not None and record.path == path, (path, binding["file"])
        assert binding["default_spacing_mm"] is None  # exported without one
    assert stamped[U8S8]["file"] == {"role": "onnx", "precision": "int8", "form": "qdq-u8s8", "format": None,
                                     "accuracy": "int8-u8s8"}


def test_the_default_spacing_is_bound(threshold):
    edit(threshold, lambda m: m["input"].update(default_spacing_mm=[0.7, 0.7]))  # arrays without spacing
    with pytest.raises(PackageError, match=r"'input.default_spacing_mm' is \[0.7, 0.7\] but model_fp32.onnx "
                                           "was exported with null"):
        load_package(threshold)
    threshold_graph(threshold / FP32, binding=threshold_binding(default_spacing_mm=(0.7, 0.7)))
    rerecord(threshold, FP32)
    with LesionAnalyzer.load(threshold, "onnxruntime", warmup=False) as analyzer:  # exported with it: fine
        assert analyzer.default_spacing == (0.7, 0.7)


def test_a_binding_of_the_previous_version_asks_for_a_re_export(threshold):
    old = {k: v for k, v in threshold_binding().items() if k != "default_spacing_mm"}
    threshold_graph(threshold / FP32, binding={**old, "version": 1})
    rerecord(threshold, FP32)
    with pytest.raises(PackageError, match="binding version 1 is not 2; upgrade liverlesion or re-export"):
        load_package(threshold)


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


def _add_engine(root: Path, built_from: str, name: str = "e") -> None:
    """A well-formed fp32 engine record for an Orin (sm87, TensorRT 10.3), its plan built from ``built_from``."""
    (root / "engines").mkdir(exist_ok=True)
    (root / "engines" / f"{name}.engine").write_bytes(b"plan" * 64)
    record = file_record(root, f"engines/{name}.engine", "engine", "fp32")

    def change(m):
        m["files"].append(record.to_dict())
        m.setdefault("engines", []).append({
            "file": record.path, "sha256": record.sha256, "size": record.size, "precision": "fp32",
            "tensorrt": "10.3.0", "gpu": {"name": "Orin", "compute_capability": "8.7"},
            "profile": {"min": [1, 1, 128, 128], "opt": [1, 1, 128, 128], "max": [8, 1, 128, 128]},
            "plan": {"onnx_sha256": built_from}})
    edit(root, change)


ORIN = Machine(gpu_name="Orin", compute_capability=(8, 7), tensorrt_version="10.3.0",
               tensorrt_backend=(True, "TensorRT 10.3.0"), onnxruntime_version="1.32.0",
               ort_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"))


def _tensorrt(manifest, **pin):
    """The TensorRT choices (engine files) selection makes for ``manifest`` on an Orin, and its reason."""
    selection = select(manifest, ORIN, "auto", "fp32", **pin)
    return [c.options.get("engine") for c in selection.candidates if c.backend == "tensorrt"], \
        selection.backends["tensorrt"]


def test_engines_are_outside_the_digest_and_unused_under_a_pin_unless_trusted(threshold):
    digest = load_package(threshold).digest
    _add_engine(threshold, read_manifest(threshold).find(role="onnx").sha256)
    assert load_package(threshold).digest == digest  # building an engine on the device keeps the pin
    with load_package(threshold, expect_digest=digest) as package:
        assert _tensorrt(package.manifest)[0] == ["engines/e.engine"]  # without a pin: as before
        engines, why = _tensorrt(package.manifest, pinned=True)
        assert engines == [] and "engines/e.engine: built on a device after export" in why
        assert "trust_device_builds=True" in why
        assert _tensorrt(package.manifest, pinned=True, trust_device_builds=True)[0] == ["engines/e.engine"]
        # a pinned build_engine builds from the pinned ONNX, calibrating anew (caches are device-built too)
        built = select(package.manifest, ORIN, "tensorrt", "fp32", build_engine=True, pinned=True)
        assert built.candidates[0].options == {"build": True, "reuse_calibration_cache": False}


def test_a_pinned_load_never_takes_an_engine_built_from_another_onnx_and_still_loads(threshold):
    digest = load_package(threshold).digest
    _add_engine(threshold, "f" * 64, name="foreign")
    _add_engine(threshold, read_manifest(threshold).find(role="onnx").sha256, name="ours")
    with load_package(threshold, expect_digest=digest) as package:  # a stale record does not block the pin
        engines, why = _tensorrt(package.manifest, pinned=True, trust_device_builds=True)
        assert engines == ["engines/ours.engine"]
        assert _tensorrt(package.manifest)[0] == ["engines/foreign.engine"]  # without a pin: as before
    only_foreign = json.loads((threshold / "manifest.json").read_text())
    only_foreign["engines"] = [e for e in only_foreign["engines"] if "foreign" in e["file"]]
    (threshold / "manifest.json").write_text(json.dumps(only_foreign))
    with load_package(threshold, expect_digest=digest) as package:
        engines, why = _tensorrt(package.manifest, pinned=True, trust_device_builds=True)
        assert engines == [] and "the pinned package does not hold" in why
    with LesionAnalyzer.load(threshold, "onnxruntime", warmup=False, expect_digest=digest) as analyzer:
        assert analyzer.selection.requested["pinned"] is True


def test_under_a_pin_the_runtimes_own_caches_are_off_unless_trusted(threshold):
    from liverlesion.backends.onnxruntime import OnnxRuntimeBackend

    manifest = read_manifest(threshold)
    vino = Machine(openvino_version="2026.4.1", openvino_capabilities=("FP32", "INT8"))
    for machine, backend, provider, option in ((ORIN, "onnxruntime", "tensorrt", "engine_cache"),
                                               (vino, "openvino", None, "cache_dir")):
        plain = select(manifest, machine, backend, "fp32", provider=provider).candidates[0]
        pinned = select(manifest, machine, backend, "fp32", provider=provider, pinned=True).candidates[0]
        trusted = select(manifest, machine, backend, "fp32", provider=provider, pinned=True,
                         trust_device_builds=True).candidates[0]
        assert option not in plain.options and option not in trusted.options
        assert pinned.options[option] is False and "pinned package" in pinned.reason
    cpu = select(manifest, ORIN, "onnxruntime", "fp32", provider="cpu", pinned=True).candidates[0]
    assert "engine_cache" not in cpu.options  # the CPU provider caches nothing
    # what the TensorRT provider is then given (its options, without needing a GPU here)
    fake = types.SimpleNamespace(engine_cache=False, device_id=0, precision="fp16")
    assert OnnxRuntimeBackend._provider_options(fake, "tensorrt")["trt_engine_cache_enable"] is False


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_trust_device_builds_must_be_a_bool(threshold, bad):
    with pytest.raises(InputError, match="trust_device_builds"):
        LesionAnalyzer.load(threshold, "onnxruntime", warmup=False, trust_device_builds=bad)


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
    big = [("manifest.json", b" " * (2 << 20) + b"{}")]  # above the 1 MiB default
    with pytest.raises(PackageError, match="a manifest of at most 1048576 bytes"):
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


def empty_entries_zip(path: Path, count: int, *, says: int | None = None, zip64: bool = False) -> Path:
    """An archive of ``count`` empty stored entries, its end record saying ``says`` entries (default: the
    truth; ``zip64``: in a zip64 end record, the 16-bit fields 0xFFFF). Written byte by byte: zipfile would
    take seconds for 300,000 entries."""
    local, central, offset = [], [], 0
    for k in range(count):
        name = f"{k:06d}".encode()
        header = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
        central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0,
                                   0, 0, offset) + name)
        local.append(header)
        offset += len(header)
    directory = b"".join(central)
    entries = count if says is None else says
    tail = b""
    if zip64:
        tail = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, len(directory), offset)
        tail += struct.pack("<4sLQL", b"PK\x06\x07", 0, offset + len(directory), 1)
    short = 0xFFFF if zip64 else min(entries, 0xFFFF)
    tail += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, short, short, len(directory), offset, 0)
    path.write_bytes(b"".join(local) + directory + tail)
    return path


@pytest.fixture
def zipfile_opened(monkeypatch) -> list[Path]:
    """Archives handed to zipfile.ZipFile (to see that a refusal came before it parsed anything)."""
    opened: list[Path] = []
    real = zipfile.ZipFile

    def spy(file, *args, **kwargs):
        opened.append(Path(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(zipfile, "ZipFile", spy)
    return opened


def test_the_hand_made_archives_are_ones_zipfile_reads(tmp_path):
    for zip64 in (False, True):
        with zipfile.ZipFile(empty_entries_zip(tmp_path / f"{zip64}.zip", 3, zip64=zip64)) as zf:
            assert zf.namelist() == ["000000", "000001", "000002"]


MANY_ENTRIES = [
    ("300,000 entries (zip64, as zipfile writes them)", {"zip64": True}, "300000 entries; at most 4096 accepted"),
    ("300,000 in a plain end record (65535, its most)", {}, "65535 entries; at most 4096 accepted"),
    ("300,000 claiming 3", {"says": 3}, "more than 4096 entries .its end record says 3."),
    ("300,000 claiming 3 in zip64", {"says": 3, "zip64": True}, "more than 4096 entries"),
]


@pytest.mark.parametrize("what, form, message", MANY_ENTRIES, ids=[e[0] for e in MANY_ENTRIES])
def test_an_archive_of_too_many_entries_is_refused_from_its_tail_before_zipfile_parses_it(
        tmp_path, temp_dir, zipfile_opened, what, form, message):
    archive = empty_entries_zip(tmp_path / "many.zip", 300_000, **form)
    with pytest.raises(PackageError, match=message):
        load_package(archive)
    assert zipfile_opened == [] and not any(temp_dir.iterdir())


def test_the_central_directory_bound_and_a_missing_end_record(threshold, tmp_path, zipfile_opened):
    archive = pack(tmp_path / "p.zip", package_entries(threshold))
    zipfile_opened.clear()  # pack's own writing
    with pytest.raises(PackageError, match="a central directory of .* bytes; at most 64 accepted"):
        load_package(archive, limits=PackageLimits(central_directory_bytes=64))
    assert zipfile_opened == []
    load_package(archive).close()  # the default bound takes it
    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive.read_bytes()[:-22])  # the end record gone
    with pytest.raises(PackageError, match="no end-of-central-directory record"):
        load_package(cut)


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
    ("nested 100,000 deep", '"engines": []', f'"engines": [], "deep": {DEEP}', "nested 100001 levels deep"),
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


SURROGATES = [
    ("lone high", '"version": "0"', '"version": "0", "created": "\\ud800"'),
    ("lone low", '"version": "0"', '"version": "0", "created": "x\\udfffy"'),
    ("in a key", '"engines": []', '"engines": [], "\\ud83d": 1'),
    ("reversed pair", '"engines": []', '"engines": [], "note": "\\ude00\\ud83d"'),
]


@pytest.mark.parametrize("what, old, new", SURROGATES, ids=[e[0] for e in SURROGATES])
def test_a_lone_surrogate_is_a_package_error_not_a_unicode_error(threshold, what, old, new):
    path = threshold / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text())))
    _text_edit(threshold, old, new)
    with pytest.raises(PackageError, match="lone UTF-16 surrogate"):
        load_package(threshold)
    assert main(["inspect", str(threshold)]) == 2  # inspect too: a typed error, no traceback


def test_an_escaped_surrogate_pair_is_text_and_keeps_its_digest(threshold):
    path = threshold / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text())))
    _text_edit(threshold, '"engines": []', '"engines": [], "note": "\\ud83d\\ude00"')
    with load_package(threshold) as package:
        assert package.manifest.raw["note"] == "\U0001F600" and len(package.digest) == 64


@pytest.mark.parametrize("data, depth", [
    (b"[]", 1), (b"{}", 1), (b"7", 0), (b'{"a": [1, {"b": []}]}', 4), (b'"[[[[{{{{"', 0),
    (b'{"a": "]]]]", "b": [[[]]]}', 4), (b'{"a": "\\"[[[", "b": []}', 2), (b'["\\\\", ["x"]]', 2),
    (b"[" * 70 + b"]" * 70, 70), (b"[[],[],[]]", 2),
], ids=str)
def test_json_depth_is_counted_on_the_bytes_outside_strings(data, depth):
    assert json_depth(data) == depth
    assert max_depth_of(json.loads(data)) == depth  # what Python's parser builds


def max_depth_of(value) -> int:
    if isinstance(value, dict):
        return 1 + max((max_depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((max_depth_of(v) for v in value), default=0)
    return 0


def test_too_deep_json_is_refused_before_it_is_parsed(threshold, monkeypatch):
    parsed = []
    real_loads = json.loads
    monkeypatch.setattr(json, "loads", lambda *a, **k: parsed.append(1) or real_loads(*a, **k))
    deep = b'{"x": ' + b"[" * 65 + b"]" * 65 + b"}"
    with pytest.raises(PackageError, match="nested 66 levels deep"):
        loads_bounded(deep, "test")
    assert parsed == []
    # brackets inside strings are text: a manifest quoting 10,000 of them is not deep
    path = threshold / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text())))
    _text_edit(threshold, '"engines": []', '"engines": [], "note": "' + "[{" * 10_000 + '"')
    load_package(threshold).close()


def test_a_large_manifest_of_empty_lists_is_refused_before_it_is_read(threshold, monkeypatch):
    (threshold / "manifest.json").write_bytes(b"[" + b"[]," * (3 << 20) + b"[]]")  # 9 MiB of [[],[],...]
    read = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda file, mode="r", *a, **k: (
        read.append(file) if str(file).endswith("manifest.json") else None) or real_open(file, mode, *a, **k))
    with pytest.raises(PackageError, match="a manifest of at most 1048576 bytes"):
        load_package(threshold)
    assert read == []


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
        handle.write(" " * (2 << 20))
    read = []
    real_open = open

    def spy(file, mode="r", *args, **kwargs):
        if str(file).endswith("manifest.json") and "r" in mode:
            read.append(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    with pytest.raises(PackageError, match="a manifest of at most 1048576 bytes"):
        load_package(threshold)
    assert not read
    monkeypatch.undo()
    load_package(threshold, limits=PackageLimits(manifest_bytes=3 << 20)).close()  # the limit is configurable


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


# -- one spacing rule for slices and grids -------------------------------------------------------------------------
def test_one_spacing_range_for_slices_grids_and_the_default_spacing(threshold):
    import liverlesion.grid as grid_module

    assert grid_module.SPACING_RANGE_MM == (0.05, 25.0) and not hasattr(grid_module, "GRID_SPACING_RANGE_MM")
    assert PackageLimits().grid_spacing_mm == grid_module.SPACING_RANGE_MM
    assert check_spacing((12.0, 25.0)) == (12.0, 25.0)
    for bad in ((25.5, 1.0), (0.01, 1.0)):
        with pytest.raises(InputError, match="between 0.05 and 25.0 mm"):
            check_spacing(bad)
    edit(threshold, lambda m: m["input"].update(default_spacing_mm=[30.0, 1.0]))
    with pytest.raises(PackageError, match=r"input.default_spacing_mm\[0\]' is 30.0; accepted: a number from "
                                           "0.05 to 25.0"):
        load_package(threshold)


def test_a_package_on_a_12_mm_grid_loads_in_the_analyzer_as_in_the_loader(threshold):
    coarse = ModelGrid((32, 32), (12.0, 12.0))  # the tests' exported packages run at 12 mm
    threshold_graph(threshold / FP32, grid=coarse)
    rerecord(threshold, FP32)
    edit(threshold, lambda m: m["input"].update(grid=coarse.to_dict(), shape=["N", 1, 32, 32]))
    load_package(threshold).close()
    with LesionAnalyzer.load(threshold, "onnxruntime") as analyzer:  # warmed up on its own grid
        assert analyzer.default_spacing == (12.0, 12.0)
        hu = np.full((40, 40), 100, np.int16)
        hu[:4] = -1000
        assert analyzer.predict(hu).spacing_mm == (12.0, 12.0)


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
