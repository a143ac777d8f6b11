"""One contract every backend keeps: its input spec, typed errors on bad input, threads sharing one instance
give what serial calls give, FP32 agreement with a reference, the time of the run, and close.

Run by onnxruntime, torch, OpenVINO (skipped, naming the install line, where absent) and a fake TensorRT
that records what it was asked to do (tests/trt_fakes.py). A new backend adds one entry to ``OPENERS``.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from engine_fixtures import make_engine_package
from liverlesion.backends import Backend
from liverlesion.backends.onnxruntime import OnnxRuntimeBackend
from liverlesion.backends.registry import BACKENDS
from liverlesion.errors import InputError
from liverlesion.package import load_package
from trt_fakes import FakeDevice, add_fake_engine, reference, stand_in_orin


@dataclass
class Opened:
    """A backend under contract, what its outputs must agree with, and the fake device where there is one."""

    backend: Backend
    reference: Callable[[np.ndarray], dict[str, np.ndarray]]
    low: float = -1000.0
    high: float = 400.0
    device: FakeDevice | None = None


def _onnxruntime_fp32(package: Any, request: pytest.FixtureRequest) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    session = OnnxRuntimeBackend(package, "fp32", threads=1)
    request.addfinalizer(session.close)
    return session.infer


def _open_sdk_backend(name: str, sdk_world: Any, request: pytest.FixtureRequest) -> Opened:
    if name == "openvino" and importlib.util.find_spec("openvino") is None:
        pytest.skip(f"OpenVINO is not installed: {BACKENDS['openvino'].install}")
    package = load_package(sdk_world.package)
    request.addfinalizer(package.close)
    from liverlesion.backends.registry import backend_class

    backend = backend_class(name)(package, "fp32", threads=1)
    request.addfinalizer(backend.close)
    return Opened(backend, _onnxruntime_fp32(package, request))


def _open_fake_tensorrt(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Opened:
    from liverlesion.backends.tensorrt import TensorRTBackend

    device = FakeDevice()
    stand_in_orin(monkeypatch, device)
    root = make_engine_package(tmp_path / "pkg")
    add_fake_engine(root)
    package = load_package(root)
    request.addfinalizer(package.close)
    backend = TensorRTBackend(package, "fp16")
    request.addfinalizer(backend.close)
    return Opened(backend, reference, low=-200.0, high=200.0, device=device)


OPENERS = ("onnxruntime", "torch", "openvino", "fake-tensorrt")


@pytest.fixture(params=OPENERS)
def opened(request, sdk_world, tmp_path, monkeypatch) -> Opened:
    if request.param == "fake-tensorrt":
        return _open_fake_tensorrt(tmp_path, monkeypatch, request)
    return _open_sdk_backend(request.param, sdk_world, request)


def batch(opened: Opened, count: int, seed: int = 0) -> np.ndarray:
    rows, cols = opened.backend.package.manifest.grid.size
    rng = np.random.default_rng(seed)
    return rng.uniform(opened.low, opened.high, (count, 1, rows, cols)).astype(np.float32)


def test_the_input_spec_is_the_manifests(opened):
    spec = opened.backend.input_metadata()
    rows, cols = opened.backend.package.manifest.grid.size
    assert (spec.name, spec.dtype, spec.shape) == (opened.backend.package.manifest.input_name, "float32",
                                                   (-1, 1, rows, cols))


def _bad_inputs(rows: int, cols: int) -> list[Any]:
    return [np.zeros((1, 1, rows, cols)),  # float64
            np.zeros((1, 1, rows, cols), np.float16),
            np.zeros((1, 1, rows, cols), np.int16),
            np.zeros((1, rows, cols), np.float32),  # no channel
            np.zeros((1, 2, rows, cols), np.float32),
            np.zeros((1, 1, rows + 1, cols), np.float32),
            np.zeros((1, 1, rows, cols - 1), np.float32),
            np.zeros((0, 1, rows, cols), np.float32),  # empty batch
            [[0.0]], None, "slice"]


def test_bad_input_is_a_typed_error_before_the_runtime_sees_it(opened):
    rows, cols = opened.backend.package.manifest.grid.size
    enqueued = None if opened.device is None else opened.device.enqueues
    for bad in _bad_inputs(rows, cols):
        with pytest.raises(InputError, match="float32 of shape"):
            opened.backend.infer(bad)  # type: ignore[arg-type]
    if opened.backend.max_batch is not None:
        with pytest.raises(InputError, match="maximum batch"):
            opened.backend.infer(batch(opened, opened.backend.max_batch + 1))
    if opened.device is not None:
        assert opened.device.enqueues == enqueued  # nothing reached the (fake) GPU


def test_outputs_agree_with_the_fp32_reference_and_the_run_is_timed(opened):
    hu = batch(opened, 3, seed=1)
    assert np.isnan(opened.backend.last_inference_time())
    out = opened.backend.infer(hu)
    assert opened.backend.last_inference_time() > 0
    expected = opened.reference(hu)
    assert out["labels"].dtype == np.int32 and out["labels"].shape == expected["labels"].shape
    np.testing.assert_array_equal(out["labels"], expected["labels"])
    np.testing.assert_allclose(out["probabilities"], expected["probabilities"], atol=1e-4)
    if opened.device is not None:
        assert opened.device.enqueues == 1  # one batch, one enqueue: the fake recorded the call


def test_threads_sharing_one_instance_get_what_serial_calls_get(opened):
    inputs = [batch(opened, n, seed=10 + i) for i, n in enumerate((1, 2, 3, 1, 2, 4, 1, 3))]
    serial = [opened.backend.infer(hu) for hu in inputs]
    results: dict[int, dict[str, np.ndarray]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(offset: int) -> None:
        try:
            start.wait()
            for i in range(offset, len(inputs), 4):
                results[i] = opened.backend.infer(inputs[i])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for i, expected in enumerate(serial):
        np.testing.assert_array_equal(results[i]["labels"], expected["labels"])
        np.testing.assert_allclose(results[i]["probabilities"], expected["probabilities"], atol=1e-6)


def test_close_then_infer_is_a_typed_error(opened):
    hu = batch(opened, 1)
    opened.backend.infer(hu)
    opened.backend.close()
    opened.backend.close()  # twice is harmless
    with pytest.raises(InputError, match="closed"):
        opened.backend.infer(hu)
    if opened.device is not None:
        assert opened.device.freed  # the fake device saw its memory released
