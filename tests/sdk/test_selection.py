"""Backend and precision selection as plain data: hand-made manifests and machines, no runtime needed."""

from __future__ import annotations

from typing import Any

import pytest

from liverlesion.backends.onnxruntime import CPU_PRECISION_ORDER, CPU_PRECISION_ORDER_WITHOUT_CPU_INT8
from liverlesion.backends.onnxruntime import TENSORRT_EP_PRECISION_ORDER as GPU_PRECISION_ORDER
from liverlesion.backends.registry import probe_machine
from liverlesion.errors import BackendError, EngineError, MissingDependencyError
from liverlesion.grid import ModelGrid
from liverlesion.labels import LESION_CLASSES, TARGET_LABELS
from liverlesion.machine.probe import Machine
from liverlesion.package import SCHEMA_NAME, SCHEMA_VERSION, Manifest
from liverlesion.package.accuracy import accuracy_verdict
from liverlesion.preprocessing import Preprocessing
from liverlesion.sdk.selection import select

SHA = "0" * 64
ORIN = {"gpu_name": "Orin", "compute_capability": (8, 7), "tensorrt_version": "10.3.0",
        "tensorrt_backend": (True, "TensorRT with Orin")}
ALL_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
CPU_ONLY = Machine(onnxruntime_version="1.32.0", ort_providers=("CPUExecutionProvider",), torch=True)


def scores(lesion: float, accuracy: float = 0.8, **extra: Any) -> dict[str, Any]:
    return {"lesion_dice": lesion, "liver_dice": 0.9, "accuracy": accuracy, **extra}


def engine(precision: str, cc: str = "8.7", trt: str = "10.3.0") -> dict[str, Any]:
    return {"file": f"engines/{precision}_{cc}.plan", "sha256": SHA, "size": 1, "precision": precision,
            "tensorrt": trt, "gpu": {"name": "Orin", "compute_capability": cc},
            "profile": {"min": [1, 1, 32, 32], "opt": [1, 1, 32, 32], "max": [8, 1, 32, 32]}}


OPENVINO = {"openvino_version": "2026.4.1", "openvino_capabilities": ("FP32", "INT8", "BF16")}
CPU_WITH_OPENVINO = Machine(onnxruntime_version="1.32.0", ort_providers=("CPUExecutionProvider",), torch=True,
                            **OPENVINO)


def manifest(precisions=("fp32", "fp16", "int8"), accuracy: dict | None = None, engines=(),
             weights: bool = True, cpu_int8: dict | None = None) -> Manifest:
    """``cpu_int8``: the accuracy record of a CPU-form INT8 file (u8s8) to add; None adds no such file."""
    files = [{"path": f"model_{p}.onnx", "role": "onnx", "precision": p, "sha256": SHA, "size": 1,
              "form": "qdq-s8s8" if p == "int8" else "float"} for p in precisions]
    if cpu_int8 is not None:
        files.append({"path": "model_int8_u8s8.onnx", "role": "onnx", "precision": "int8", "sha256": SHA,
                      "size": 1, "form": "qdq-u8s8", "accuracy": "int8-u8s8"})
    if weights:
        files.append({"path": "model.safetensors", "role": "weights", "precision": "fp32", "sha256": SHA,
                      "size": 1, "format": "safetensors"})
    if accuracy is None:
        accuracy = {"fp32": scores(0.80),
                    "fp16": scores(0.80, target_max_loss={"lesion_dice": 0.001}, meets_target=True),
                    "int8": scores(0.795, 0.8, meets_target=True, target_misses=[])}
    return Manifest.from_dict({
        "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION,
        "model": {"name": "m", "version": "0", "arch": "joint", "config": {}},
        "input": {"name": "hu", "units": "HU", "grid": ModelGrid((32, 32), (8.0, 8.0)).to_dict()},
        "preprocessing": Preprocessing().to_dict(), "labels": list(TARGET_LABELS),
        "lesion_classes": list(LESION_CLASSES), "files": files,
        "accuracy": accuracy if cpu_int8 is None else {**accuracy, "int8-u8s8": cpu_int8},
        "engines": list(engines),
    })


def plan(selection) -> list[tuple[str, str, str | None]]:
    return [(c.backend, c.precision, c.options.get("provider") or c.options.get("engine")
             or ("build" if c.options.get("build") else None)) for c in selection.candidates]


def test_cpu_only_machine_runs_onnxruntime_cpu_in_the_measured_order_then_torch():
    selection = select(manifest(), CPU_ONLY)
    expected = [("onnxruntime", p, "cpu") for p in CPU_PRECISION_ORDER_WITHOUT_CPU_INT8]
    assert plan(selection) == [*expected, ("torch", "fp32", None)]
    # without the CPU form, neither FP16 nor the TensorRT-form INT8 is faster than FP32 on onnxruntime CPU
    assert CPU_PRECISION_ORDER_WITHOUT_CPU_INT8[0] == "fp32"
    assert "not installed" in selection.backends["openvino"]
    assert selection.backends["tensorrt"].startswith("not used: TensorRT is not installed")
    assert selection.backends["onnxruntime"].startswith("usable: onnxruntime 1.32.0, CPU provider (no GPU)")
    assert selection.chosen is None
    chosen = selection.loaded(selection.candidates[0])
    assert (chosen.backend, chosen.precision) == ("onnxruntime", "fp32")
    assert "onnxruntime 1.32.0" in chosen.summary()


def test_a_reduced_precision_needs_a_recorded_accuracy_that_meets_its_target():
    accuracy = {"fp32": scores(0.80),
                "fp16": scores(0.797, target_max_loss={"lesion_dice": 0.001, "liver_dice": 0.001}),
                "int8": scores(0.70, 0.7, meets_target=False,
                               target_misses=["lesion_dice 0.70 vs FP32 0.80"])}
    m = manifest(accuracy=accuracy)
    assert accuracy_verdict(m, "fp32")[0]
    ok, why = accuracy_verdict(m, "fp16")
    assert not ok and "lesion_dice" in why  # loses 0.3 Dice points > 0.1 (computed from target_max_loss)
    ok, why = accuracy_verdict(m, "int8")
    assert not ok and "misses the export target (lesion_dice 0.70 vs FP32 0.80)" in why
    unrecorded = manifest(accuracy={"fp32": scores(0.8)})
    ok, why = accuracy_verdict(unrecorded, "int8")
    assert not ok and "records no INT8 accuracy" in why
    gpu = Machine(**ORIN, onnxruntime_version="1.20", torch=False, ort_providers=ALL_PROVIDERS)
    selection = select(m, gpu)
    assert [c.precision for c in selection.candidates] == ["fp32"]
    assert "misses the export target" in selection.precisions["int8"]
    assert "loses more than the target on lesion_dice" in selection.precisions["fp16"]
    # asked for explicitly, a precision is used whatever its record says
    assert [c.precision for c in select(m, CPU_ONLY, "onnxruntime", "int8").candidates] == ["int8"]


def test_tensorrt_is_chosen_where_an_engine_fits_this_gpu_and_tensorrt():
    m = manifest(engines=[engine("int8"), engine("fp16"), engine("fp16", cc="8.6")])
    gpu = Machine(**ORIN, onnxruntime_version="1.20",
                  ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"), torch=True)
    selection = select(m, gpu)
    assert plan(selection)[:3] == [("tensorrt", "int8", "engines/int8_8.7.plan"),
                                   ("tensorrt", "fp16", "engines/fp16_8.7.plan"),
                                   ("onnxruntime", "fp16", "cuda")]
    assert plan(selection)[-1] == ("torch", "fp32", None)
    assert "built for this GPU and TensorRT 10.3.0" in selection.candidates[0].reason


def test_engines_for_another_gpu_or_tensorrt_fall_back_to_onnxruntime_saying_why():
    m = manifest(engines=[engine("int8", cc="7.2"), engine("fp16", trt="8.5.2")])
    gpu = Machine(**ORIN, onnxruntime_version="1.20", torch=False, ort_providers=ALL_PROVIDERS)
    selection = select(m, gpu)
    why = selection.backends["tensorrt"]
    assert why.startswith("not used: no TensorRT engine in the package runs here")
    assert "sm72" in why and "TensorRT 8.5.2" in why and "build_engine=True" in why
    assert plan(selection) == [("onnxruntime", p, "tensorrt") for p in GPU_PRECISION_ORDER]
    assert "TensorRT provider" in selection.candidates[0].reason
    built = select(m, gpu, build_engine=True)
    assert plan(built)[:2] == [("tensorrt", "int8", "build"), ("tensorrt", "fp16", "build")]


def test_onnxruntime_gpu_providers_need_a_gpu_and_tensorrt_for_its_provider():
    providers = ALL_PROVIDERS
    no_trt = Machine(gpu_name="A2", compute_capability=(8, 6), onnxruntime_version="1.20",
                     ort_providers=providers)
    cuda = [("onnxruntime", "fp16", "cuda"), ("onnxruntime", "fp32", "cuda")]
    assert plan(select(manifest(), no_trt)) == cuda
    no_gpu = Machine(onnxruntime_version="1.20", ort_providers=providers)
    assert {c.options["provider"] for c in select(manifest(), no_gpu).candidates} == {"cpu"}
    asked = select(manifest(), no_gpu, provider="cuda")
    assert plan(asked) == cuda
    with pytest.raises(BackendError, match=r"no CUDAExecutionProvider.*onnxruntime-gpu"):
        select(manifest(), CPU_ONLY, provider="cuda")
    with pytest.raises(BackendError, match="unknown onnxruntime provider"):
        select(manifest(), CPU_ONLY, provider="rocm")


def test_without_onnxruntime_auto_takes_the_torch_reference():
    machine = Machine(torch=True)
    selection = select(manifest(), machine)
    assert plan(selection) == [("torch", "fp32", None)]
    assert "pip install 'liverlesion[onnxruntime]'" in selection.backends["onnxruntime"]
    with pytest.raises(BackendError, match="no backend can run this package here"):
        select(manifest(weights=False), machine)


def test_explicit_requests_that_cannot_be_met_raise_naming_the_fix():
    with pytest.raises(MissingDependencyError, match=r"liverlesion\[onnxruntime\]"):
        select(manifest(), Machine(torch=True), "onnxruntime")
    with pytest.raises(MissingDependencyError, match=r"liverlesion\[train\]"):
        ort_only = Machine(onnxruntime_version="1.0", ort_providers=("CPUExecutionProvider",))
        select(manifest(), ort_only, "torch")
    with pytest.raises(MissingDependencyError, match=r"liverlesion\[tensorrt\]"):
        select(manifest(), CPU_ONLY, "tensorrt")
    with pytest.raises(EngineError, match="no CUDA GPU"):
        select(manifest(), Machine(tensorrt_backend=(False, "no CUDA GPU found")), "tensorrt")
    with pytest.raises(EngineError, match="no TensorRT engine in the package runs here"):
        select(manifest(), Machine(**ORIN), "tensorrt")
    with pytest.raises(BackendError, match="fp32 only"):
        select(manifest(), CPU_ONLY, "torch", "fp16")
    with pytest.raises(BackendError, match="no int8 model; it has: fp16, fp32"):
        select(manifest(("fp32", "fp16")), CPU_ONLY, precision="int8")
    for kwargs in ({"backend": "onnx"}, {"precision": "fp64"}, {"backend": "torch", "provider": "cpu"}):
        with pytest.raises(BackendError):
            select(manifest(), CPU_ONLY, **kwargs)


def test_probe_machine_reports_what_is_installed_here():
    import onnxruntime

    machine = probe_machine()
    assert machine.onnxruntime_version == onnxruntime.__version__
    assert set(machine.ort_providers) == set(onnxruntime.get_available_providers())
    assert machine.torch is True  # the dev environment has the train extra
    assert isinstance(machine.tensorrt_backend[0], bool) and machine.tensorrt_backend[1]
    only_torch = probe_machine(("torch",))
    assert only_torch.onnxruntime_version is None and only_torch.torch


def test_the_cpu_form_int8_goes_first_on_onnxruntime_cpu_judged_by_its_own_accuracy_record():
    good = scores(0.80, meets_target=True, target_misses=[])
    selection = select(manifest(cpu_int8=good), CPU_ONLY)
    assert plan(selection)[:3] == [("onnxruntime", p, "cpu") for p in CPU_PRECISION_ORDER]
    assert CPU_PRECISION_ORDER[0] == "int8"
    # the TensorRT form meeting its target does not vouch for the CPU form that would run
    bad = scores(0.70, meets_target=False, target_misses=["lesion_dice 0.70 vs FP32 0.80"])
    selection = select(manifest(cpu_int8=bad), CPU_ONLY)
    assert ("onnxruntime", "int8", "cpu") not in plan(selection)
    assert "misses the export target" in selection.precisions["int8"]


def test_without_a_gpu_auto_takes_openvino_first_in_its_measured_order():
    good = scores(0.80, meets_target=True, target_misses=[])
    bf16 = scores(0.80, meets_target=True, target_misses=[])
    m = manifest(cpu_int8=good, accuracy={"fp32": scores(0.80), "int8": good, "bf16": bf16,
                                          "int8-u8s8@openvino": good})
    selection = select(m, CPU_WITH_OPENVINO)
    assert plan(selection)[:4] == [("openvino", "int8", None), ("openvino", "bf16", None),
                                   ("openvino", "fp32", None), ("onnxruntime", "int8", "cpu")]
    assert selection.backends["openvino"].startswith("usable: OpenVINO 2026.4.1")
    # a CPU without BF16 drops bf16; a package without the CPU form drops int8 (OpenVINO refuses s8s8)
    no_bf16 = Machine(**{**CPU_WITH_OPENVINO.__dict__, "openvino_capabilities": ("FP32", "INT8")})
    assert [c.precision for c in select(m, no_bf16, "openvino").candidates] == ["int8", "fp32"]
    assert [c.precision for c in select(manifest(), CPU_WITH_OPENVINO, "openvino").candidates] == ["fp32"]
    # bf16 without a recorded accuracy is not chosen by auto, but runs when asked for
    assert "bf16" not in [c.precision for c in select(manifest(cpu_int8=good), CPU_WITH_OPENVINO).candidates]
    assert plan(select(manifest(), CPU_WITH_OPENVINO, precision="bf16")) == [("openvino", "bf16", None)]


def test_a_gpu_runtime_still_goes_before_openvino():
    machine = Machine(onnxruntime_version="1.32.0", ort_providers=ALL_PROVIDERS, gpu_name="Orin",
                      compute_capability=(8, 7), tensorrt_version="10.3.0", **OPENVINO)
    backends = [c.backend for c in select(manifest(cpu_int8=scores(0.8, meets_target=True)), machine).candidates]
    assert backends.index("onnxruntime") < backends.index("openvino")


def test_openvino_requests_that_cannot_be_met_say_why():
    with pytest.raises(MissingDependencyError, match=r"liverlesion\[openvino\]"):
        select(manifest(), CPU_ONLY, "openvino")
    no_bf16 = Machine(**{**CPU_WITH_OPENVINO.__dict__, "openvino_capabilities": ("FP32", "INT8")})
    with pytest.raises(BackendError, match="this CPU lacks BF16"):
        select(manifest(), no_bf16, "openvino", "bf16")
    with pytest.raises(BackendError, match="no CPU-form INT8 model"):
        select(manifest(), CPU_WITH_OPENVINO, "openvino", "int8")
    with pytest.raises(BackendError, match="bf16 runs on OpenVINO only"):
        select(manifest(), CPU_ONLY, "onnxruntime", "bf16")


def test_int8_is_vouched_for_only_by_the_record_of_the_file_and_runtime_that_run():
    good = scores(0.80, meets_target=True, target_misses=[])
    # measured on onnxruntime only: OpenVINO's own INT8 kernels are not vouched for, onnxruntime CPU's are
    selection = select(manifest(cpu_int8=good), CPU_WITH_OPENVINO)
    assert ("openvino", "int8", None) not in plan(selection) and ("onnxruntime", "int8", "cpu") in plan(selection)
    assert "records no INT8 accuracy" in selection.precisions["openvino int8"]
    assert "meets the export target" in selection.precisions["onnxruntime int8"]
    ort_int8 = next(c for c in selection.candidates if c.backend == "onnxruntime" and c.precision == "int8")
    assert "meets the export target" in ort_int8.reason  # its own verdict, not another backend's
    # a CPU-form file naming no record of its own is not vouched for by the TensorRT form's record
    m = manifest(cpu_int8=good)
    raw = m.to_dict()
    for record in raw["files"]:
        record.pop("accuracy", None)
    raw["accuracy"].pop("int8-u8s8")
    selection = select(Manifest.from_dict(raw), CPU_ONLY)
    assert ("onnxruntime", "int8", "cpu") not in plan(selection)


def test_a_broken_openvino_is_reported_as_broken_not_as_missing():
    broken = Machine(**{**CPU_ONLY.__dict__, "openvino_version": "2026.4.1",
                        "openvino_error": "Failed to load the CPU plugin"})
    with pytest.raises(BackendError, match="installed but its CPU plugin did not start: Failed to load") as caught:
        select(manifest(), broken, "openvino")
    assert not isinstance(caught.value, MissingDependencyError)
    assert select(manifest(), broken).candidates[0].backend == "onnxruntime"


def test_openvino_runs_fp16_and_bf16_from_the_fp32_graph():
    fp16_cpu = Machine(**{**CPU_WITH_OPENVINO.__dict__, "openvino_capabilities": ("FP32", "INT8", "BF16", "FP16")})
    assert plan(select(manifest(("fp32",)), fp16_cpu, "openvino", "fp16")) == [("openvino", "fp16", None)]
    assert plan(select(manifest(("fp32",)), fp16_cpu, precision="bf16")) == [("openvino", "bf16", None)]
    with pytest.raises(BackendError, match="no fp16 model"):
        select(manifest(("fp32",)), fp16_cpu, "onnxruntime", "fp16")
