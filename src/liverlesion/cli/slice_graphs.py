"""``liverlesion slice-graphs``: add the fused graphs wrapped in their resampling (the slice as stored in)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "slice-graphs", help="add slice graphs (resampling onto the model grid and back inside the graph)",
        description="Wrap every fused graph of a package (fp32, fp16, both INT8 forms) in its resampling: "
                    "the slice as stored, its rescale and its affine in, labels on the stored grid out "
                    "(model_slice_*.onnx, role onnx-slice). The TensorRT-bound forms are built by NVIDIA's "
                    "parser for stored sides 256..1024; with --eval-data each is run against the host path "
                    "of its own fused graph and the label agreement recorded. For GPU runtimes: on a CPU "
                    "the host path is faster (docs/model-package.md).",
    )
    add = parser.add_argument
    add("package", type=Path, metavar="PACKAGE", help="package folder (from liverlesion export / quantize)")
    add("--eval-data", type=Path, metavar="DIR", help="held-out lesion-slice dataset for the parity check")
    add("--sides", type=int, nargs=3, metavar=("MIN", "OPT", "MAX"),
        help="stored slice sides TensorRT profiles cover (default 256 512 1024)")


def run(args: argparse.Namespace) -> int:
    from ..export.slice_graphs import add_slice_graphs

    result = add_slice_graphs(args.package, eval_data=args.eval_data,
                              sides=tuple(args.sides) if args.sides else None, progress=print)
    for record in result.files:
        verdict = record.get("nvidia_parser")
        gate = "not for TensorRT" if record.get("form") == "qdq-u8s8" else \
            (f"built by {verdict['runtime']} {verdict['version']}" if verdict else "not checked by NVIDIA's parser")
        print(f"  {record['path']:<36} {record['precision']:<5} wraps {record['wraps']:<28} {gate}")
    print(f"package updated: {result.path}")
    return 0
