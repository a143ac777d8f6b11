"""One contract every backend keeps: its input spec, typed errors on bad input, threads sharing one instance
give what serial calls give, FP32 agreement with an independent reference (the torch network for the ONNX
runtimes, onnxruntime for torch), the time of the run, close, and precision targets (each reduced precision
a backend runs agrees with its FP32 as the package's accuracy record of that runtime says).

Run by onnxruntime, torch, OpenVINO (skipped, saying why, where absent) and a fake TensorRT that records
what it was asked to do (tests/trt_fakes.py). A new backend adds one entry to ``OPENERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from concurrency import run_together
from engine_fixtures import make_engine_package
from liverlesion.backends import Backend
from liverlesion.backends.registry import BACKENDS, backend_class
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


def _open(name: str, package: Any, precision: str, request: pytest.FixtureRequest) -> Backend:
    """Backend ``name`` on ``package``, one thread where its row takes threads; closed after the test."""
    usable, why = backend_class(name).availability()
    if not usable:
        pytest.skip(why)
    backend = backend_class(name)(package, precision, **({"threads": 1} if BACKENDS[name].threads else {}))
    request.addfinalizer(backend.close)
    return backend


def _open_sdk_backend(name: str, sdk_world: Any, request: pytest.FixtureRequest) -> Opened:
    package = load_package(sdk_world.package)
    request.addfinalizer(package.close)
    backend = _open(name, package, "fp32", request)
    # the torch reference rebuilds the trained network from its weights: independent of the ONNX graph the
    # others run; torch itself is checked against onnxruntime
    reference = _open("onnxruntime" if name == "torch" else "torch", package, "fp32", request)
    return Opened(backend, reference.infer)


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


def _open_fake_tensorrt_rtx(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                            request: pytest.FixtureRequest) -> Opened:
    from liverlesion.backends.tensorrt_rtx import TensorRTRtxBackend
    from rtx_fakes import add_fake_rtx_engine, stand_in_rtx_workstation

    device = FakeDevice()
    stand_in_rtx_workstation(monkeypatch, device)
    root = make_engine_package(tmp_path / "pkg")
    add_fake_rtx_engine(root)
    package = load_package(root)
    request.addfinalizer(package.close)
    backend = TensorRTRtxBackend(package, "fp16", runtime_cache=tmp_path / "cache")
    request.addfinalizer(backend.close)
    return Opened(backend, reference, low=-200.0, high=200.0, device=device)


OPENERS = ("onnxruntime", "torch", "openvino", "fake-tensorrt", "fake-tensorrt-rtx")


@pytest.fixture(params=OPENERS)
def opened(request, sdk_world, tmp_path, monkeypatch) -> Opened:
    if request.param == "fake-tensorrt":
        return _open_fake_tensorrt(tmp_path, monkeypatch, request)
    if request.param == "fake-tensorrt-rtx":
        return _open_fake_tensorrt_rtx(tmp_path, monkeypatch, request)
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
    def work(offset: int) -> None:
        for i in range(offset, len(inputs), 4):
            results[i] = opened.backend.infer(inputs[i])

    assert run_together(4, work) == []
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


# -- precision targets: what the package's accuracy records claim, re-checked on each backend that runs it -----
#: How far a measured FP32 agreement may fall below the recorded one: the export measured on onnxruntime with
#: its default threads; another CPU's kernels (VNNI or not) may round a few pixels otherwise.
AGREEMENT_SLACK = 0.002


def _reduced(name: str, manifest: Any) -> list[tuple[str, str]]:
    """(precision, record key) of each reduced precision ``name`` runs on this machine that the package records."""
    from liverlesion.backends.choice import Request
    from liverlesion.backends.registry import backend_module, probe_machine
    from liverlesion.package.accuracy import CPU_INT8_FORM, accuracy_key

    machine = probe_machine((name,))
    found = []
    for precision in ("fp16", "int8", "bf16"):
        answer = backend_module(name).candidates(manifest, machine, Request((precision,)))
        runtime = "openvino" if name == "openvino" else None  # OpenVINO's INT8 kernels have their own record
        key = accuracy_key(manifest, precision, CPU_INT8_FORM, runtime)
        record = manifest.accuracy.get(key)
        # a record vouches for what it measured: OpenVINO's name their runtime, onnxruntime's name none
        on_openvino = record is not None and str(record.extra.get("runtime", "")).startswith("openvino")
        if answer.choices and record is not None and on_openvino == (name == "openvino"):
            found.append((precision, key))
    return found


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_reduced_precisions_agree_with_fp32_as_the_package_records(name, export_world, request):
    from liverlesion.export.accuracy import load_eval_set, predict, target_misses
    from liverlesion.metrics import agreement, evaluate_predictions

    package = load_package(export_world.packages["joint"])
    request.addfinalizer(package.close)
    reduced = _reduced(name, package.manifest)
    if not reduced:
        pytest.skip(f"{name} runs no reduced precision of this package on this machine")
    data = load_eval_set(export_world.eval_data, package.manifest.grid)

    def scores(precision: str) -> tuple[np.ndarray, dict[str, Any]]:
        maps, classes = predict("", data.hu, runner=_open(name, package, precision, request).infer)
        return maps, evaluate_predictions(list(maps), list(data.labels), classes, data.classes)

    fp32_maps, fp32 = scores("fp32")
    for precision, key in reduced:
        record = package.manifest.accuracy[key]
        maps, measured = scores(precision)
        assert agreement(maps, fp32_maps) >= record.agreement_with_fp32 - AGREEMENT_SLACK, (name, key)
        # a verdict the record reached with room to spare must hold here too; one at the edge of its target may
        # flip on a few pixels of another thread count or CPU, which the agreement check above already bounds
        if record.meets_target and _margin(record, package.manifest.accuracy["fp32"]) > TARGET_MARGIN:
            assert target_misses(precision, measured, fp32) == [], (name, key)


#: How clearly a record must meet its target for the verdict to be re-checked (score points).
TARGET_MARGIN = 0.005


def _margin(record: Any, fp32: Any) -> float:
    """The smallest room, over the record's targets, between its loss against FP32 and the allowed loss."""
    limits = record.target_max_loss or {}
    room = [float(limit) - (float(getattr(fp32, m)) - float(getattr(record, m))) for m, limit in limits.items()
            if getattr(record, m, None) is not None and getattr(fp32, m, None) is not None]
    return min(room, default=0.0)
