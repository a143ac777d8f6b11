"""Engines of the slice graph (issue 14): the build plan as data, a real TensorRT-RTX build on this CPU, and
the TensorRT backend binding four dynamic inputs against a fake TensorRT (tests/trt_fakes.py's machine)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from engine_fixtures import GRID, make_engine_package
from liverlesion.backends.choice import Choice, Selection
from liverlesion.backends.tensorrt import TensorRTBackend
from liverlesion.engines.plan import BuildOptions, plan_build
from liverlesion.engines.records import add_engine_record, make_record, select_engine
from liverlesion.errors import EngineError, InputError
from liverlesion.export.slice_graphs import add_slice_graphs
from liverlesion.machine.probe import Machine
from liverlesion.package import load_package
from liverlesion.package.store import read_manifest
from liverlesion.sdk.slice_graph import with_graph
from trt_fakes import FakeDevice, stand_in_orin

needs_rtx = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                               reason="tensorrt_rtx cannot be imported: pip install 'liverlesion[tensorrt-rtx]'")
SLICE_INPUTS = ("pixels", "rescale", "theta", "theta_back")


@pytest.fixture(scope="module")
def sliced_root(tmp_path_factory):
    """The engine-test package (non-square 48 x 64 grid) with its slice graphs."""
    root = make_engine_package(tmp_path_factory.mktemp("slice-engines") / "pkg")
    add_slice_graphs(root)
    return root


def _plan(root, trt="10.3.0.30", **options):
    defaults = {"precision": "fp16", "compute_capability": (8, 7), "graph": "slice"}
    return plan_build(trt, BuildOptions(**{**defaults, **options}), read_manifest(root))


# -- the plan, as data ----------------------------------------------------------------------------------
def test_a_slice_graph_plan_profiles_all_four_inputs_and_builds_from_the_slice_file(sliced_root):
    plan = _plan(sliced_root, max_batch=4, opt_batch=2)
    profiles = {p.input: p for p in plan.profiles}
    assert tuple(profiles) == SLICE_INPUTS
    assert profiles["pixels"].min == (1, 1, 256, 256) and profiles["pixels"].opt == (2, 1, 512, 512)
    assert profiles["pixels"].max == (4, 1, 1024, 1024)
    assert profiles["theta"].min == (1, 2, 3) and profiles["theta_back"].max == (4, 2, 3)
    assert profiles["rescale"].opt == (2, 2)
    assert plan.onnx == "model_slice_fp16.onnx" and plan.graph == "slice" and "slice" in plan.engine_file
    assert plan.to_dict()["extra_profiles"][0]["input"] == "rescale"
    custom = _plan(sliced_root, slice_sides=(128, 256, 768))
    assert {p.input: p for p in custom.profiles}["pixels"].max == (8, 1, 768, 768)


def test_the_model_grid_plan_is_unchanged_by_slice_graphs(sliced_root):
    plan = _plan(sliced_root, graph="model-grid")
    assert plan.extra_profiles == () and plan.profile.input == "hu" and plan.profile.max == (8, 1, *GRID)
    assert plan.onnx == "model_fp16.onnx" and "slice" not in plan.engine_file


@pytest.mark.parametrize("options, message", [
    ({"graph": "resampled"}, "graph 'resampled'"),
    ({"dla_core": 0}, "DLA runs no GridSample"),
])
def test_slice_graph_refusals_say_what_to_build_instead(sliced_root, options, message):
    with pytest.raises(EngineError, match=message):
        _plan(sliced_root, **options)


def test_tensorrt_8_keeps_the_host_path(sliced_root):
    with pytest.raises(EngineError, match="JetPack 5 keeps the host path"):
        _plan(sliced_root, trt="8.5.2.2")
    assert _plan(sliced_root, trt="8.5.2.2", graph="model-grid").code_path  # the fused graph still builds


def test_a_package_without_slice_graphs_names_the_command(tmp_path):
    root = make_engine_package(tmp_path / "pkg")
    with pytest.raises(EngineError, match="liverlesion slice-graphs"):
        _plan(root)


# -- a real build by NVIDIA's builder ----------------------------------------------------------------------
@needs_rtx
@pytest.mark.tensorrt_rtx
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_tensorrt_rtx_builds_the_slice_graph_and_records_its_graph(sliced_root, tmp_path, monkeypatch, precision):
    import shutil

    from liverlesion.engines.build import build_engine
    from liverlesion.machine.runtimes import tensorrt_rtx_version

    monkeypatch.setenv("LIVERLESION_NO_GPU", "1")
    root = tmp_path / "pkg"
    shutil.copytree(sliced_root, root)
    plan = plan_build(tensorrt_rtx_version(), BuildOptions(precision=precision, runtime="tensorrt-rtx",
                                                           compute_capabilities=("8.6",), graph="slice"),
                      read_manifest(root))
    record = build_engine(root, plan, log=lambda line: None)
    stored = load_package(root).manifest.engines
    assert [(r.file, r.graph) for r in stored] == [(record.file, "slice")]
    assert record.onnx.startswith("model_slice_") and record.size > 1000
    picked, _ = select_engine(stored, precision, tensorrt_rtx_version(), (8, 6), runtime="tensorrt-rtx")
    assert picked is None  # a model-grid request never gets a slice-graph engine
    picked, _ = select_engine(stored, precision, tensorrt_rtx_version(), (8, 6), runtime="tensorrt-rtx",
                              graph="slice")
    assert picked is not None and picked.file == record.file


# -- the TensorRT backend on a fake TensorRT -----------------------------------------------------------------
def _reference(feeds):
    """What the fake slice engine computes, written apart from it: HU on the stored grid above 0 is label 1."""
    hu = feeds["pixels"][:, 0] * feeds["rescale"][:, 0, None, None] + feeds["rescale"][:, 1, None, None]
    return (hu > 0).astype(np.int32)


class _SliceContext:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses, self.shape_calls = engine, {}, {}, []

    def set_input_shape(self, name, shape):
        self.shape_calls.append((name, tuple(shape)))
        low, _, high = self.engine.get_tensor_profile_shape(name, 0)
        if not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        n, _, h, w = self.shapes["pixels"]
        rows, cols = GRID
        return {**self.shapes, "labels": (n, rows, cols), "probabilities": (n, 5, rows, cols),
                "labels_input": (n, h, w)}[name]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream):
        buffers = self.engine.dev.buffers
        feeds = {}
        for name in SLICE_INPUTS:
            shape = self.shapes[name]
            feeds[name] = buffers[self.addresses[name]][: int(np.prod(shape)) * 4].view(np.float32).reshape(shape)
        out = _reference(feeds)
        buffers[self.addresses["labels_input"]][: out.nbytes] = out.reshape(-1).view(np.uint8)
        return True


class _SliceEngine:
    names = (*SLICE_INPUTS, "labels", "probabilities", "labels_input")
    num_io_tensors = len(names)

    def __init__(self, dev):
        self.dev = dev

    def get_tensor_name(self, index):
        return self.names[index]

    def get_tensor_mode(self, name):
        return "input" if name in SLICE_INPUTS else "output"

    def get_tensor_dtype(self, name):
        return np.int32 if name in ("labels", "labels_input") else np.float32

    def get_tensor_profile_shape(self, name, profile):
        tails = {"pixels": ((1, 256, 256), (1, 512, 512), (1, 1024, 1024)), "rescale": ((2,),) * 3,
                 "theta": ((2, 3),) * 3, "theta_back": ((2, 3),) * 3}[name]
        return [(1, *tails[0]), (1, *tails[1]), (4, *tails[2])]

    def create_execution_context(self):
        self.context = _SliceContext(self)
        return self.context


@pytest.fixture
def slice_machine(monkeypatch, sliced_root, tmp_path):
    """An Orin with a fake TensorRT whose plans are slice-graph engines, and a package recording one."""
    import shutil
    import sys

    device = FakeDevice()
    stand_in_orin(monkeypatch, device)
    trt = sys.modules["tensorrt"]

    class Runtime:
        def __init__(self, logger):
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data):
            device.engine = _SliceEngine(device)
            return device.engine

    monkeypatch.setattr(trt, "Runtime", Runtime)
    root = tmp_path / "pkg"
    shutil.copytree(sliced_root, root)
    plan = _plan(root, max_batch=4)
    (root / plan.engine_file).parent.mkdir(exist_ok=True)
    (root / plan.engine_file).write_bytes(b"FAKEPLAN" + b"\0" * 64)
    add_engine_record(root, make_record(root, plan.engine_file, plan.to_dict(), gpu_name="Orin"))
    return device, root


def _feeds(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    theta = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (n, 1, 1))
    return {"pixels": rng.uniform(800, 1300, (n, 1, h, w)).astype(np.float32),
            "rescale": np.tile(np.array([[1.0, -1024.0]], np.float32), (n, 1)), "theta": theta,
            "theta_back": theta.copy()}


def test_the_backend_binds_four_inputs_of_changing_size(slice_machine):
    device, root = slice_machine
    with TensorRTBackend(load_package(root), "fp16", graph="slice") as backend:
        assert backend.graph == "slice" and backend.max_batch == 4 and "slice" in backend.record.file
        for n, h, w in ((1, 512, 512), (2, 300, 280), (2, 300, 280), (3, 1024, 256)):
            feeds = _feeds(n, h, w, seed=h + n)
            out = backend.infer_slices(feeds)
            assert out["labels_input"].shape == (n, h, w)
            np.testing.assert_array_equal(out["labels_input"], _reference(feeds))
        pixel_calls = [shape for name, shape in device.engine.context.shape_calls if name == "pixels"]
        # load sets the largest shapes; each new size sets them again, a repeated size does not
        assert pixel_calls == [(4, 1, 1024, 1024), (1, 1, 512, 512), (2, 1, 300, 280), (3, 1, 1024, 256)]
        with pytest.raises(EngineError, match="'pixels' of shape"):
            backend.infer_slices(_feeds(1, 1100, 512))  # beyond the profile's 1024
        with pytest.raises(InputError, match="infer_slices"):
            backend.infer(np.zeros((1, 1, *GRID), np.float32))


def test_a_model_grid_request_does_not_take_a_slice_engine(slice_machine):
    _, root = slice_machine
    with pytest.raises(EngineError, match="no fp16 engine in the package runs"):
        TensorRTBackend(load_package(root), "fp16")
    engine = load_package(root).manifest.engines[0].file
    with pytest.raises(EngineError, match="slice graph"):
        TensorRTBackend(load_package(root), "fp16", engine=engine)


def _selection(*choices):
    return Selection(requested={}, candidates=tuple(choices), backends={}, precisions={}, machine=Machine())


def test_graph_choices_filter_engine_choices_by_their_graph(sliced_root):
    manifest = load_package(sliced_root).manifest
    slice_engine = Choice("tensorrt", "fp16", {"engine": "engines/a_slice.engine", "graph": "slice"}, "GPU Orin")
    grid_engine = Choice("tensorrt", "fp16", {"engine": "engines/a.engine"}, "GPU Orin")
    cpu = Choice("onnxruntime", "fp32", {"provider": "cpu"}, "CPU")
    cuda = Choice("onnxruntime", "fp16", {"provider": "cuda"}, "CUDA:0")
    selection = _selection(slice_engine, grid_engine, cuda, cpu)
    auto = with_graph(selection, "auto", manifest).candidates
    assert [c.options.get("graph") for c in auto] == ["slice", None, "slice", None]  # CPU keeps the host path
    assert with_graph(selection, "model-grid", manifest).candidates == (grid_engine, cuda, cpu)
    sliced = with_graph(selection, "slice", manifest).candidates
    assert [c.backend for c in sliced] == ["tensorrt", "onnxruntime", "onnxruntime"]
    assert all(c.options["graph"] == "slice" for c in sliced)
    with pytest.raises(InputError, match="slice-graph engines"):
        with_graph(_selection(slice_engine), "model-grid", manifest)
