"""The TensorRT backend: every refusal without touching CUDA, the binding logic against a fake TensorRT
(tests/trt_fakes.py), and (where TensorRT and a GPU exist) real engines against onnxruntime.

GPU detection and CUDA memory are tested in test_machine_gpu.py and test_machine_cuda_memory.py."""

from __future__ import annotations

import re
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from engine_fixtures import make_engine_package
from liverlesion.backends import tensorrt as trt_backend
from liverlesion.backends.tensorrt import TensorRTBackend
from liverlesion.engines.plan import BuildOptions, plan_build
from liverlesion.errors import EngineError, InputError, MissingDependencyError
from liverlesion.machine import cuda_memory
from liverlesion.machine.gpu import GpuInfo, detect_gpu
from liverlesion.machine.runtimes import tensorrt_installed
from liverlesion.package import load_package
from liverlesion.package.store import read_manifest
from trt_fakes import (
    ORIN,
    FakeDevice,
    FakeEngine,
    H,
    W,
    add_fake_engine,
    fake_tensorrt,
    hu_batch,
    reference,
    stand_in_orin,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def device():
    return FakeDevice()


@pytest.fixture
def machine(monkeypatch, device):
    """This machine becomes an Orin with TensorRT 10.3.0.30 and fake device memory."""
    stand_in_orin(monkeypatch, device)
    return device


@pytest.fixture
def package(tmp_path):
    root = make_engine_package(tmp_path / "pkg")
    add_fake_engine(root)
    return load_package(root)


# -- running, against the fake -----------------------------------------------------------------------
def test_every_batch_size_gives_the_engines_outputs(machine, package):
    with TensorRTBackend(package, "fp16") as backend:
        assert backend.max_batch == 8 and backend.record.file == "engines/joint_fp16_sm87_trt10.3.0.engine"
        for n in (1, 3, 8, 2):
            hu = hu_batch(n, seed=n)
            out = backend.infer(hu)
            expected = reference(hu)
            assert out["labels"].dtype == np.int32 and out["labels"].shape == (n, H, W)
            np.testing.assert_array_equal(out["labels"], expected["labels"])
            np.testing.assert_allclose(out["probabilities"], expected["probabilities"])
            assert not any(np.shares_memory(out["labels"], t.host) for t in backend._tensors.values())
        with pytest.raises(InputError, match="maximum batch 8"):
            backend.infer(hu_batch(9))
        assert "Orin" in backend.device and "10.3.0.30" in backend.device


def test_input_shape_set_only_when_the_batch_changes(machine, package):
    with TensorRTBackend(package, "fp16") as backend:
        for n in (2, 2, 3, 3, 2):
            backend.infer(hu_batch(n))
        assert machine.engine.context.shape_calls == [(8, 1, H, W), (2, 1, H, W), (3, 1, H, W), (2, 1, H, W)]


def test_cuda_graph_captured_after_a_plain_run_and_replayed_with_new_data(machine, package):
    with TensorRTBackend(package, "fp16", cuda_graph_batch=2) as backend:
        assert backend.cuda_graph.status == "waiting"
        for step, n in enumerate((2, 2, 2, 1, 2, 2)):
            hu = hu_batch(n, seed=10 + step)
            np.testing.assert_array_equal(backend.infer(hu)["labels"], reference(hu)["labels"])
        assert backend.cuda_graph.status == "captured"
    # call 1: new shape -> plain; call 2: capture + launch; call 3: launch; batch 1: the graph is destroyed,
    # plain; the next batch-2 call: new shape -> plain; the last call captures anew and launches.
    assert machine.captures == 2 and machine.launches == 3
    assert [g.alive for g in machine.graphs] == [False, True]


def test_cuda_graph_of_the_load_batch_waits_for_one_plain_run(machine, package):
    # The load sets the profile's largest batch (8): asking graphs for 8 must still run plainly first.
    with TensorRTBackend(package, "fp16", cuda_graph_batch=8) as backend:
        for seed in range(3):
            hu = hu_batch(8, seed=seed)
            np.testing.assert_array_equal(backend.infer(hu)["labels"], reference(hu)["labels"])
    assert machine.events == ["enqueue", "sync", "begin-capture", "enqueue", "end-capture", "launch", "sync",
                              "launch", "sync"]


def test_cuda_graph_dropped_when_the_batch_changes(machine, package):
    with TensorRTBackend(package, "fp16", cuda_graph_batch=8) as backend:
        for step, n in enumerate((8, 8, 2, 8, 8)):
            hu = hu_batch(n, seed=step)
            np.testing.assert_array_equal(backend.infer(hu)["labels"], reference(hu)["labels"])
        first, second = machine.graphs
        assert not first.alive and second.alive  # the graph of before the batch-2 call is gone, a new one runs
        assert machine.events[-3:] == ["end-capture", "launch", "sync"]
    # 8: plain; 8: capture + launch; 2: graph destroyed, plain; 8: plain (new shape); 8: capture + launch
    assert machine.events.count("destroy-graph") == 1 and machine.launches == 2


@pytest.mark.parametrize("fail, reason", [
    ("begin", "capture did not start.*operation not supported"),
    ("enqueue", "enqueue failed while being captured"),
    ("enqueue-invalidates", "enqueue failed while being captured"),  # the first error is kept, not the end's
    ("end", "graph could not be made.*cudaStreamEndCapture"),
])
def test_failed_capture_falls_back_to_plain_execution_for_good(machine, package, caplog, fail, reason):
    machine.fail = fail
    caplog.set_level("WARNING", logger="liverlesion.backends.tensorrt")
    with TensorRTBackend(package, "fp16", cuda_graph_batch=2) as backend:
        for step, n in enumerate((2, 2, 2, 3, 2, 2, 2)):
            hu = hu_batch(n, seed=step)
            np.testing.assert_array_equal(backend.infer(hu)["labels"], reference(hu)["labels"])
        state = backend.cuda_graph
        assert state.status == "failed" and state.batch == 2
        assert re.search(reason, state.reason)
    assert machine.events.count("begin-capture") == 1  # tried once, never again (not even after new shapes)
    assert machine.capturing is None  # the stream left capture mode
    assert machine.launches == 0 and not any(g.alive for g in machine.graphs)  # nothing launched nor leaked
    warnings = [r for r in caplog.records if r.name == "liverlesion.backends.tensorrt"]
    assert len(warnings) == 1 and re.search(reason, warnings[0].getMessage())


def test_cuda_graph_state_when_not_asked(machine, package):
    with TensorRTBackend(package, "fp16") as backend:
        backend.infer(hu_batch(2))
        backend.infer(hu_batch(2))
        assert backend.cuda_graph.status == "off" and backend.cuda_graph.batch is None
    assert machine.events.count("begin-capture") == 0


def test_static_profile_pads_small_batches(machine, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(machine, profile=(2, 2)))
    root = make_engine_package(tmp_path / "pkg")
    add_fake_engine(root, trt="10.3.0.30", dla_core=0, opt_batch=2)
    with TensorRTBackend(load_package(root), "fp16") as backend:
        assert backend.max_batch == 2 and backend.record.dla_core == 0
        hu = hu_batch(1)
        np.testing.assert_array_equal(backend.infer(hu)["labels"], reference(hu)["labels"])
        assert "DLA core 0" in backend.device


def test_threads_share_one_context_safely(machine, package):
    with TensorRTBackend(package, "fp16") as backend:
        failures = []

        def work(seed):
            for i in range(15):
                hu = hu_batch(1 + (seed + i) % 4, seed=100 * seed + i)
                if not np.array_equal(backend.infer(hu)["labels"], reference(hu)["labels"]):
                    failures.append((seed, i))

        threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []


def test_close_frees_device_memory(machine, package):
    backend = TensorRTBackend(package, "fp16")
    backend.infer(hu_batch(1))
    backend.close()
    assert machine.freed
    with pytest.raises(InputError, match="closed"):
        backend.infer(hu_batch(1))


# -- refusals, none of which may reach CUDA ---------------------------------------------------------
@pytest.fixture
def no_cuda(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("CUDA memory was opened before the engine was checked")

    monkeypatch.setattr(trt_backend, "open_cuda_memory", forbidden)


def test_package_without_engines(machine, no_cuda, tmp_path):
    package = load_package(make_engine_package(tmp_path / "pkg"))
    with pytest.raises(EngineError, match=r"no fp16 TensorRT engine.*liverlesion build-engine"):
        TensorRTBackend(package, "fp16")
    assert TensorRTBackend.engine_for(package, "fp16")[0] is None


@pytest.mark.parametrize("version, message", [("10.4.0.26", "10.3.0.30.*10.4.0.26"),
                                               ("10.3.0.26", "rebuild"), ("8.5.2.2", "build-engine")])
def test_engine_from_another_tensorrt(monkeypatch, machine, no_cuda, package, version, message):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(machine, version=version))
    with pytest.raises(EngineError, match=message):
        TensorRTBackend(package, "fp16")


def test_engine_from_another_gpu(monkeypatch, machine, no_cuda, package):
    monkeypatch.setattr(trt_backend, "detect_gpu", lambda index=0: GpuInfo(0, "RTX 3080", (8, 6), 10 * 2**30))
    with pytest.raises(EngineError, match=r"sm87.*sm86.*rebuild"):
        TensorRTBackend(package, "fp16")


def test_changed_engine_bytes(machine, no_cuda, package):
    record = TensorRTBackend.engine_for(package, "fp16")[0]
    path = package.path(record.file)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(EngineError, match=r"does not match its record.*sha256.*build-engine"):
        TensorRTBackend(package, "fp16")


def test_missing_tensorrt(monkeypatch, no_cuda, package):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"liverlesion\[tensorrt\]"):
        TensorRTBackend(package, "fp16")


def test_type_stubs_are_not_tensorrt(monkeypatch, no_cuda, package):
    stub = types.ModuleType("tensorrt")  # what `import tensorrt` gives where only tensorrt-stubs is installed
    stub.__path__ = ["/site-packages/tensorrt"]
    monkeypatch.setitem(sys.modules, "tensorrt", stub)
    with pytest.raises(MissingDependencyError, match="not NVIDIA's TensorRT"):
        TensorRTBackend(package, "fp16")
    assert not tensorrt_installed()


def test_no_driver(monkeypatch, machine, no_cuda, package):
    monkeypatch.setattr(trt_backend, "detect_gpu", lambda index=0: None)
    with pytest.raises(EngineError, match="needs an NVIDIA GPU"):
        TensorRTBackend(package, "fp16")


def test_unknown_or_mismatched_engine_file(machine, no_cuda, package):
    with pytest.raises(EngineError, match=r"no engine 'engines/other.engine'"):
        TensorRTBackend(package, "fp16", engine="engines/other.engine")
    with pytest.raises(EngineError, match="is fp16, and int8 was asked for"):
        TensorRTBackend(package, "int8", engine="engines/joint_fp16_sm87_trt10.3.0.engine")


def test_undeserialisable_plan_frees_what_it_took(machine, tmp_path):
    root = make_engine_package(tmp_path / "pkg")
    add_fake_engine(root, payload=b"GARBAGE!")  # its sha256 is right, TensorRT still rejects it
    with pytest.raises(EngineError, match=r"could not deserialise.*build-engine"):
        TensorRTBackend(load_package(root), "fp16")
    assert machine.freed


def test_cuda_graph_batch_outside_the_profile(machine, no_cuda, package):
    with pytest.raises(EngineError, match="CUDA graph batch 9"):
        TensorRTBackend(package, "fp16", cuda_graph_batch=9)


#: An Orin whose driver knows CUDA 11.8 only, under a TensorRT wheel built for CUDA 12.
OLD_DRIVER = GpuInfo(0, "Orin", (8, 7), 8 * 2**30, integrated=True, driver_version=11080)


@pytest.fixture
def trt_needs_cuda12(monkeypatch, machine):
    """The fake TensorRT as if from the tensorrt-cu12 wheel; creating its runtime is a test failure."""
    def no_runtime(logger):
        raise AssertionError("TensorRT was asked to start CUDA with a driver too old for it")

    sys.modules["tensorrt"].Runtime = no_runtime
    monkeypatch.setattr(trt_backend, "runtime_distribution", lambda *modules: "tensorrt-cu12")


def test_driver_older_than_tensorrts_cuda_is_refused_before_tensorrt_runs(monkeypatch, trt_needs_cuda12, no_cuda,
                                                                           package):
    monkeypatch.setattr(trt_backend, "detect_gpu", lambda index=0: OLD_DRIVER)
    with pytest.raises(EngineError, match=r"CUDA 11\.8.*tensorrt-cu12 needs CUDA 12.*update the NVIDIA driver"):
        TensorRTBackend(package, "fp16")
    monkeypatch.setattr(trt_backend, "available_implementations", lambda: ["cuda-python"])
    ok, reason = TensorRTBackend.availability()  # so that backend="auto" never picks it
    assert not ok and "tensorrt-cu11 wheel" in reason


def test_driver_new_enough_for_tensorrts_cuda_runs(monkeypatch, trt_needs_cuda12, package):
    monkeypatch.setattr(trt_backend, "detect_gpu", lambda index=0: GpuInfo(0, "Orin", (8, 7), 8 * 2**30,
                                                                         driver_version=12020))
    with pytest.raises(AssertionError, match="asked to start CUDA"):  # the check let it through to TensorRT
        TensorRTBackend(package, "fp16")


@pytest.mark.parametrize("runtime", [lambda logger: None, TypeError("factory function returned nullptr")])
def test_runtime_that_tensorrt_cannot_create(machine, package, runtime):
    def failing(logger):
        if isinstance(runtime, Exception):
            raise runtime
        return runtime(logger)

    sys.modules["tensorrt"].Runtime = failing
    with pytest.raises(EngineError, match=r"could not create its runtime.*cudaError 35.*update the NVIDIA driver"):
        TensorRTBackend(package, "fp16")
    assert machine.freed


def test_execution_context_that_tensorrt_cannot_create(monkeypatch, machine, package):
    monkeypatch.setattr(FakeEngine, "create_execution_context", lambda self: None)
    with pytest.raises(EngineError, match=r"could not create an execution context.*--max-batch"):
        TensorRTBackend(package, "fp16")
    assert machine.freed


def test_subclass_hooks_create_runtime_and_context(machine, package):
    calls = []

    class Hooked(TensorRTBackend):
        """What a TensorRT-RTX backend overrides: how the runtime and the execution context are made."""

        def _create_runtime(self, trt, logger):
            calls.append("runtime")
            return super()._create_runtime(trt, logger)

        def _create_context(self, engine):
            calls.append("context")
            return engine.create_execution_context()

    with Hooked(package, "fp16") as backend:
        hu = hu_batch(2)
        np.testing.assert_array_equal(backend.infer(hu)["labels"], reference(hu)["labels"])
    assert calls == ["runtime", "context"]


# -- availability ------------------------------------------------------------------------------------
def test_availability(monkeypatch, device):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    ok, reason = TensorRTBackend.availability()
    assert not ok and "liverlesion[tensorrt]" in reason
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(device))
    monkeypatch.setattr(trt_backend, "available_implementations", list)
    ok, reason = TensorRTBackend.availability()
    assert not ok and "cuda-python nor pycuda" in reason
    monkeypatch.setattr(trt_backend, "available_implementations", lambda: ["pycuda"])
    monkeypatch.setattr(trt_backend, "detect_gpu", lambda index=0: None)
    ok, reason = TensorRTBackend.availability()
    assert not ok and "no CUDA GPU" in reason
    monkeypatch.setattr(trt_backend, "detect_gpu", lambda index=0: ORIN)
    ok, reason = TensorRTBackend.availability()
    assert ok and "Orin" in reason and "pycuda" in reason


def test_availability_here_never_crashes():
    ok, reason = TensorRTBackend.availability()
    assert isinstance(ok, bool) and reason


# -- real TensorRT, where it exists ----------------------------------------------------------------------
def _real_tensorrt_here() -> bool:
    return tensorrt_installed() and bool(cuda_memory.available_implementations()) and detect_gpu() is not None


requires_tensorrt = pytest.mark.skipif(
    not _real_tensorrt_here(),
    reason="needs NVIDIA TensorRT, cuda-python or pycuda, and a CUDA GPU (not on this machine)")


def tiny_package(root: Path) -> Path:
    """A package of tiny fused graphs (x/1000 -> 1x1 conv -> softmax, argmax): fp32, fp16 and Q/DQ."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime.quantization")
    from onnx import TensorProto, helper, numpy_helper

    from liverlesion.export.quantize import quantize_int8
    from liverlesion.package import write_manifest
    from liverlesion.package.store import file_record

    make_engine_package(root, fp16=False, int8=False)
    weights = np.array([-3, -1, 0.5, 1.5, 3], np.float32).reshape(5, 1, 1, 1)
    bias = np.array([0, 0.4, 0.2, -0.3, -1.2], np.float32)

    def graph(dtype):
        np_type = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
        # Named as the exporter names the fused graph's nodes: only the network (the Conv) is quantized.
        nodes = [helper.make_node("Cast", ["hu"], ["x0"], "/preprocess/cast", to=dtype),
                 helper.make_node("Mul", ["x0", "scale"], ["x"], "/preprocess/scale"),
                 helper.make_node("Conv", ["x", "w", "b"], ["logits"], "/network/conv"),
                 helper.make_node("Softmax", ["logits"], ["p"], "/postprocess/softmax", axis=1),
                 helper.make_node("Cast", ["p"], ["probabilities"], "/postprocess/cast", to=TensorProto.FLOAT),
                 helper.make_node("ArgMax", ["p"], ["l64"], "/postprocess/argmax", axis=1, keepdims=0),
                 helper.make_node("Cast", ["l64"], ["labels"], "/postprocess/labels", to=TensorProto.INT32)]
        inits = [numpy_helper.from_array(np.array(1e-3, np_type), "scale"),
                 numpy_helper.from_array(weights.astype(np_type), "w"),
                 numpy_helper.from_array(bias.astype(np_type), "b")]
        model = helper.make_model(helper.make_graph(
            nodes, "tiny", [helper.make_tensor_value_info("hu", TensorProto.FLOAT, ["N", 1, H, W])],
            [helper.make_tensor_value_info("labels", TensorProto.INT32, ["N", H, W]),
             helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 5, H, W])], inits),
            opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model

    onnx.save(graph(TensorProto.FLOAT), root / "model_fp32.onnx")
    onnx.save(graph(TensorProto.FLOAT16), root / "model_fp16.onnx")

    # Calibration slices spanning the HU range the test feeds, for both INT8 paths (Q/DQ and 8.x calibrator).
    slices = np.random.default_rng(0).uniform(-1000, 1000, (16, 1, H, W)).astype(np.float32)
    np.save(root / "calibration" / "slices.npy", slices, allow_pickle=False)

    # The exporter's own s8s8 quantization (float biases: NVIDIA's parser refuses an int32 bias DequantizeLinear).
    quantize_int8(root / "model_fp32.onnx", root / "model_int8_qdq_s8s8.onnx", slices, form="s8s8")
    from liverlesion.export.binding import bound_onnx_record
    from liverlesion.package.binding import package_binding

    binding = package_binding(read_manifest(root))  # what the loader checks, with each file's own identity
    data = read_manifest(root).to_dict()
    data["files"] = [f for f in data["files"] if f["role"] not in ("onnx", "calibration")] + [
        file_record(root, "calibration/slices.npy", "calibration").to_dict(),
        bound_onnx_record(root, "model_fp32.onnx", binding, "onnx", "fp32", opset=17, form="float").to_dict(),
        bound_onnx_record(root, "model_fp16.onnx", binding, "onnx", "fp16", opset=17, form="float").to_dict(),
        bound_onnx_record(root, "model_int8_qdq_s8s8.onnx", binding, "onnx", "int8", opset=17,
                          form="qdq-s8s8").to_dict()]
    write_manifest(root, data)
    return root


@pytest.mark.tensorrt
@pytest.mark.slow
@requires_tensorrt
@pytest.mark.parametrize("precision, agreement", [("fp32", 0.999), ("fp16", 0.995), ("int8", 0.95)])
def test_real_engine_agrees_with_onnxruntime_fp32(tmp_path, precision, agreement):
    ort = pytest.importorskip("onnxruntime")
    from liverlesion.engines.build import build_engine
    from liverlesion.engines.versions import installed_tensorrt_version

    root = tiny_package(tmp_path / "pkg")
    gpu = detect_gpu()
    options = BuildOptions(precision, gpu.compute_capability, max_batch=4)
    plan = plan_build(str(installed_tensorrt_version()), options, read_manifest(root))
    build_engine(root, plan, log=lambda message: None)
    hu = np.random.default_rng(3).uniform(-1000, 1000, (4, 1, H, W)).astype(np.float32)
    with TensorRTBackend(load_package(root), precision) as backend:
        got = backend.infer(hu)
        single = backend.infer(hu[:1])
    session = ort.InferenceSession(str(root / "model_fp32.onnx"), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["labels", "probabilities"], {"hu": hu})
    assert (got["labels"] == labels).mean() >= agreement
    np.testing.assert_array_equal(single["labels"], got["labels"][:1])
    assert np.abs(got["probabilities"] - probabilities).max() < (1e-3 if precision == "fp32" else 0.1)


# -- NVIDIA's own ONNX parser on a CPU (TensorRT-RTX), where it is installed --------------------------------
@pytest.mark.tensorrt_rtx
@pytest.mark.parametrize("file", ["model_fp32.onnx", "model_fp16.onnx", "model_int8_qdq_s8s8.onnx"])
def test_tiny_package_graphs_parse_with_nvidias_onnx_parser(tmp_path, file):
    trt = pytest.importorskip("tensorrt_rtx", reason="needs TensorRT-RTX (the tensorrt-rtx extra) for its "
                                                     "ONNX parser, which runs without a GPU")
    onnx = pytest.importorskip("onnx")
    root = tiny_package(tmp_path / "pkg")
    if "int8" in file:  # quantized for real, not left all float by the exporter's exclusions
        assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load(root / file).graph.node}
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    parsed = parser.parse_from_file(str(root / file))
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    assert parsed and errors == []
