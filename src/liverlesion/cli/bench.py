"""``liverlesion bench``: latency, throughput, memory and accuracy of a package per backend and precision.

Prints a table (machine header, one row per configuration that ran, a reason for each
that could not), and writes JSON / markdown / a plot on request. The JSON files of two
runs compare row by row.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: Soak length that the memory target is stated for.
SOAK_TARGET_PREDICTIONS = 10_000


def register(subparsers: Any) -> None:
    from ..bench.configs import BACKEND_SPECS, DEFAULT_BATCH_SIZES, PRECISIONS

    parser = subparsers.add_parser(
        "bench", help="benchmark a model package on every backend and precision here",
        description="Time end-to-end predict() and raw backend inference for each backend x precision x "
                    "batch size that can run here (a row saying why for each that cannot), with peak memory, "
                    "achieved GFLOP/s, and lesion Dice, liver Dice, class accuracy and label agreement with "
                    "the FP32 reference on the same slices. Reference rows: PyTorch eager FP32 (the torch "
                    "backend), against which the speed-up of the fastest CPU configuration is reported.")
    add = parser.add_argument
    add("package", type=Path, metavar="PACKAGE", help="model package folder or .zip archive")
    add("--backends", nargs="+", choices=list(BACKEND_SPECS), default=list(BACKEND_SPECS), metavar="B",
        help=f"backends to try (default: all of {', '.join(BACKEND_SPECS)})")
    add("--precisions", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS), metavar="P",
        help="precisions to try (default: fp32 fp16 int8)")
    add("--batch-sizes", nargs="+", type=int, default=list(DEFAULT_BATCH_SIZES), metavar="N",
        help="slices per call (default: 1 8)")
    add("--iterations", type=int, default=50, metavar="N", help="timed iterations per configuration (50)")
    add("--warmup", type=int, default=5, metavar="N", help="untimed iterations first (5)")
    add("--data", type=Path, metavar="DIR",
        help="LiTS folder or lesion-slice dataset (default: lesion-slice phantoms generated in memory)")
    add("--slices", type=int, default=16, metavar="N", help="slices to time and score on (16)")
    add("--seed", type=int, default=0, help="seed of the generated phantoms (0)")
    add("--threads", type=int, metavar="N", help="CPU threads for onnxruntime / openvino / torch (default: all)")
    add("--memory-soak", type=int, default=0, metavar="N",
        help=f"then run N predictions on the fastest configuration and report resident-memory growth "
             f"(the target is < 5%% over {SOAK_TARGET_PREDICTIONS})")
    add("--json", type=Path, metavar="OUT", help="write the full result as JSON")
    add("--markdown", type=Path, metavar="OUT", help="write the table as markdown")
    add("--plot", type=Path, metavar="PNG", help="write latency against accuracy per configuration")
    add("--quiet", action="store_true", help="no progress line on stderr")
    add("--series", type=int, nargs="?", const=200, metavar="N",
        help="instead: an N-slice 512 x 512 DICOM series (default 200) from disk to SEG + SR written, end-to-end "
             "slices/s against the same backend's raw batched inference (target >= 85%%), with peak memory; on the "
             "SDK's auto choice unless --backends / --precisions / --batch-sizes are given")
    add("--serve", type=int, nargs="?", const=200, metavar="N",
        help="instead: Triton-served throughput (liverlesion serve, started here) at 1, 4 and 8 clients x N requests "
             "(default 200) against in-process predict_batch in the same run (target >= 70%% at 8 clients), with "
             "p50/p99, mean batch size and where a request's time goes; the first of --backends / --precisions")


def run(args: argparse.Namespace) -> int:
    if args.series is not None:
        return _run_series(args)
    if args.serve is not None:
        return _run_serve(args)
    from ..bench.data import load_bench_data
    from ..bench.report import format_table, write_json, write_markdown, write_plot
    from ..bench.runner import BenchOptions, run_benchmark

    options = BenchOptions(backends=tuple(dict.fromkeys(args.backends)),
                           precisions=tuple(dict.fromkeys(args.precisions)),
                           batch_sizes=tuple(dict.fromkeys(args.batch_sizes)), iterations=args.iterations,
                           warmup=args.warmup, threads=args.threads, memory_soak=args.memory_soak,
                           progress=not args.quiet)
    data = load_bench_data(args.data, args.slices, seed=args.seed)
    result = run_benchmark(args.package, data, options)
    print(format_table(result), end="")
    for path, write in ((args.json, write_json), (args.markdown, write_markdown), (args.plot, write_plot)):
        if path is not None:
            write(result, path)
            print(f"wrote {path}")
    return 0 if any(r["status"] == "ok" for r in result["rows"]) else 1


def _run_series(args: argparse.Namespace) -> int:
    """``--series``: the options left at their defaults mean the SDK's own choice (auto, its batch size)."""
    from ..bench.configs import BACKEND_SPECS, DEFAULT_BATCH_SIZES, PRECISIONS
    from ..bench.report import write_json
    from ..bench.series import format_series_table, run_series_bench
    from ..errors import InputError

    if args.markdown is not None or args.plot is not None or args.memory_soak:
        raise InputError("--series writes a table and --json; --markdown, --plot and --memory-soak are for the "
                         "per-slice benchmark")

    def chosen(given: list[Any], default: Any, auto: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(dict.fromkeys(given)) if list(given) != list(default) else auto

    result = run_series_bench(args.package, slices=args.series, seed=args.seed, threads=args.threads,
                              backends=chosen(args.backends, BACKEND_SPECS, ("auto",)),
                              precisions=chosen(args.precisions, PRECISIONS, ("auto",)),
                              batch_sizes=chosen(args.batch_sizes, DEFAULT_BATCH_SIZES, (None,)),
                              progress=not args.quiet)
    print(format_series_table(result), end="")
    if args.json is not None:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0 if any(r["status"] == "ok" for r in result["rows"]) else 1


def _run_serve(args: argparse.Namespace) -> int:
    """``--serve``: the SDK's auto choice unless --backends / --precisions name one."""
    from ..bench.configs import BACKEND_SPECS, PRECISIONS
    from ..bench.report import write_json
    from ..bench.serve import format_serve_table, run_serve_bench

    backend = args.backends[0] if list(args.backends) != list(BACKEND_SPECS) else "auto"
    precision = args.precisions[0] if list(args.precisions) != list(PRECISIONS) else "auto"
    result = run_serve_bench(args.package, requests=args.serve, backend=backend, precision=precision,
                             threads=args.threads, seed=args.seed, progress=not args.quiet)
    print(format_serve_table(result), end="")
    if args.json is not None:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0 if all(r["failed"] == 0 and not r.get("mismatched") for r in result["served"]) else 1
