"""``liverlesion serve``: a real Triton Inference Server running a model package (PyTriton; the serve extra).

Serves ``liverlesion_pipeline`` (the SDK: a slice's HU and spacing in, the Prediction out) and
``liverlesion_network`` (the fused network on model-grid HU), both with dynamic batching, on loopback unless
told otherwise. ``RemoteAnalyzer`` is its client; docs/serving.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..backends.choice import PRECISIONS as SDK_PRECISIONS
from ..backends.registry import BACKEND_NAMES

#: Environment variable holding the admin-endpoint token (so that it shows in no process list).
TOKEN_VARIABLE = "LIVERLESION_SERVE_TOKEN"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve a model package with NVIDIA Triton Inference Server (HTTP and gRPC)",
        description="Start Triton Inference Server (the tritonserver PyTriton bundles) serving the SDK pipeline "
                    "(liverlesion_pipeline: a slice's HU, spacing and orientation in; label map, lesion map and "
                    "the Prediction as JSON out) and the fused network alone (liverlesion_network: HU on the "
                    "model grid in), both with dynamic batching. Listens on 127.0.0.1 unless --allow-remote. "
                    "Stops on Ctrl-C or SIGTERM. Clients: liverlesion.serving.RemoteAnalyzer or any Triton client.")
    add = parser.add_argument
    add("package", type=Path, metavar="PACKAGE", help="model package folder or .zip archive")
    add("--backend", choices=("auto", *BACKEND_NAMES), default="auto", help="inference backend (default: auto)")
    add("--precision", choices=("auto", *SDK_PRECISIONS), default="auto", help="model precision (default: auto)")
    add("--threads", type=int, metavar="N", help="CPU threads for onnxruntime / OpenVINO / torch")
    add("--expect-digest", metavar="HEX", help="refuse any package whose digest (liverlesion inspect) is not HEX")
    add("--host", default="127.0.0.1", help="address HTTP, gRPC and metrics listen on (default: 127.0.0.1)")
    add("--allow-remote", action="store_true",
        help="allow a --host that is not a loopback address (other machines can then send requests)")
    add("--http-port", type=int, default=8000, metavar="PORT", help="HTTP/REST port (default: 8000)")
    add("--grpc-port", type=int, default=8001, metavar="PORT", help="gRPC port (default: 8001)")
    add("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on PORT (default: no metrics)")
    add("--instances", type=int, default=1, metavar="N",
        help="model instances per model, sharing one loaded package (default: 1)")
    add("--max-batch", type=int, default=8, metavar="N", help="largest dynamic batch (default: 8)")
    add("--queue-delay-ms", type=float, default=2.0, metavar="MS",
        help="longest a request waits for others to batch with (default: 2 ms)")
    add("--access-token-file", type=Path, metavar="FILE",
        help=f"token of Triton's admin endpoints (statistics, model repository, shared memory, trace, logging), "
             f"read from FILE; else ${TOKEN_VARIABLE}; else a random one nobody is told")
    add("--log-verbose", type=int, default=0, metavar="N", help="tritonserver's verbose log level (default: 0)")


def run(args: argparse.Namespace) -> int:
    from ..serving.server import ServeOptions, serve

    options = ServeOptions(package=args.package, backend=args.backend, precision=args.precision,
                           threads=args.threads, expect_digest=args.expect_digest, host=args.host,
                           http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                           instances=args.instances, max_batch=args.max_batch, queue_delay_ms=args.queue_delay_ms,
                           access_token=_token(args.access_token_file), allow_remote=args.allow_remote,
                           log_verbose=args.log_verbose)
    options.check()  # before the package is loaded
    return serve(options, ready=_announce)


def _token(path: Path | None) -> str | None:
    from ..errors import InputError

    if path is None:
        return os.environ.get(TOKEN_VARIABLE) or None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--access-token-file {path}: cannot read it ({exc})") from None
    if not token:
        raise InputError(f"--access-token-file {path} is empty")
    return token


def _announce(info: Any) -> None:
    """One JSON line on stdout once both models are loaded (scripts and tests wait for it), then a summary."""
    print(json.dumps({"ready": True, **info}, sort_keys=True), flush=True)
    print(f"liverlesion serve: {info['parameters']['liverlesion.package.name']} on {info['backend']} "
          f"{info['precision']} ({info['device']}): HTTP {info['http']}, gRPC {info['grpc']}; "
          f"models {', '.join(info['models'])}", file=sys.stderr, flush=True)
