"""Where the CPU speed-up over PyTorch eager grows: raw inference of the joint network at several sizes.

For each network size (base width x model grid), the fused graph (HU in, labels and
probabilities out) is exported to ONNX and quantized to the CPU-form INT8 (u8s8) with the
package's own functions, then timed at batch 1: PyTorch eager FP32, onnxruntime CPU FP32 and
INT8, OpenVINO f32, bf16 (where the CPU has it) and INT8. Weights are random (speed does not
depend on them), so nothing here says anything about accuracy: that is measured on trained
packages by ``liverlesion quantize`` and ``liverlesion bench``.

    python examples/cpu_scaling.py [--threads 2] [--sizes 16x128 32x256 32x512] [--iterations 20]

Host pre/postprocessing of a 512 x 512 slice is not included (``liverlesion bench`` measures it
per package: about 0.7 ms here, whatever the network).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def median_ms(run: Callable[[], object], iterations: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def measure(width: int, size: int, threads: int, iterations: int, folder: Path) -> dict[str, float | str]:
    import onnxruntime as ort
    import openvino as ov
    import torch

    from liverlesion.export.onnx_export import export_fused
    from liverlesion.export.quantize import QuantRecipe, quantize_int8
    from liverlesion.grid import ModelGrid
    from liverlesion.model import ModelConfig, build_model
    from liverlesion.model.fused import fuse
    from liverlesion.model.registry import count_flops
    from liverlesion.preprocessing import Preprocessing

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    network = build_model(ModelConfig("joint", base_width=width)).eval()
    fused = fuse(network, Preprocessing(), "joint")
    grid = ModelGrid((size, size), (384.0 / size, 384.0 / size))
    fp32, int8 = folder / f"w{width}_{size}_fp32.onnx", folder / f"w{width}_{size}_u8s8.onnx"
    export_fused(fused, fp32, grid)
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1000.0, 400.0, (1, 1, size, size)).astype(np.float32)
    calibration = rng.uniform(-1000.0, 400.0, (8, 1, size, size)).astype(np.float32)
    quantize_int8(fp32, int8, calibration, QuantRecipe(batch=4), form="u8s8")

    row: dict[str, float | str] = {"network": f"width {width}, {size} x {size}",
                                   "gflop": count_flops(network, (1, 3, size, size)) / 1e9}
    with torch.no_grad():
        x = torch.from_numpy(hu)
        row["torch eager fp32"] = median_ms(lambda: fused(x), iterations)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    for name, path in (("onnxruntime fp32", fp32), ("onnxruntime int8", int8)):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        row[name] = median_ms(lambda s=session: s.run(None, {"hu": hu}), iterations)
    core = ov.Core()
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    for name, path, precision in (("openvino f32", fp32, "f32"), ("openvino bf16", fp32, "bf16"),
                                  ("openvino int8", int8, "f32")):
        if precision == "bf16" and "BF16" not in capabilities:
            row[name] = "no BF16"
            continue
        model = core.read_model(str(path))
        model.reshape({"hu": [1, 1, size, size]})
        compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
                                                     "INFERENCE_PRECISION_HINT": precision})
        request = compiled.create_infer_request()
        row[name] = median_ms(lambda r=request: r.infer({0: hu}), iterations)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=["16x128", "32x256", "32x512"], metavar="WIDTHxGRID")
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="liverlesion-scaling-") as tmp:
        for spec in args.sizes:
            width, size = (int(v) for v in spec.lower().split("x"))
            rows.append(measure(width, size, args.threads, args.iterations, Path(tmp)))
            print(f"measured {rows[-1]['network']}", file=sys.stderr)
    columns = [k for k in rows[0] if k not in ("network", "gflop")]
    print(f"batch 1, {args.threads} threads, median ms (speed-up over torch eager fp32)")
    print("| network | GFLOP | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for row in rows:
        base = float(row["torch eager fp32"])
        cells = [f"{v:.2f} ({base / v:.1f}x)" if isinstance(v, float) else str(v)
                 for v in (row[c] for c in columns)]
        print(f"| {row['network']} | {float(row['gflop']):.1f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
