"""One short run of the checks that need a real NVIDIA GPU, for a machine lent for a few minutes.

    python examples/gpu_check.py [--out report.json]

Each check says what ran, its figures, or why it could not run here; none crashes the run:
1. the GPU through the driver, and whether the installed TensorRT / TensorRT-RTX wheels' CUDA fits it;
2. device and pinned memory through cuda-python: a round trip, then a CUDA graph captured from a copy,
   replayed with new data and destroyed (the capture path the TensorRT backend uses);
3. TensorRT-RTX where it targets this GPU: an engine built here from a small graph, run, compared with
   onnxruntime, then loaded again from its runtime cache (JIT spared);
4. torch on CUDA: the joint network against the CPU, and its latency.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def check_gpu() -> dict[str, Any]:
    from liverlesion.machine.cuda_compat import cuda_runtime_refusal, runtime_distribution
    from liverlesion.machine.gpu import detect_gpu

    gpu = detect_gpu()
    if gpu is None:
        return {"ran": False, "why": "no CUDA GPU found"}
    wheels = {name: runtime_distribution(*modules) for name, modules in
              (("tensorrt", ("tensorrt", "tensorrt_libs")), ("tensorrt-rtx", ("tensorrt_rtx", "tensorrt_rtx_libs")))}
    return {"ran": True, "gpu": gpu.describe(), "driver": gpu.driver_version,
            "refusals": {n: cuda_runtime_refusal(gpu.driver_version, d) for n, d in wheels.items()}}


def check_cuda_memory() -> dict[str, Any]:
    from liverlesion.machine.cuda_memory import open_cuda_memory

    memory = open_cuda_memory("cuda-python")
    try:
        with memory.activate():
            stream = memory.create_stream()
            host = memory.pinned_empty((1024, 1024), np.float32)
            back = memory.pinned_empty((1024, 1024), np.float32)
            device = memory.device_alloc(host.nbytes)
            host[:] = np.random.default_rng(0).random(host.shape, dtype=np.float32)
            start = time.perf_counter()
            memory.copy_htod_async(device, host, stream)
            memory.copy_dtoh_async(back, device, stream)
            memory.synchronize(stream)
            round_trip_ms = (time.perf_counter() - start) * 1e3
            assert np.array_equal(host, back), "the round trip changed the data"
            memory.begin_capture(stream)
            memory.copy_htod_async(device, host, stream)
            memory.copy_dtoh_async(back, device, stream)
            graph = memory.end_capture(stream)
            host[:] = 7.0  # replayed with new data in the same buffers
            memory.launch_graph(graph, stream)
            memory.synchronize(stream)
            assert np.all(back == 7.0), "the replayed graph did not copy the new data"
            memory.destroy_graph(graph)
    finally:
        memory.close()
    return {"ran": True, "round_trip_4MiB_ms": round(round_trip_ms, 3), "graph_replay": "ok"}


def check_tensorrt_rtx(work: Path) -> dict[str, Any]:
    from liverlesion.backends.tensorrt_rtx import TensorRTRtxBackend
    from liverlesion.engines.build import build_engine
    from liverlesion.engines.plan import BuildOptions, plan_build
    from liverlesion.engines.versions import RTX_COMPUTE_CAPABILITIES
    from liverlesion.machine.gpu import detect_gpu
    from liverlesion.machine.runtimes import tensorrt_rtx_version
    from liverlesion.package import load_package
    from liverlesion.package.store import read_manifest

    gpu, version = detect_gpu(), tensorrt_rtx_version()
    if version is None:
        return {"ran": False, "why": "TensorRT-RTX is not installed: pip install 'liverlesion[tensorrt-rtx]'"}
    if gpu is None or gpu.compute_capability not in RTX_COMPUTE_CAPABILITIES:
        return {"ran": False, "why": f"TensorRT-RTX {version} does not target this GPU "
                                     f"({None if gpu is None else gpu.cc_text})"}
    import onnxruntime as ort

    root = _tiny_package(work / "pkg")
    options = BuildOptions("fp32", runtime="tensorrt-rtx", compute_capabilities=(gpu.compute_capability,))
    record = build_engine(root, plan_build(version, options, read_manifest(root)), log=lambda line: None)
    hu = np.random.default_rng(3).uniform(-1000, 400, (4, *load_package(root).manifest.input.shape[1:]))
    hu = hu.astype(np.float32)
    report: dict[str, Any] = {"ran": True, "engine": record.file, "build_s": record.build_seconds}
    for load in ("first", "second"):
        start = time.perf_counter()
        with TensorRTRtxBackend(load_package(root), "fp32", runtime_cache=work / "cache") as backend:
            report[f"{load}_load_s"] = round(time.perf_counter() - start, 3)
            report[f"{load}_from_cache"] = backend.runtime_cache["loaded"]
            got = backend.infer(hu)
            times = []
            for _ in range(20):
                start = time.perf_counter()
                backend.infer(hu[:1])
                times.append(time.perf_counter() - start)
            report[f"{load}_p50_ms"] = round(float(np.median(times)) * 1e3, 3)
    session = ort.InferenceSession(str(root / "model_fp32.onnx"), providers=["CPUExecutionProvider"])
    labels = session.run(["labels"], {"hu": hu})[0]
    report["label_agreement_with_onnxruntime"] = float((got["labels"] == labels).mean())
    return report


def _tiny_package(root: Path) -> Path:
    """A small exported package: phantoms, one epoch of training, export (the test suite's fixture, smaller)."""
    from liverlesion.data.phantom import generate_phantoms
    from liverlesion.export import export_package
    from liverlesion.training import TrainConfig, train

    data = root.parent / "phantoms"

    generate_phantoms(data, seed=3, lits_volumes=1, lits_slices=4, lesion_slices=8, size=64)
    train(TrainConfig(data=data, out=root.parent / "ckpt", epochs=1, base_width=4, depth=2, threads=2, batch_size=4,
                      grid_size=32, grid_spacing=8.0))
    export_package(root.parent / "ckpt", root, eval_data=data)
    return root


def check_torch_cuda() -> dict[str, Any]:
    import torch

    from liverlesion.model import ModelConfig, build_model

    if not torch.cuda.is_available():
        return {"ran": False, "why": f"torch {torch.__version__} sees no CUDA device"}
    config = ModelConfig("joint")  # the paper-sized defaults
    model = build_model(config).eval()
    x = torch.randn(1, config.in_channels, 256, 256)
    with torch.no_grad():
        cpu = model(x)
        model, xc = model.cuda(), x.cuda()
        for _ in range(5):
            model(xc)
        torch.cuda.synchronize()
        times = []
        for _ in range(30):
            start = time.perf_counter()
            out = model(xc)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    first = cpu[0] if isinstance(cpu, tuple) else cpu
    second = out[0] if isinstance(out, tuple) else out
    return {"ran": True, "device": torch.cuda.get_device_name(0), "p50_ms_256": round(float(np.median(times)) * 1e3, 3),
            "max_abs_diff_vs_cpu": float((first - second.cpu()).abs().max())}


def _guarded(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - every check reports, whatever fails
        return {"ran": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"gpu": _guarded(check_gpu)}
    if report["gpu"].get("ran"):
        with tempfile.TemporaryDirectory() as work:
            report["cuda_memory"] = _guarded(check_cuda_memory)
            report["tensorrt_rtx"] = _guarded(lambda: check_tensorrt_rtx(Path(work)))
            report["torch_cuda"] = _guarded(check_torch_cuda)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
