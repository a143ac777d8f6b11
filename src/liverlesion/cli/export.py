"""``liverlesion export``: a checkpoint -> a model package (FP32 + FP16 ONNX, parity-checked)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export", help="export a checkpoint to a model package (FP32 and FP16 ONNX, manifest)",
        description="Export the fused network (HU in; preprocessing, network, softmax and argmax inside) "
                    "to ONNX opset 17 with a dynamic batch, convert it to FP16, check parity with PyTorch "
                    "on onnxruntime CPU (identical label maps, probabilities within 1e-4) and write a "
                    "model package. A package that fails a check is not written.",
    )
    add = parser.add_argument
    add("checkpoint", type=Path, metavar="CHECKPOINT", help="checkpoint folder (from liverlesion train)")
    add("--out", required=True, type=Path, metavar="PACKAGE",
        help="package folder to write (an older package there is replaced)")
    add("--eval-data", type=Path, metavar="LESION_SLICES_DIR",
        help="held-out lesion slices: measure FP32/FP16 accuracy and use some for parity")
    add("--bare", action="store_true", help="also export the bare network (channels in, logits out)")
    add("--archive", type=Path, metavar="FILE", help="also write the package as one .zip file")
    add("--max-batch", type=int, metavar="N", help="largest batch integrators should plan for (manifest)")
    add("--name", help="model name in the manifest (default liverlesion-ARCH)")
    add("--model-version", help="model version in the manifest (default: the liverlesion version)")


def run(args: argparse.Namespace) -> int:
    from ..export import export_package, format_table

    result = export_package(args.checkpoint, args.out, eval_data=args.eval_data, bare=args.bare,
                            archive=args.archive, max_batch=args.max_batch, name=args.name,
                            version=args.model_version, progress=print)
    for row in result.parity:
        print(f"parity {row['inputs']}: {row['label_mismatches']} label pixels differ "
              f"({row['tie_flips']} numerical ties flipped), probabilities within "
              f"{max(row['max_probability_error'], row['max_class_probability_error']):.1e}")
    for path, size in result.sizes.items():
        print(f"  {path:<28}{size / 1e6:>10.2f} MB")
    if result.accuracy:
        print(format_table(result.accuracy))
    if result.archive is not None:
        print(f"archive: {result.archive}")
    print(f"package written: {result.path} ({result.timings_s['total_s']:.1f} s)")
    return 0
