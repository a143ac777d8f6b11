"""``liverlesion triton-repo``: a model repository for NVIDIA's full Triton Inference Server (NGC containers).

Writes ``liverlesion_pipeline`` (the SDK as a Python-backend model, calling the network through BLS) and
``liverlesion_network`` (``onnxruntime_onnx``, ``tensorrt_plan`` where the package has an engine for the target
TensorRT and GPU, or a Python model on the SDK's own backend), each with its ``config.pbtxt`` (dynamic batching,
instance groups, the package identity). The parser imports nothing heavy; docs/serving.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: Kept in step with serving.repository (which the parser must not import: it pulls numpy in).
NETWORK_BACKENDS = ("onnxruntime", "tensorrt", "python")
PYTHON_SDK_BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "fp16", "int8")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "triton-repo", help="write a model repository for NVIDIA Triton Inference Server (NGC containers)",
        description="Write a Triton model repository for a package: liverlesion_pipeline (the SDK's reading, "
                    "resampling and postprocessing in a Python-backend model, calling the network through BLS) and "
                    "liverlesion_network (onnxruntime_onnx, tensorrt_plan, or a Python model on the SDK's backend), "
                    "both with dynamic batching. The server's Python needs liverlesion installed (docs/serving.md). "
                    "Written into a temporary folder, then renamed onto --out.")
    add = parser.add_argument
    add("package", type=Path, metavar="PACKAGE", help="model package folder or .zip archive")
    add("--out", type=Path, required=True, metavar="REPO", help="the repository folder to write (new or empty)")
    add("--force", action="store_true", help="replace a non-empty --out")
    add("--network-backend", choices=NETWORK_BACKENDS, default="onnxruntime",
        help="how the network is served: Triton's onnxruntime backend, its TensorRT backend (a matching engine of "
             "the package), or a Python model running the SDK's --sdk-backend (default: onnxruntime)")
    add("--precision", choices=PRECISIONS, default="fp32", help="the network's precision (default: fp32)")
    add("--device", choices=("gpu", "cpu"), default="gpu",
        help="where the onnxruntime network runs: instance kind KIND_GPU or KIND_CPU (default: gpu)")
    add("--sdk-backend", choices=PYTHON_SDK_BACKENDS, default="onnxruntime",
        help="the SDK backend of a Python network model (default: onnxruntime)")
    add("--tensorrt", metavar="VERSION", help="TensorRT version of the target server (with --network-backend "
                                              "tensorrt), e.g. 10.5.0 for NGC Triton 24.10")
    add("--compute-capability", metavar="CC", help="compute capability of the target GPU, e.g. 9.0 (tensorrt)")
    add("--max-batch", type=int, default=8, metavar="N", help="max_batch_size of both models (default: 8)")
    add("--queue-delay-ms", type=float, default=2.0, metavar="MS",
        help="longest a request waits for others to batch with (default: 2 ms)")
    add("--pipeline-instances", type=int, default=1, metavar="N", help="pipeline model instances (default: 1)")
    add("--network-instances", type=int, default=1, metavar="N", help="network model instances (default: 1)")
    add("--threads", type=int, metavar="N", help="CPU threads of a Python network model's backend")
    add("--expect-digest", metavar="HEX", help="refuse any package whose digest (liverlesion inspect) is not HEX")


def run(args: argparse.Namespace) -> int:
    from ..package import load_package
    from ..serving.repository import RepositoryOptions, plan_repository, write_repository

    options = RepositoryOptions(network_backend=args.network_backend, precision=args.precision, device=args.device,
                                sdk_backend=args.sdk_backend, tensorrt=args.tensorrt,
                                compute_capability=args.compute_capability, max_batch=args.max_batch,
                                queue_delay_ms=args.queue_delay_ms, pipeline_instances=args.pipeline_instances,
                                network_instances=args.network_instances, threads=args.threads)
    options.check()  # before the package is read
    with load_package(args.package, expect_digest=args.expect_digest) as package:
        plan = plan_repository(package, options)
        out = write_repository(plan, package, args.out, force=args.force)
    print(json.dumps({"repository": str(out), **plan.summary()}, sort_keys=True))
    print(f"liverlesion triton-repo: wrote {out} ({', '.join(m.name for m in plan.models)}); the server's Python "
          "needs liverlesion installed (docs/serving.md)", file=sys.stderr)
    return 0
