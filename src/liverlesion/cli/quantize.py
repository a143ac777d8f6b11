"""``liverlesion quantize``: add a LiTS-calibrated INT8 (Q/DQ) model to a package."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "quantize", help="add an INT8 Q/DQ model, calibrated on LiTS slices, to a package",
        description="Calibrate on LiTS slices (read and resampled as in training), write explicit INT8 "
                    "(QuantizeLinear/DequantizeLinear; symmetric int8, per-channel weights: the form "
                    "TensorRT consumes), check the graph, measure its accuracy against FP32 on held-out "
                    "lesion slices and record it all in the manifest. If INT8 misses its target (1 Dice "
                    "point, 1 accuracy point), it tries the other calibration methods, then keeps the blocks "
                    "that cost most in float.",
    )
    add = parser.add_argument
    add("package", type=Path, metavar="PACKAGE", help="package folder (from liverlesion export)")
    add("--calib", required=True, type=Path, metavar="LITS_DIR",
        help="LiTS folder (or a folder holding lits/)")
    add("--eval-data", required=True, type=Path, metavar="DIR", help="held-out lesion-slice dataset")
    add("--slices", type=int, default=64, metavar="N", help="calibration slices (default 64)")
    add("--method", choices=("minmax", "percentile", "entropy"),
        help="calibration method (default: minmax, and the others are tried if INT8 misses its target; "
             "entropy, TensorRT's classic, clips the activations that carry lesions in this network)")
    add("--exclude", nargs="+", metavar="NODE", default=(),
        help="also keep these nodes in float (node names or name prefixes, e.g. /network/encoders.0/)")
    add("--only-exclude", action="store_true",
        help="--exclude replaces the default excluded set (pre/postprocessing and heads) instead of adding")
    add("--no-stratify", action="store_true",
        help="uniform choice of liver slices instead of half with tumour")
    add("--seed", type=int, default=0, help="seed of the slice choice")
    add("--every", type=int, default=1, metavar="N", help="consider every Nth LiTS liver slice")
    add("--max-fix-rounds", type=int, default=3,
        help="blocks moved to float at most, if INT8 misses (default 3)")
    add("--allow-miss", action="store_true", help="write INT8 even if it misses its target (recorded)")


def run(args: argparse.Namespace) -> int:
    from ..export import format_table, quantize_package

    exclude = tuple(args.exclude) if args.only_exclude else None
    extra = () if args.only_exclude else tuple(args.exclude)
    result = quantize_package(args.package, args.calib, args.eval_data, slices=args.slices,
                              method=args.method, exclude=exclude, extra_exclude=extra,
                              stratified=not args.no_stratify, seed=args.seed, every=args.every,
                              max_fix_rounds=args.max_fix_rounds, allow_miss=args.allow_miss, progress=print)
    graph = result.graph
    print(f"INT8 graph: opset {graph['opset']}, {graph['quantize_linear']} Q / "
          f"{graph['dequantize_linear']} DQ, {graph['per_channel_weights']} per-channel weights, "
          "TensorRT checks passed")
    floating = result.recipe.extra_exclude
    print(f"recipe: {result.recipe.method} calibration, {len(result.study['rounds']) - 1} fix round(s)"
          + (", kept in float: " + ", ".join(floating) if floating else ""))
    print(format_table(result.accuracy))
    cpu = result.forms["u8s8"]
    blocks = cpu["extra_excluded_blocks"][len(floating):]
    print("CPU-form INT8 (u8s8, for onnxruntime CPU and OpenVINO): " + (
        "written" if cpu["written"] else "left out, it misses the target: " + "; ".join(cpu["target_misses"]))
        + (f" (its own fix rounds kept in float: {', '.join(blocks)})" if blocks else ""))
    print(f"INT8 model {result.size / 1e6:.2f} MB; quantized in {result.timings_s['quantize_s']:.1f} s; "
          f"package updated: {result.path}")
    return 0
