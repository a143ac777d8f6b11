#!/usr/bin/env python3
"""Build, verify and benchmark a liverlesion package's TensorRT engines on a Jetson (or any NVIDIA GPU).

Run it on the device that will use the engines, after installing the tensorrt extra (docs/jetson.md):

    python examples/jetson_build_verify_bench.py PACKAGE --precisions fp16 int8 --slices held_out.npy

For each precision it builds an engine for this GPU and TensorRT (or reuses a recorded one that runs
here), compares its label maps with onnxruntime running the FP32 graph on the same slices (pixel
agreement: at least 99.5% for FP16; for INT8 at least the agreement the export recorded minus half
a point, else 98%), times it, and prints one table. Exit status 1 when an engine fails its check.
Slices: float32 HU, N x 1 x H x W on the model grid (.npy); by default the package's calibration
slices, which INT8 was calibrated on, so give held-out slices for an honest INT8 figure.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Build, verify and benchmark TensorRT engines on a Jetson.")
    parser.add_argument("package", type=Path, help="model package folder (engines are recorded in it)")
    parser.add_argument("--precisions", nargs="+", default=["fp16", "int8"], choices=["fp32", "fp16", "int8"])
    parser.add_argument("--slices", type=Path, help=".npy of float32 HU slices (N x 1 x H x W, model grid)")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--workspace-mb", type=int, default=1024)
    parser.add_argument("--dla-core", type=int, help="build DLA engines on this core (with GPU fallback)")
    parser.add_argument("--timing-cache", type=Path, help="timing cache shared by the builds")
    parser.add_argument("--rebuild", action="store_true", help="build even if a matching engine is recorded")
    parser.add_argument("--runs", type=int, default=200, help="timed inferences per measurement")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--cuda-graph", action="store_true", help="replay batch-1 inference as a CUDA graph")
    parser.add_argument("--fp16-agreement", type=float, default=0.995)
    parser.add_argument("--int8-agreement", type=float, help="default: the export's recorded value - 0.005")
    return parser.parse_args(argv)


def power_mode() -> str:
    """The Jetson power mode (nvpmodel), which latency depends on; '' elsewhere."""
    if shutil.which("nvpmodel") is None:
        return ""
    try:
        out = subprocess.run(["nvpmodel", "-q"], check=False, capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return " ".join(line.strip() for line in out.splitlines() if line.strip())


def load_slices(package: Any, path: Path | None) -> np.ndarray:
    source = path or package.path("calibration/slices.npy")
    slices = np.load(source, allow_pickle=False)
    rows, cols = package.manifest.grid.size
    if slices.dtype != np.float32 or slices.ndim != 4 or slices.shape[1:] != (1, rows, cols):
        sys.exit(f"{source}: slices must be float32 N x 1 x {rows} x {cols}, got {slices.dtype} "
                 f"{slices.shape}")
    if path is None:
        print(f"verifying on the package's {len(slices)} calibration slices; give --slices for held-out data")
    return slices


def in_batches(run: Any, slices: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([run(slices[i:i + batch]) for i in range(0, len(slices), batch)])


def reference_labels(package: Any, slices: np.ndarray, batch: int) -> np.ndarray:
    """Label maps from onnxruntime (CPU) running the FP32 fused graph."""
    import onnxruntime

    onnx = package.manifest.find(role="onnx", precision="fp32")
    session = onnxruntime.InferenceSession(str(package.path(onnx)), providers=["CPUExecutionProvider"])
    name = package.manifest.input_name
    return in_batches(lambda x: session.run(["labels"], {name: x})[0], slices, batch)


def ensure_engine(args: argparse.Namespace, precision: str) -> tuple[str, float | None]:
    """The engine file to use for ``precision``, and its build time when built now."""
    from liverlesion.backends.tensorrt import TensorRTBackend
    from liverlesion.engines import BuildOptions, installed_tensorrt_version, plan_build
    from liverlesion.engines.build import build_engine
    from liverlesion.machine.gpu import detect_gpu
    from liverlesion.package import load_package

    with load_package(args.package) as package:
        dla = None if args.dla_core is None else True
        record, _ = TensorRTBackend.engine_for(package, precision, dla=dla)
        if record is not None and not args.rebuild:
            return record.file, None
        gpu = detect_gpu()
        if gpu is None:
            sys.exit("no CUDA GPU found")
        options = BuildOptions(precision=precision, compute_capability=gpu.compute_capability,
                               max_batch=args.max_batch, workspace_mb=args.workspace_mb,
                               dla_core=args.dla_core,
                               timing_cache=None if args.timing_cache is None else str(args.timing_cache))
        plan = plan_build(str(installed_tensorrt_version()), options, package.manifest)
        built = build_engine(package.root, plan)
        return built.file, built.build_seconds


def latency(backend: Any, hu: np.ndarray, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        backend.infer(hu)
    times = []
    for _ in range(runs):
        backend.infer(hu)
        times.append(backend.last_inference_time())
    return times


def int8_threshold(manifest: Any, given: float | None) -> float:
    if given is not None:
        return given
    recorded = manifest.raw.get("accuracy", {}).get("int8", {}).get("agreement_with_fp32")
    return float(recorded) - 0.005 if isinstance(recorded, (int, float)) else 0.98


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from liverlesion.backends.tensorrt import TensorRTBackend
    from liverlesion.engines import installed_tensorrt_version
    from liverlesion.machine.gpu import detect_gpu
    from liverlesion.package import load_package

    gpu = detect_gpu()
    print(f"GPU: {gpu.describe() if gpu else 'none'}; TensorRT "
          f"{installed_tensorrt_version() or 'not installed'}")
    mode = power_mode()
    if mode:
        print(f"power mode: {mode} (run `sudo jetson_clocks` for stable timings)")
    with load_package(args.package) as package:
        slices = load_slices(package, args.slices)
        expected = reference_labels(package, slices, args.max_batch)
        int8_min = int8_threshold(package.manifest, args.int8_agreement)

    rows, failed = [], False
    for precision in args.precisions:
        engine, built = ensure_engine(args, precision)
        threshold = {"fp16": args.fp16_agreement, "int8": int8_min}.get(precision, 0.999)
        with load_package(args.package) as package, \
                TensorRTBackend(package, precision, engine=engine,
                                cuda_graph_batch=1 if args.cuda_graph else None) as backend:
            batch = backend.max_batch or 1
            labels = in_batches(lambda x: backend.infer(x)["labels"], slices, batch)
            agreement = float((labels == expected).mean())
            one = np.asarray(latency(backend, slices[:1], args.runs, args.warmup)) * 1e3
            full = slices[:batch] if len(slices) >= batch else np.resize(slices, (batch, *slices.shape[1:]))
            many = np.asarray(latency(backend, full, max(args.runs // 4, 10), args.warmup // 2))
        ok = agreement >= threshold
        failed |= not ok
        rows.append([precision, Path(engine).name, "reused" if built is None else f"{built:.0f}",
                     f"{agreement:.2%}", f">= {threshold:.2%}", "ok" if ok else "FAIL",
                     f"{np.median(one):.2f}", f"{np.percentile(one, 95):.2f}",
                     f"{batch / float(np.median(many)):.0f} (batch {batch})"])
    header = ["precision", "engine", "build "
                                     "s", "agreement", "needed", "check", "p50 ms", "p95 ms", "slices/s"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
