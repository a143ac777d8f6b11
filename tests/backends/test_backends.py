"""The backend interface on onnxruntime and the torch reference: outputs, checks, lifetime, threads."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from liverlesion.backends import BACKENDS, Backend, available_backends, backend_class
from liverlesion.backends.onnxruntime import OnnxRuntimeBackend
from liverlesion.backends.torch import TorchBackend
from liverlesion.errors import BackendError, InputError, PackageError
from liverlesion.package import load_package, write_manifest


@pytest.fixture(scope="module")
def package(sdk_world):
    with load_package(sdk_world.package) as opened:
        yield opened


def hu_batch(count: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Random CT-like HU (air to bone) on the model grid."""
    return np.random.default_rng(seed).uniform(-1000.0, 400.0, (count, 1, *size)).astype(np.float32)


def test_the_registry_finds_every_backend_and_says_which_can_run():
    assert backend_class("onnxruntime") is OnnxRuntimeBackend and backend_class("torch") is TorchBackend
    report = available_backends()
    assert set(report) == {"tensorrt", "tensorrt-rtx", "onnxruntime", "openvino", "torch"}
    assert report["onnxruntime"][0] and report["torch"][0]  # both installed in the dev environment
    assert all(isinstance(ok, bool) and isinstance(why, str) and why for ok, why in report.values())
    assert BACKENDS["torch"].install == "pip install 'liverlesion[train]'" and issubclass(TorchBackend, Backend)
    with pytest.raises(BackendError, match="unknown backend"):
        backend_class("onnx")


@pytest.mark.parametrize("cls", [OnnxRuntimeBackend, TorchBackend])
def test_backends_run_the_fused_graph_and_describe_their_input(cls, package):
    rows, cols = package.manifest.grid.size
    with cls(package, "fp32", threads=1) as backend:
        spec = backend.input_metadata()
        assert (spec.name, spec.dtype, spec.shape) == ("hu", "float32", (-1, 1, rows, cols))
        assert np.isnan(backend.last_inference_time())
        out = backend.infer(hu_batch(3, (rows, cols)))
        assert out["labels"].shape == (3, rows, cols) and out["labels"].dtype == np.int32
        assert out["probabilities"].shape == (3, 5, rows, cols) and out["probabilities"].dtype == np.float32
        np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(out["labels"], out["probabilities"].argmax(axis=1))
        assert backend.last_inference_time() > 0 and backend.device == "CPU" and backend.max_batch is None
    with pytest.raises(InputError, match="closed"):
        backend.infer(hu_batch(1, (rows, cols)))


def test_torch_reference_and_fp32_onnx_agree(package):
    hu = hu_batch(4, package.manifest.grid.size, seed=1)
    with OnnxRuntimeBackend(package, "fp32") as ort, TorchBackend(package, threads=1) as ref:
        a, b = ort.infer(hu), ref.infer(hu)
    np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-4)


@pytest.mark.parametrize("cls", [OnnxRuntimeBackend, TorchBackend])
def test_infer_checks_the_batch_against_the_input_spec(cls, package):
    rows, cols = package.manifest.grid.size
    with cls(package, "fp32", threads=1) as backend:
        for bad in (np.zeros((1, 1, rows, cols)), np.zeros((1, rows, cols), np.float32),
                    np.zeros((1, 1, rows + 1, cols), np.float32), np.zeros((0, 1, rows, cols), np.float32),
                    [[0.0]]):
            with pytest.raises(InputError, match="float32 of shape"):
                backend.infer(bad)  # type: ignore[arg-type]


def test_torch_backend_refuses_what_it_cannot_run(package, sdk_world, tmp_path):
    with pytest.raises(BackendError, match="fp32 only"):
        TorchBackend(package, "fp16")
    with load_package(sdk_world.threshold) as weightless, pytest.raises(BackendError, match="no weights"):
        TorchBackend(weightless)
    root = shutil.copytree(sdk_world.package, tmp_path / "package")
    raw = load_package(root).manifest.to_dict()
    raw["input"]["grid"]["size"] = [64, 64]  # the weights were trained on 32 x 32
    write_manifest(root, raw)
    # the loader refuses it (binding); unverified, the torch backend's own check must still catch it
    with load_package(root, verify=False) as changed, pytest.raises(PackageError, match=r"weights do not match.*grid"):
        TorchBackend(changed)


def test_onnxruntime_backend_refuses_providers_it_cannot_start(package, monkeypatch):
    import onnxruntime

    with pytest.raises(BackendError, match="unknown onnxruntime provider"):
        OnnxRuntimeBackend(package, provider="gpu")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(BackendError, match="onnxruntime-gpu"):
            OnnxRuntimeBackend(package, provider="cuda")
        # onnxruntime would fall back to CPU silently if told a provider it cannot start: the backend refuses.
        listed = [*onnxruntime.get_available_providers(), "CUDAExecutionProvider"]
        monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: listed)
        with pytest.raises(BackendError, match="could not start its CUDAExecutionProvider"), \
                pytest.warns(UserWarning, match="not in available provider names"):
            OnnxRuntimeBackend(package, provider="cuda")
    with pytest.raises(BackendError, match="threads"):
        OnnxRuntimeBackend(package, threads=0)
    with pytest.raises(BackendError, match="no int8 ONNX model; it has: fp16, fp32"):
        OnnxRuntimeBackend(package, "int8")


def test_onnxruntime_threads_do_not_spin_unless_asked_and_answer_the_same(package):
    # Spinning idle threads steal the CPU from concurrent callers and the series readers (docs/sdk.md, Threads).
    hu = hu_batch(2, package.manifest.grid.size, seed=3)
    with OnnxRuntimeBackend(package, "fp32") as quiet, OnnxRuntimeBackend(package, "fp32", spinning=True) as spin:
        entries = {backend.spinning: backend._session.get_session_options().get_session_config_entry(
            "session.intra_op.allow_spinning") for backend in (quiet, spin)}
        assert entries == {False: "0", True: "1"}
        np.testing.assert_array_equal(quiet.infer(hu)["probabilities"], spin.infer(hu)["probabilities"])


def test_fp16_onnx_runs_with_float32_input_and_stays_close_to_fp32(package):
    hu = hu_batch(2, package.manifest.grid.size, seed=2)
    with OnnxRuntimeBackend(package, "fp16") as half, OnnxRuntimeBackend(package, "fp32") as full:
        assert half.record.precision == "fp16"
        a, b = half.infer(hu), full.infer(hu)
    assert a["probabilities"].dtype == np.float32
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-2)


def test_torch_backend_is_safe_to_share_between_threads(package):
    batches = [hu_batch(1, package.manifest.grid.size, seed=s) for s in range(4)]
    with TorchBackend(package, threads=1) as backend:
        serial = [backend.infer(b)["probabilities"] for b in batches]
        results: dict[tuple[int, int], np.ndarray] = {}

        def work(thread: int) -> None:
            for k in range(10):
                results[thread, k] = backend.infer(batches[(thread + k) % 4])["probabilities"]

        threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 60
    for (thread, k), probabilities in results.items():
        np.testing.assert_array_equal(probabilities, serial[(thread + k) % 4])
