"""Export: the fused ONNX graph, parity with PyTorch, the package it writes and refuses to write."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pytest

from liverlesion.errors import ChecksumError, ExportError, PackageError
from liverlesion.export import export_package
from liverlesion.export import parity as parity_module
from liverlesion.export.onnx_export import OPSET
from liverlesion.export.parity import check_parity, compare, cpu_session, random_hu, run_session
from liverlesion.model.fused import fuse
from liverlesion.package import load_package
from liverlesion.training import load_checkpoint
from liverlesion.training.datasets import load_lesion_set


def _phantom_batch(world, grid, count=4):
    return load_lesion_set(world.eval_data, grid).hu[:count, None].astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["joint", "ynet"])
def test_onnx_matches_pytorch_for_batches_1_and_4(export_world, arch):
    checkpoint = load_checkpoint(export_world.checkpoints[arch])
    fused = fuse(checkpoint.model, checkpoint.preprocessing, arch)
    package = load_package(export_world.packages[arch])
    onnx_path = package.path(package.manifest.find(role="onnx", precision="fp32"))
    inputs = {"random 1": random_hu(1, checkpoint.grid.size, seed=11),
              "random 4": random_hu(4, checkpoint.grid.size, seed=12),
              "phantom 4": _phantom_batch(export_world, checkpoint.grid)}
    results = check_parity(fused, onnx_path, inputs)
    pixels = {r.name: r.batch * np.prod(checkpoint.grid.size) for r in results}
    for r in results:
        assert r.label_mismatches == 0
        assert r.max_probability_error <= 1e-4 and r.max_class_probability_error <= 1e-4
        assert r.tie_flips <= 0.001 * pixels[r.name]  # ties are rare, not a loophole
    assert [r.batch for r in results] == [1, 4, 4]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["joint", "ynet"])
def test_fused_graph_interface_follows_the_package_contract(export_world, arch):
    package = load_package(export_world.packages[arch])
    model = onnx.load(str(package.path(package.manifest.find(role="onnx", precision="fp32"))))
    onnx.checker.check_model(model, full_check=True)
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == OPSET
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)

    def spec(value):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        return value.name, onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type), dims

    rows, cols = package.manifest.grid.size
    labels = len(package.manifest.labels)
    expected = [("labels", np.int32, ["N", rows, cols]),
                ("probabilities", np.float32, ["N", labels, rows, cols])]
    if arch == "ynet":
        expected.append(("class_probabilities", np.float32, ["N", 3]))
    assert [spec(i) for i in model.graph.input] == [("hu", np.float32, ["N", 1, rows, cols])]
    assert [spec(o) for o in model.graph.output] == expected
    # preprocessing is inside: the graph reads raw HU straight into the window clipping
    assert {n.op_type for n in model.graph.node if "hu" in n.input} == {"Clip"}


@pytest.mark.slow
def test_manifest_records_what_runtimes_need(export_world):
    package = load_package(export_world.packages["joint"])
    raw = package.manifest.raw
    checkpoint = load_checkpoint(export_world.checkpoints["joint"])
    assert raw["model"]["config"] == checkpoint.config.to_dict()
    assert raw["model"]["parameters"] == sum(p.numel() for p in checkpoint.model.parameters())
    assert raw["model"]["gflops_per_slice"] > 0
    assert package.manifest.grid == checkpoint.grid
    assert package.manifest.preprocessing == checkpoint.preprocessing
    assert list(package.manifest.labels) == list(checkpoint.labels)
    assert set(raw["versions"]) >= {"torch", "onnx", "onnxruntime", "liverlesion"}
    roles = {(f.role, f.precision) for f in package.manifest.files}
    assert roles >= {("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"), ("onnx-bare", "fp32"),
                     ("weights", "fp32"), ("calibration", None)}
    for precision in ("fp32", "fp16", "int8"):
        scores = raw["accuracy"][precision]
        assert 0.0 <= scores["lesion_dice"] <= 1.0 and 0.0 <= scores["agreement_with_fp32"] <= 1.0
    assert raw["accuracy"]["fp32"]["agreement_with_fp32"] == 1.0
    # readable by the account that serves the model, not only by the one that exported it
    umask = os.umask(0)
    os.umask(umask)
    for path in [package.root, *package.root.rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644) & ~umask, path


@pytest.mark.slow
def test_bare_network_matches_the_fused_logits(export_world):
    package = load_package(export_world.packages["joint"])
    checkpoint = load_checkpoint(export_world.checkpoints["joint"])
    hu = _phantom_batch(export_world, checkpoint.grid, 2)
    x = checkpoint.preprocessing(hu)
    logits = run_session(cpu_session(package.path(package.manifest.find(role="onnx-bare"))), x)["seg_logits"]
    fused = run_session(cpu_session(package.path(package.manifest.find(role="onnx", precision="fp32"))), hu)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax = shifted / shifted.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax, fused["probabilities"], atol=1e-5)


@pytest.mark.slow
def test_weights_file_rebuilds_the_network(export_world):
    import torch
    from safetensors.torch import load_file

    from liverlesion.model import ModelConfig, build_model

    package = load_package(export_world.packages["ynet"])
    record = package.manifest.find(role="weights", format="safetensors")
    config = json.loads(package.path(record.extra["config"]).read_text())
    model = build_model(ModelConfig.from_dict(config["model"]))
    model.load_state_dict(load_file(str(package.path(record))))
    reference = load_checkpoint(export_world.checkpoints["ynet"]).model
    x = torch.zeros(1, 3, *package.manifest.grid.size)
    with torch.no_grad():
        assert torch.equal(model.eval()(x)[0], reference(x)[0])


def _copy(world, tmp_path, arch="joint"):
    return shutil.copytree(world.packages[arch], tmp_path / "pkg")


@pytest.mark.slow
def test_loader_refuses_a_changed_byte(export_world, tmp_path):
    root = _copy(export_world, tmp_path)
    data = bytearray((root / "model_fp16.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (root / "model_fp16.onnx").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"model_fp16\.onnx"):
        load_package(root)


@pytest.mark.slow
def test_loader_refuses_a_missing_file(export_world, tmp_path):
    root = _copy(export_world, tmp_path)
    (root / "calibration" / "slices.npy").unlink()
    with pytest.raises(PackageError, match=r"calibration/slices\.npy"):
        load_package(root)


@pytest.mark.slow
def test_loader_refuses_an_unknown_schema_version(export_world, tmp_path):
    root = _copy(export_world, tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["schema_version"] += 1
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="schema_version"):
        load_package(root)


@pytest.mark.slow
def test_archive_holds_the_same_package(export_world, tmp_path):
    from liverlesion.cli import main

    archive = tmp_path / "model.zip"
    assert main(["export", str(export_world.checkpoints["ynet"]), "--out", str(tmp_path / "pkg"),
                 "--archive", str(archive), "--max-batch", "4"]) == 0
    with load_package(archive) as package:
        assert package.manifest.raw["input"]["max_batch"] == 4
        folder = load_package(tmp_path / "pkg").manifest
        assert [f.to_dict() for f in package.manifest.files] == [f.to_dict() for f in folder.files]


def _perturbed(kind):
    real = parity_module.run_session

    def run(session, hu):
        out = real(session, hu)
        if kind == "labels":  # a systematic label error, far from any tie
            out["labels"] = np.where(out["labels"] == 0, 1, out["labels"]).astype(np.int32)
        else:
            out["probabilities"] = out["probabilities"] + 1e-3
        return out
    return run


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["labels", "probabilities"])
def test_export_refuses_a_package_that_fails_parity_and_leaves_nothing(export_world, tmp_path, monkeypatch,
                                                                        kind):
    monkeypatch.setattr(parity_module, "run_session", _perturbed(kind))
    out = tmp_path / "out" / "pkg"
    with pytest.raises(ExportError, match="does not match PyTorch"):
        export_package(export_world.checkpoints["joint"], out)
    assert not out.exists()
    assert list((tmp_path / "out").iterdir()) == []  # no temporary folder left behind


@pytest.mark.slow
def test_failed_re_export_keeps_the_existing_package(export_world, tmp_path, monkeypatch):
    root = _copy(export_world, tmp_path)
    before = (root / "manifest.json").read_bytes()
    monkeypatch.setattr(parity_module, "run_session", _perturbed("labels"))
    with pytest.raises(ExportError):
        export_package(export_world.checkpoints["joint"], root)
    assert (root / "manifest.json").read_bytes() == before
    load_package(root).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_parity_forgives_only_numerical_ties():
    probabilities = np.zeros((1, 3, 1, 2), np.float32)
    probabilities[0, :, 0, 0] = [0.5, 0.49999, 0.00001]  # a tie: top two within 1e-4
    probabilities[0, :, 0, 1] = [0.7, 0.2, 0.1]  # a clear decision
    reference = {"labels": np.array([[[0, 0]]], np.int32), "probabilities": probabilities}
    tie_flip = compare("t", reference, {"labels": np.array([[[1, 0]]], np.int32),
                                        "probabilities": probabilities})
    assert (tie_flip.label_mismatches, tie_flip.tie_flips) == (0, 1) and tie_flip.passed(1e-4)
    real_flip = compare("r", reference, {"labels": np.array([[[0, 1]]], np.int32),
                                         "probabilities": probabilities})
    assert (real_flip.label_mismatches, real_flip.tie_flips) == (1, 0) and not real_flip.passed(1e-4)


def test_export_refuses_a_bad_max_batch(tmp_path):
    from liverlesion.errors import InputError

    with pytest.raises(InputError, match="max-batch"):
        export_package(tmp_path / "no-checkpoint", tmp_path / "pkg", max_batch=0)
