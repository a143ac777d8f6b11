"""The fused graph wrapped in its resampling: the same HU, labels and labels-on-the-slice as today's host path.

Today's path: ``geometry.to_model`` (host), the fused graph, ``geometry.to_input`` (host). The stand-in fused
graph is ``sdk_fixtures.threshold_graph`` (labels from HU thresholds), so label differences come only from HU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from scipy import ndimage

from liverlesion.errors import ExportError, InputError
from liverlesion.export.resampling_graph import HU_MODEL, LABELS_INPUT, wrap_with_resampling
from liverlesion.grid import AIR_HU, ModelGrid
from liverlesion.grid_affine import slice_to_model_theta
from liverlesion.sdk.geometry import Orientation, to_input, to_model
from sdk_fixtures import THRESHOLD_GRID, threshold_graph

GRID = THRESHOLD_GRID  # 128 x 128 at 2 mm: a 254 mm field
#: (shape, spacing, orientation, rescale): smaller than the field (fill around it), larger, transposed, flipped.
CASES = [((257, 300), (0.83, 0.77), Orientation(), (1.0, -1024.0)),
         ((512, 512), (0.7, 0.7), Orientation(transpose=True, flip_cols=True), (0.5, -1024.0)),
         ((300, 413), (0.61, 0.93), Orientation(flip_rows=True), (2.0, 0.0)),
         ((384, 290), (0.9, 0.64), Orientation(transpose=True, flip_rows=True), (1.0, -2048.0))]
IDS = ["plain-257x300", "transposed-512x512", "flipped-300x413", "transposed-flipped-384x290"]


@pytest.fixture(scope="module")
def fused(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    return onnx.load(str(threshold_graph(tmp_path_factory.mktemp("fused") / "model_fp32.onnx")))


@pytest.fixture(scope="module")
def wrapped(fused: onnx.ModelProto) -> dict[str, onnx.ModelProto]:
    return {back: wrap_with_resampling(fused, GRID, fill_hu=AIR_HU, labels_count=5, back=back, debug=True)
            for back in ("labels", "probabilities")}


def _ort(model: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(names, feeds), strict=True))


def _openvino(model: onnx.ModelProto):
    ov = pytest.importorskip("openvino", reason="needs OpenVINO: pip install 'liverlesion[openvino]'")
    core = ov.Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                                  {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"})

    def run(feeds):
        result = compiled(feeds)
        return {name: np.asarray(result[o]) for o in compiled.outputs for name in o.get_names()}
    return run


RUNTIMES = {"onnxruntime": _ort, "openvino": _openvino}


def _slice(shape, seed: int) -> np.ndarray:
    """CT-like HU: smooth tissue from -1100 to 800 HU (every threshold label, many borders), plus noise."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape), 8)
    field = field / np.abs(field).max() * 950.0 - 150.0
    return (field + rng.normal(0.0, 20.0, shape)).astype(np.float32)


def _stored(hu: np.ndarray, rescale: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Integer stored pixels and the HU they stand for (pixels * slope + intercept, as a decoder computes it)."""
    slope, intercept = rescale
    pixels = np.round((hu - intercept) / slope)
    return pixels.astype(np.float32), (pixels * slope + intercept).astype(np.float32)


def _feeds(pixels: np.ndarray, rescale, shape, spacing, orientation) -> dict[str, np.ndarray]:
    theta, theta_back = slice_to_model_theta(shape, spacing, orientation, GRID)
    return {"pixels": pixels[None, None], "rescale": np.array([rescale], np.float32),
            "theta": theta[None], "theta_back": theta_back[None]}


def _near_tie(shape, spacing, orientation: Orientation, tol: float = 1e-3) -> np.ndarray:
    """Stored pixels whose float64 model coordinate (either axis) is within ``tol`` px of a half-pixel tie or
    of the grid's first or last pixel centre: where nearest neighbour may rightly go either way."""
    canonical = []
    for n, mm, m, m_mm in zip(orientation.canonical_shape(shape), orientation.canonical_spacing(spacing),
                              GRID.size, GRID.spacing_mm):
        c = (np.arange(n) - (n - 1) / 2) * mm / m_mm + (m - 1) / 2
        canonical.append((np.abs(c % 1 - 0.5) < tol) | (np.abs(c) < tol) | (np.abs(c - (m - 1)) < tol))
    return orientation.from_canonical(canonical[0][:, None] | canonical[1][None, :])


@pytest.fixture(scope="module")
def reference_labels(fused: onnx.ModelProto):
    run = _ort(fused)
    return lambda hu: run({"hu": hu[None, None]})["labels"][0]


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
@pytest.mark.parametrize("shape, spacing, orientation, rescale", CASES, ids=IDS)
def test_the_wrapped_graph_matches_todays_host_path(wrapped, reference_labels, runtime, shape, spacing,
                                                    orientation, rescale):
    pixels, hu = _stored(_slice(shape, seed=shape[0]), rescale)
    out = RUNTIMES[runtime](wrapped["labels"])(_feeds(pixels, rescale, shape, spacing, orientation))
    # (a) model grid: the HU the fused graph sees, and its labels
    hu_today = to_model(hu, spacing, orientation, GRID)
    assert np.abs(out[HU_MODEL][0, 0] - hu_today).max() <= 0.2
    labels_today = reference_labels(hu_today)
    assert (out["labels"][0] == labels_today).mean() >= 0.999
    # (b) stored grid: the way back of the graph's own labels differs from to_input only at near-ties...
    assert out[LABELS_INPUT].shape == (1, *shape) and out[LABELS_INPUT].dtype == np.int32
    back_of_own, _ = to_input(out["labels"][0], GRID, shape, spacing, orientation, fill=0)
    assert not ((out[LABELS_INPUT][0] != back_of_own) & ~_near_tie(shape, spacing, orientation)).any()
    # ... and end to end it agrees with today's labels on the stored grid
    back_today, _ = to_input(labels_today, GRID, shape, spacing, orientation, fill=0)
    assert (out[LABELS_INPUT][0] == back_today).mean() >= 0.999


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
@pytest.mark.parametrize("shape, spacing, orientation, rescale", CASES[1:3], ids=IDS[1:3])
def test_hu_stay_within_0_2_of_todays_on_a_rough_slice(wrapped, runtime, shape, spacing, orientation, rescale):
    # pixel-to-pixel noise of 500 HU: the worst case for float32 sample coordinates (a smooth slice is ~0.003 HU)
    noise = np.random.default_rng(3).normal(0.0, 500.0, shape).astype(np.float32)
    pixels, hu = _stored(noise, rescale)
    out = RUNTIMES[runtime](wrapped["labels"])(_feeds(pixels, rescale, shape, spacing, orientation))
    assert np.abs(out[HU_MODEL][0, 0] - to_model(hu, spacing, orientation, GRID)).max() <= 0.2


@pytest.mark.parametrize("shape, spacing, orientation, rescale", CASES[:2], ids=IDS[:2])
def test_the_fill_is_air_outside_the_slice_and_background_outside_the_grid(wrapped, shape, spacing, orientation,
                                                                           rescale):
    pixels, _ = _stored(_slice(shape, seed=1), rescale)
    out = _ort(wrapped["labels"])(_feeds(pixels, rescale, shape, spacing, orientation))
    outside_slice = to_model(np.zeros(shape, np.float32), spacing, orientation, GRID) == AIR_HU
    outside_grid = to_input(np.ones(GRID.size, np.int32), GRID, shape, spacing, orientation, fill=0)[0] == 0
    assert outside_slice.any() != outside_grid.any()  # the first case is smaller than the field, the second larger
    assert np.all(out[HU_MODEL][0, 0][outside_slice] == AIR_HU)
    assert np.all(out[LABELS_INPUT][0][outside_grid] == 0)


def test_sampling_the_probabilities_back_gives_the_same_labels(wrapped):
    shape, spacing, orientation, rescale = CASES[3]
    pixels, _ = _stored(_slice(shape, seed=5), rescale)
    feeds = _feeds(pixels, rescale, shape, spacing, orientation)
    by_labels, by_probabilities = (_ort(wrapped[back])(feeds)[LABELS_INPUT] for back in ("labels", "probabilities"))
    assert np.array_equal(by_labels, by_probabilities)


def test_each_slice_of_a_batch_gets_its_own_rescale_and_affine(wrapped):
    shape = (260, 270)
    geometries = [((0.8, 0.8), Orientation(), (1.0, -1024.0)), ((0.66, 0.9), Orientation(True, True, False),
                                                                (0.5, 0.0))]
    run = _ort(wrapped["labels"])
    singles, stacked = [], {"pixels": [], "rescale": [], "theta": [], "theta_back": []}
    for seed, (spacing, orientation, rescale) in enumerate(geometries):
        pixels, _ = _stored(_slice(shape, seed=seed), rescale)
        feeds = _feeds(pixels, rescale, shape, spacing, orientation)
        singles.append(run(feeds))
        for name, value in feeds.items():
            stacked[name].append(value)
    batch = run({name: np.concatenate(values) for name, values in stacked.items()})
    assert not np.array_equal(singles[0][LABELS_INPUT], singles[1][LABELS_INPUT])
    for index, single in enumerate(singles):
        for name in ("labels", LABELS_INPUT):
            assert np.array_equal(batch[name][index], single[name][0]), name
        np.testing.assert_allclose(batch["probabilities"][index], single["probabilities"][0], atol=1e-6)


def test_the_io_is_as_documented(wrapped, fused):
    model = wrap_with_resampling(fused, GRID, fill_hu=AIR_HU, labels_count=5)
    inputs = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
    assert inputs == {"pixels": ["N", 1, "H", "W"], "rescale": ["N", 2], "theta": ["N", 2, 3],
                      "theta_back": ["N", 2, 3]}
    assert [o.name for o in model.graph.output] == ["labels", "probabilities", LABELS_INPUT]
    assert [o.name for o in wrapped["labels"].graph.output][-1] == HU_MODEL
    assert {n.op_type for n in model.graph.node} >= {"GridSample", "Softmax"}
    assert "AffineGrid" not in {n.op_type for n in model.graph.node}  # TensorRT's parsers refuse it


def _renamed_output(model: onnx.ModelProto, old: str, new: str) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
    for value in copy.graph.output:
        if value.name == old:
            value.name = new
    return copy


def _extra_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.node.append(onnx.helper.make_node("Identity", ["labels"], [name]))
    copy.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT32, None))
    return copy


@pytest.mark.parametrize("change, match", [
    (lambda m: _renamed_output(m, "probabilities", "probs"), "'probabilities'"),
    (lambda m: _extra_output(m, "labels_input"), "clash"),
])
def test_a_fused_graph_that_does_not_fit_is_an_export_error(fused, change, match):
    with pytest.raises(ExportError, match=match):
        wrap_with_resampling(change(fused), GRID, fill_hu=AIR_HU, labels_count=5)


def test_a_fused_graph_for_another_grid_or_opset_is_an_export_error(fused):
    with pytest.raises(ExportError, match="shape"):
        wrap_with_resampling(fused, ModelGrid((96, 128), (2.0, 2.0)), fill_hu=AIR_HU, labels_count=5)
    with pytest.raises(ExportError, match="shape"):
        wrap_with_resampling(fused, GRID, fill_hu=AIR_HU, labels_count=4)
    with pytest.raises(ExportError, match="opset 17"):
        wrap_with_resampling(fused, GRID, fill_hu=AIR_HU, labels_count=5, opset=18)


@pytest.mark.parametrize("kwargs, match", [
    ({"fill_hu": float("nan")}, "fill_hu"), ({"fill_hu": None}, "fill_hu"), ({"labels_count": 1}, "labels_count"),
    ({"opset": 20}, "opset"), ({"back": "bilinear"}, "back"), ({"grid": (128, 128)}, "ModelGrid"),
    ({"fused": b"onnx"}, "ModelProto")])
def test_bad_arguments_are_input_errors(fused, kwargs, match):
    args = {"fused": fused, "grid": GRID, "fill_hu": AIR_HU, "labels_count": 5, **kwargs}
    with pytest.raises(InputError, match=match):
        wrap_with_resampling(args.pop("fused"), args.pop("grid"), **args)


# -- NVIDIA's parser: parse and build only (no Runtime: that needs a GPU) -----------------------------------------
needs_rtx = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                               reason="tensorrt_rtx cannot be imported: pip install 'liverlesion[tensorrt-rtx]'")
MAX_BATCH = 8


@pytest.mark.tensorrt_rtx
@needs_rtx
def test_tensorrt_rtx_parses_and_builds_it_for_256_to_1024_per_side(fused, tmp_path: Path):
    import tensorrt_rtx as trt

    model = wrap_with_resampling(fused, GRID, fill_hu=AIR_HU, labels_count=5)
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(model.SerializeToString()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    samplers = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type == trt.LayerType.GRID_SAMPLE:
            layer.__class__ = trt.IGridSampleLayer  # the parser hands out base-class layers
            samplers.append((layer.interpolation_mode, layer.sample_mode, layer.align_corners))
    # bilinear forward, nearest back, both clamped at the border with align_corners (TensorRT 10 read opset 20's
    # "linear" as nearest: this is what would catch it)
    assert sorted(samplers, key=str) == sorted([(trt.InterpolationMode.LINEAR, trt.SampleMode.CLAMP, True),
                                                (trt.InterpolationMode.NEAREST, trt.SampleMode.CLAMP, True)], key=str)
    profile = builder.create_optimization_profile()
    shapes = {"pixels": ((1, 1, 256, 256), (1, 1, 512, 512), (MAX_BATCH, 1, 1024, 1024)),
              "rescale": ((1, 2), (1, 2), (MAX_BATCH, 2)), "theta": ((1, 2, 3), (1, 2, 3), (MAX_BATCH, 2, 3)),
              "theta_back": ((1, 2, 3), (1, 2, 3), (MAX_BATCH, 2, 3))}
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, trt.Dims(list(low)), trt.Dims(list(opt)), trt.Dims(list(high)))
    config = builder.create_builder_config()
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    assert engine is not None and engine.nbytes > 0
