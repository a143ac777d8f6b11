"""INT8: explicit Q/DQ in TensorRT's form and the CPU form, LiTS calibration slices, accuracy against FP32."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from liverlesion.errors import ExportError, InputError
from liverlesion.export import accuracy as accuracy_module
from liverlesion.export import int8_package, quantize_package
from liverlesion.export.accuracy import load_eval_set, measure, target_misses
from liverlesion.export.calibration import select_calibration_slices
from liverlesion.export.graph_checks import check_int8_graph
from liverlesion.export.quantize import QuantRecipe, quantize_int8
from liverlesion.package import load_package


def _int8(world, arch):
    package = load_package(world.packages[arch])
    return package, package.path(package.manifest.find(role="onnx", precision="int8"))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["joint", "ynet"])
def test_int8_graph_has_the_form_tensorrt_consumes(export_world, arch):
    package, path = _int8(export_world, arch)
    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    ops = [n.op_type for n in graph.node]
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert "DynamicQuantizeLinear" not in ops and ops.count("QuantizeLinear") > 10
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = inits[node.input[2]]
            assert zero.data_type == TensorProto.INT8 and not numpy_helper.to_array(zero).any(), node.name
    consumers = {i: n for n in graph.node for i in n.input}
    weight_dqs = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weight_dqs
    for dq in weight_dqs:
        weight, scale = inits[dq.input[0]], numpy_helper.to_array(inits[dq.input[1]])
        assert weight.data_type == TensorProto.INT8  # no int32 bias quantization
        assert consumers[dq.output[0]].op_type == "Conv"
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        assert axis == 0 and scale.shape == (weight.dims[0],)  # per output channel
    # pre/postprocessing run in float: no DequantizeLinear feeds them
    dq_out = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    float_nodes = [n for n in graph.node if n.name.startswith(("/preprocess/", "/postprocess/"))]
    assert float_nodes and not any(i in dq_out for n in float_nodes for i in n.input)
    # the head keeps float weights (its input is the dequantized activation of the layer before)
    head = next(n for n in graph.node if n.name.startswith("/network/head/") and n.op_type == "Conv")
    assert head.input[1] in inits and inits[head.input[1]].data_type == TensorProto.FLOAT
    # nearest Resize keeps its Q/DQ (exact either way, so the CPU numbers stand for TensorRT's)
    for resize in (n for n in graph.node if n.op_type == "Resize"):
        assert helper.get_attribute_value(next(a for a in resize.attribute if a.name == "mode")) == b"nearest"
    assert check_int8_graph(model).problems == []
    record = package.manifest.find(role="onnx", precision="int8")
    assert record.extra["form"] == "qdq-s8s8" and record.path == "model_int8_qdq_s8s8.onnx"


def _qdq_model():
    """Conv(x) with per-channel int8 weights; tests mutate it to break one rule each."""
    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.int8), "w_q")
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"], name="dq"),
             helper.make_node("DequantizeLinear", ["w_q", "sw", "zw"], ["wd"], name="dqw", axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "sx"),
             numpy_helper.from_array(np.array(0, np.int8), "zx"), w,
             numpy_helper.from_array(np.full(4, 0.01, np.float32), "sw"),
             numpy_helper.from_array(np.zeros(4, np.int8), "zw")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _set_init(model, name, array):
    for t in model.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(array, name))


def test_graph_check_accepts_the_reference_and_names_each_violation():
    assert check_int8_graph(_qdq_model()).problems == []
    cases = {
        "non-zero zero point": lambda m: _set_init(m, "zx", np.array(3, np.int8)),
        "not INT8": lambda m: _set_init(m, "zx", np.array(0, np.uint8)),
        "per-channel axis": lambda m: m.graph.node[2].attribute[0].CopyFrom(helper.make_attribute("axis", 1)),
        "per-tensor": lambda m: (_set_init(m, "sw", np.array(0.01, np.float32)),
                                 _set_init(m, "zw", np.array(0, np.int8))),
        "DynamicQuantizeLinear": lambda m: m.graph.node.append(
            helper.make_node("DynamicQuantizeLinear", ["x"], ["a", "b", "c"], name="dyn")),
        "opset": lambda m: m.opset_import[0].CopyFrom(helper.make_opsetid("", 11)),
        "no zero point": lambda m: m.graph.node[0].input.pop(),
    }
    for expected, mutate in cases.items():
        model = _qdq_model()
        mutate(model)
        problems = " | ".join(check_int8_graph(model).problems)
        assert expected in problems, (expected, problems)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["joint", "ynet"])
def test_int8_accuracy_is_within_its_target(export_world, arch):
    package, path = _int8(export_world, arch)
    fp32 = package.path(package.manifest.find(role="onnx", precision="fp32"))
    data = load_eval_set(export_world.eval_data, package.manifest.grid)
    scores = measure({"fp32": fp32, "int8": path}, data)
    assert target_misses("int8", scores["int8"], scores["fp32"]) == []
    assert scores["int8"]["agreement_with_fp32"] > 0.95
    assert package.manifest.raw["accuracy"]["int8"]["meets_target"] is True


@pytest.mark.slow
def test_calibration_slices_are_saved_stratified_and_reproducible(export_world):
    from liverlesion.data.lits import iter_lits_slices
    from liverlesion.grid import to_model_grid

    package, _ = _int8(export_world, "joint")
    record = package.manifest.find(role="calibration")
    slices = np.load(package.path(record), allow_pickle=False)
    grid = package.manifest.grid
    count = export_world.calibration_slices
    assert slices.dtype == np.float32 and slices.shape == (count, 1, *grid.size)
    calib = package.manifest.raw["calibration"]
    assert calib["slices"] == count and calib["source"] == "LiTS" and calib["file"] == record.path
    assert "with tumour" in calib["selection"] and len(calib["ids"]) == count
    again = select_calibration_slices(export_world.data, grid, count=count, seed=calib["seed"])
    assert again.ids == calib["ids"] and np.array_equal(again.slices, slices)
    assert again.with_tumour == count // 2 and again.without_tumour == count - count // 2
    # each saved slice is the LiTS slice of its id, through the training resampling (grid.to_model_grid)
    case, index = (int(v) for v in calib["ids"][0].split(":"))
    source = next(s for s in iter_lits_slices(export_world.data / "lits")
                  if (s.case_id, s.index) == (case, index))
    np.testing.assert_array_equal(slices[0, 0], to_model_grid(source.hu, source.spacing_mm, grid))
    other = select_calibration_slices(export_world.data, grid, count=count, seed=calib["seed"] + 1)
    assert other.ids != calib["ids"]


def _activation_scales(model):
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node if n.op_type == "QuantizeLinear"}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_other_calibration_methods_give_valid_graphs_of_their_own(export_world, tmp_path, method):
    package, _ = _int8(export_world, "joint")
    fp32 = package.path(package.manifest.find(role="onnx", precision="fp32"))
    slices = np.load(package.path(package.manifest.find(role="calibration")))
    # 512 histogram bins instead of 2048: entropy's threshold search is the slow part, not the point here
    recipe = QuantRecipe(method, extra_exclude=("/network/stem/",), histogram_bins=512)
    excluded = quantize_int8(fp32, tmp_path / "q.onnx", slices, recipe)
    assert any(n.startswith("/network/stem/") for n in excluded)
    model = onnx.load(str(tmp_path / "q.onnx"))
    assert check_int8_graph(model).problems == []
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    stem = [n for n in model.graph.node if n.name.startswith("/network/stem/")]
    assert stem and not any(i in dq_out for n in stem for i in n.input)
    # a real histogram method, not min/max under another name (onnxruntime's entropy default is)
    quantize_int8(fp32, tmp_path / "minmax.onnx", slices, replace(recipe, method="minmax"))
    mine, minmax = _activation_scales(model), _activation_scales(onnx.load(str(tmp_path / "minmax.onnx")))
    shared = set(mine) & set(minmax)
    assert shared and any(abs(mine[t] - minmax[t]) > 1e-3 * minmax[t] for t in shared)
    assert all(mine[t] <= minmax[t] * (1 + 1e-5) for t in shared)  # both clip, never widen the range


def test_unknown_exclude_pattern_and_method_are_refused(tmp_path):
    with pytest.raises(InputError, match="calibration method"):
        QuantRecipe("kl")
    model = _qdq_model()
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(InputError, match="matches no node"):
        quantize_int8(tmp_path / "m.onnx", tmp_path / "q.onnx", np.zeros((1, 1, 8, 8), np.float32),
                      QuantRecipe(extra_exclude=("/network/nope/",)))


@pytest.mark.slow
def test_quantize_that_misses_its_target_writes_nothing_then_fixes_what_it_can(export_world, tmp_path,
                                                                               monkeypatch):
    root = shutil.copytree(export_world.packages["joint"], tmp_path / "pkg")
    before = (root / "manifest.json").read_bytes()
    # an unreachable target: INT8 would have to beat FP32 by 100 Dice points
    monkeypatch.setitem(accuracy_module.TARGETS, "int8", {"lesion_dice": -1.0})
    with pytest.raises(ExportError, match="misses its accuracy target"):
        quantize_package(root, export_world.data, export_world.eval_data, slices=8, max_fix_rounds=0)
    assert (root / "manifest.json").read_bytes() == before
    load_package(root).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]
    # --allow-miss keeps it, with the miss and both fix rounds recorded: methods, then one block to float
    # (entropy left out of the methods round: its 2048-bin threshold search alone takes a minute here)
    monkeypatch.setattr(int8_package, "METHODS", ("minmax", "percentile"))
    result = quantize_package(root, export_world.data, export_world.eval_data, slices=8, max_fix_rounds=2,
                              allow_miss=True)
    raw = json.loads((root / "manifest.json").read_text())
    assert raw["accuracy"]["int8"]["meets_target"] is False
    study = raw["quantization"]["study"]
    assert [m["method"] for m in study["methods"]] == ["percentile"]
    assert study["worst_tensors"] and len(study["block_sensitivity"]) == 1 and len(study["rounds"]) == 3
    assert len(result.recipe.extra_exclude) == 1 and raw["calibration"]["method"] == result.recipe.method
    # the CPU form is held to the same (unreachable) target: its own fix rounds (one block each), then
    # left out, and the manifest says why
    cpu = raw["quantization"]["forms"]["u8s8"]
    assert cpu["written"] is False and cpu["target_misses"] and "int8-u8s8" not in raw["accuracy"]
    assert len(cpu["rounds"]) == 3 and len(cpu["extra_excluded_blocks"]) == len(result.recipe.extra_exclude) + 2
    assert not (root / "model_int8_qdq_u8s8.onnx").exists()
    load_package(root).close()


def test_quantize_refuses_an_archive(tmp_path):
    archive = tmp_path / "pkg.zip"
    archive.write_bytes(b"PK")
    with pytest.raises(InputError, match="archive"):
        quantize_package(archive, tmp_path, tmp_path)


def test_sqnr_leaves_dead_tensors_out_of_the_worst_list():
    from liverlesion.export.sensitivity import sqnr_db, worst_tensors

    x = [np.ones((2, 4), np.float32)]
    assert sqnr_db(x, [x[0] * 1.1]) == pytest.approx(20.0)  # noise is a tenth of the signal
    assert np.isnan(sqnr_db([np.zeros(3)], [np.zeros(3)])) and sqnr_db(x, x) == np.inf
    rows = [{"tensor": "dead", "local_db": float("nan")}, {"tensor": "exact", "local_db": float("inf")},
            {"tensor": "b", "local_db": 30.0}, {"tensor": "a", "local_db": 12.0}]
    assert [r["tensor"] for r in worst_tensors(rows)] == ["a", "b"]


def _activation_qparams(model):
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: (float(inits[n.input[1]]), inits[n.input[2]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in inits and inits[n.input[1]].ndim == 0}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["joint", "ynet"])
def test_the_cpu_form_comes_from_the_same_calibration_and_is_kept_only_if_it_meets_the_target(
        export_world, arch, tmp_path):
    package = load_package(export_world.packages[arch])
    raw = package.manifest.raw
    fp32 = package.path(package.manifest.find(role="onnx", precision="fp32"))
    s8s8 = package.path(package.manifest.find(role="onnx", precision="int8", form="qdq-s8s8"))
    slices = np.load(package.path(package.manifest.find(role="calibration")))
    # the CPU form again, from the package's own calibration slices and the CPU form's recipe (the TensorRT
    # form's, plus any blocks its own fix rounds kept in float)
    cpu_form = raw["quantization"]["forms"]["u8s8"]
    assert set(raw["quantization"]["extra_excluded_blocks"]) <= set(cpu_form["extra_excluded_blocks"])
    recipe = QuantRecipe(raw["calibration"]["method"], extra_exclude=tuple(cpu_form["extra_excluded_blocks"]))
    quantize_int8(fp32, tmp_path / "u8s8.onnx", slices, recipe, form="u8s8")
    cpu, trt = onnx.load(str(tmp_path / "u8s8.onnx")), onnx.load(str(s8s8))
    cpu_q, trt_q = _activation_qparams(cpu), _activation_qparams(trt)
    # the same recipe: the CPU form quantizes a subset (onnxruntime folds a ReLU into the uint8 range of
    # the Conv before it, so that Conv's own output gets no Q/DQ pair)
    assert cpu_q and set(cpu_q) <= set(trt_q) and len(cpu_q) >= len(trt_q) // 2
    assert all(zp.dtype == np.uint8 for _, zp in cpu_q.values())
    assert any(int(zp) != 128 for _, zp in cpu_q.values())  # one-sided ranges (after ReLU) use zero points
    for tensor, (scale, zp) in cpu_q.items():
        if trt_q[tensor][0] == 1.0:
            continue  # a tensor that is always 0 (a dead ReLU): both forms fall back to scale 1
        # one calibration: the symmetric form's range is the widest side of the asymmetric one
        absmax = max(int(zp), 255 - int(zp)) * scale
        assert abs(trt_q[tensor][0] * 127 - absmax) <= scale + 1e-6 * absmax, tensor
    weights = [numpy_helper.to_array(t) for t in cpu.graph.initializer if t.data_type == TensorProto.INT8]
    assert weights and all(w.dtype == np.int8 for w in weights)
    # measured on the held-out slices against FP32 with the INT8 target; the package keeps it only if met
    data = load_eval_set(export_world.eval_data, package.manifest.grid)
    scores = measure({"fp32": fp32, "int8-u8s8": tmp_path / "u8s8.onnx"}, data)
    misses = target_misses("int8-u8s8", scores["int8-u8s8"], scores["fp32"])
    record = package.manifest.find(role="onnx", precision="int8", form="qdq-u8s8")
    assert raw["quantization"]["forms"]["u8s8"]["written"] is (record is not None) is (not misses)
    if record is None:
        assert raw["quantization"]["forms"]["u8s8"]["target_misses"] == misses
        assert "int8-u8s8" not in raw["accuracy"]
        return
    assert record.path == "model_int8_qdq_u8s8.onnx" and record.extra["accuracy"] == "int8-u8s8"
    assert "openvino" in record.extra["runtimes"] and "tensorrt" not in record.extra["runtimes"]
    recorded = raw["accuracy"]["int8-u8s8"]
    assert recorded["meets_target"] is True and recorded["target_max_loss"]["accuracy"] == 0.01
    assert recorded["agreement_with_fp32"] == pytest.approx(scores["int8-u8s8"]["agreement_with_fp32"])
