"""FP16: the network in half precision, HU arithmetic and softmax/argmax in float32, float32 I/O."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from liverlesion.export.accuracy import TARGETS, load_eval_set, measure, target_misses
from liverlesion.export.fp16 import convert_fp16
from liverlesion.export.parity import cpu_session, random_hu, run_session
from liverlesion.model.fused import NETWORK_SCOPE
from liverlesion.package import load_package

pytestmark = pytest.mark.slow


def _files(world, arch):
    package = load_package(world.packages[arch])
    return package, {p: package.path(package.manifest.find(role="onnx", precision=p))
                     for p in ("fp32", "fp16")}


@pytest.mark.parametrize("arch", ["joint", "ynet"])
def test_fp16_keeps_io_float32_and_runs_batches_1_and_4(export_world, arch):
    package, files = _files(export_world, arch)
    model = onnx.load(str(files["fp16"]))
    assert {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]} <= {
        TensorProto.FLOAT, TensorProto.INT32}
    session = cpu_session(files["fp16"])
    reference = cpu_session(files["fp32"])
    for batch in (1, 4):
        hu = random_hu(batch, package.manifest.grid.size, seed=batch)
        out, ref = run_session(session, hu), run_session(reference, hu)
        assert out["probabilities"].dtype == np.float32
        assert out["labels"].shape == (batch, *package.manifest.grid.size)
        np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, atol=1e-5)
        assert np.max(np.abs(out["probabilities"] - ref["probabilities"])) < 0.05  # half precision, not noise


def test_fp16_graph_is_half_inside_the_network_only(export_world):
    _, files = _files(export_world, "ynet")
    graph = onnx.load(str(files["fp16"])).graph
    inits = {t.name: t for t in graph.initializer}
    conv_weights = [inits[n.input[1]] for n in graph.node if n.op_type == "Conv"]
    assert conv_weights and all(w.data_type == TensorProto.FLOAT16 for w in conv_weights)
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(files["fp16"]))).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.output]}
    producers = {o: n for n in graph.node for o in n.output}
    outside = [n for n in graph.node if not n.name.startswith(NETWORK_SCOPE) and n.op_type != "Cast"]
    assert outside, "pre/postprocessing nodes are expected outside the network"
    for node in outside:  # HU windows, softmax, argmax: float32 in and out
        for name in [*node.input, *node.output]:
            if name in types and name not in inits:
                assert types[name] in (TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32), node.name
    # the raw HU go straight into the window clipping: never through half precision
    assert all(n.op_type == "Clip" for n in graph.node if "hu" in n.input)
    assert producers["probabilities"].op_type == "Softmax"


def test_convert_fp16_can_keep_named_network_nodes_float(export_world):
    _, files = _files(export_world, "joint")
    model = onnx.load(str(files["fp32"]))
    first_conv = next(n.name for n in model.graph.node if n.op_type == "Conv")
    converted = convert_fp16(model, float_nodes=[first_conv])
    inits = {t.name: t for t in converted.graph.initializer}
    node = next(n for n in converted.graph.node if n.name == first_conv)
    assert inits[node.input[1]].data_type == TensorProto.FLOAT


@pytest.mark.parametrize("arch", ["joint", "ynet"])
def test_fp16_accuracy_is_within_its_target(export_world, arch):
    package, files = _files(export_world, arch)
    data = load_eval_set(export_world.eval_data, package.manifest.grid)
    scores = measure(files, data)
    assert target_misses("fp16", scores["fp16"], scores["fp32"]) == []
    assert scores["fp16"]["agreement_with_fp32"] > 0.99
    # what the manifest says is what we measure again
    recorded = package.manifest.raw["accuracy"]["fp16"]
    assert recorded["lesion_dice"] == pytest.approx(scores["fp16"]["lesion_dice"])
    assert TARGETS["fp16"]["lesion_dice"] == 0.001


def test_export_guard_catches_a_half_graph_that_overflows(export_world, tmp_path):
    from liverlesion.errors import ExportError
    from liverlesion.export.parity import check_reduced_precision
    from liverlesion.training.datasets import load_lesion_set

    package, files = _files(export_world, "joint")
    hu = load_lesion_set(export_world.eval_data, package.manifest.grid).hu[:4, None].astype(np.float32)
    assert check_reduced_precision(files["fp32"], files["fp16"], hu)["label_agreement"] >= 0.99
    broken = onnx.load(str(files["fp16"]))
    head = next(n for n in broken.graph.node if n.name.startswith("/network/head/") and n.op_type == "Conv")
    for init in broken.graph.initializer:
        if init.name == head.input[2]:  # the head's bias: inf, as an fp16 overflow would give
            init.CopyFrom(onnx.numpy_helper.from_array(np.full(init.dims, np.inf, np.float16), init.name))
    onnx.save(broken, tmp_path / "broken.onnx")
    with pytest.raises(ExportError, match="non-finite"):
        check_reduced_precision(files["fp32"], tmp_path / "broken.onnx", hu)
