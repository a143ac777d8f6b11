"""``liverlesion build-engine``: build a TensorRT engine for this GPU (or a TensorRT-RTX engine for named GPU
families, on any machine) and record it in the package."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..engine_tags import ENGINE_RUNTIMES, TENSORRT, TENSORRT_RTX
from ..engines.plan import DEFAULT_CALIBRATION_BATCH, DEFAULT_MAX_BATCH, DEFAULT_WORKSPACE_MB, PRECISIONS


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "build-engine", help="build a TensorRT engine on this GPU (or TensorRT-RTX, anywhere) and record it",
        description="Build a TensorRT engine from the package's ONNX for the GPU and TensorRT of this "
                    "machine, and record it (file, sha256, TensorRT version, GPU, profile) in the package "
                    "manifest. With --runtime tensorrt-rtx the engine is built ahead of time, on any machine "
                    "(no GPU needed), for the RTX GPU families named by --compute-capability (default: "
                    "TensorRT-RTX's portable set 8.0 8.6 8.9 12.0). --dry-run prints the build plan as JSON "
                    "and needs no TensorRT.")
    parser.add_argument("package", help="model package folder (an archive only with --dry-run)")
    parser.add_argument("--precision", required=True, choices=PRECISIONS)
    parser.add_argument("--runtime", choices=ENGINE_RUNTIMES, default=TENSORRT,
                        help="tensorrt (Jetson, servers: built on the GPU that runs it; default) or tensorrt-rtx "
                             "(RTX workstations: built anywhere, kernels compiled on the GPU at first run)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help=f"largest batch of slices the engine accepts (default {DEFAULT_MAX_BATCH})")
    parser.add_argument("--opt-batch", type=int, default=1,
                        help="batch the kernels are tuned for (default 1: latency)")
    parser.add_argument("--workspace-mb", type=int, default=DEFAULT_WORKSPACE_MB,
                        help=f"builder scratch memory, MiB (default {DEFAULT_WORKSPACE_MB}: fits 8 GB Orin)")
    parser.add_argument("--dla-core", type=int, help="build for this DLA core, GPU fallback (Xavier/Orin)")
    parser.add_argument("--timing-cache", help="timing cache file to reuse and update (speeds up rebuilds)")
    parser.add_argument("--version-compatible", action="store_true",
                        help="let later TensorRT releases run the engine (8.6+; may be slower)")
    parser.add_argument("--calibration-batch", type=int, default=DEFAULT_CALIBRATION_BATCH,
                        help="slices per calibration batch (TensorRT 8.x int8)")
    parser.add_argument("--memory", choices=("cuda-python", "pycuda"),
                        help="CUDA memory library for calibration (default: whichever is installed)")
    parser.add_argument("--graph", choices=("model-grid", "slice"), default="model-grid",
                        help="the fused graph (HU on the model grid in; default) or its slice graph (the slice "
                             "as stored in, resampling inside; from liverlesion slice-graphs; TensorRT 10+ and "
                             "TensorRT-RTX, stored sides 256..1024)")
    parser.add_argument("--dry-run", action="store_true", help="print the build plan as JSON and stop")
    parser.add_argument("--trt-version", help="plan for this TensorRT (or TensorRT-RTX) version (default: the "
                                              "installed one)")
    parser.add_argument("--compute-capability", nargs="+", metavar="CC",
                        help="tensorrt: plan for this GPU, e.g. 8.7 (default: this machine's GPU); tensorrt-rtx: "
                             "the GPU families to build for, e.g. 8.6 8.9 12.0 (7.5 for Turing)")


def _version(args: argparse.Namespace, runtime: str) -> str:
    """The version of ``runtime`` (TensorRT or TensorRT-RTX) to plan for: the installed one, or --trt-version."""
    from ..engine_tags import RUNTIME_TITLES, TENSORRT_RTX, TrtVersion
    from ..engines import versions
    from ..errors import EngineError

    rtx = runtime == TENSORRT_RTX
    title = RUNTIME_TITLES[runtime]
    installed = versions.installed_runtime_version(runtime)
    if installed is None and not args.dry_run:
        versions.import_runtime(runtime)  # raises, naming the extra
    if args.trt_version:
        asked = TrtVersion.parse(args.trt_version)
        if not args.dry_run and installed is not None and asked.release != installed.release:
            raise EngineError(f"--trt-version {asked} differs from the installed {title} {installed}; "
                              "engines are built with the installed one (use --dry-run to plan for another)")
        return str(asked) if args.dry_run or installed is None else str(installed)
    if installed is not None:
        return str(installed)
    example = "1.7.1" if rtx else "8.5.2, 10.3"
    raise EngineError(f"{title} is not installed here: plan with --trt-version (e.g. {example})")


def _target(args: argparse.Namespace) -> tuple[str, tuple[int, int] | str]:
    """The TensorRT version and compute capability to plan for; built engines must match this machine."""
    from ..engine_tags import parse_compute_capability
    from ..errors import EngineError
    from ..machine.gpu import detect_gpu

    version = _version(args, TENSORRT)
    gpu = detect_gpu()
    if args.compute_capability and len(args.compute_capability) > 1:
        raise EngineError("a TensorRT engine is built for one GPU: give one --compute-capability (TensorRT-RTX, "
                          "--runtime tensorrt-rtx, builds for several)")
    if args.compute_capability:
        cc = parse_compute_capability(args.compute_capability[0])
        if not args.dry_run and gpu is not None and cc != gpu.compute_capability:
            raise EngineError(f"--compute-capability {args.compute_capability} differs from this GPU "
                              f"({gpu.name}, {gpu.cc_text}); engines are built for the GPU they run on")
        return version, cc
    if gpu is None:
        raise EngineError("no CUDA GPU found: give --compute-capability (e.g. 8.7 for Orin) with --dry-run "
                          "to plan, or build on the machine that will run the engine")
    return version, gpu.compute_capability


def run(args: argparse.Namespace) -> int:
    from ..engines.build import build_engine
    from ..engines.plan import BuildOptions, plan_build
    from ..errors import PackageError
    from ..package import load_package

    if not args.dry_run and Path(args.package).is_file():
        raise PackageError(f"{args.package}: build-engine records the engine inside the package, so it needs "
                           "the package folder; unpack the archive first (or use --dry-run)")
    with load_package(args.package) as package:
        common = dict(precision=args.precision, max_batch=args.max_batch, opt_batch=args.opt_batch,
                      workspace_mb=args.workspace_mb, dla_core=args.dla_core, timing_cache=args.timing_cache,
                      version_compatible=args.version_compatible, calibration_batch=args.calibration_batch,
                      graph=args.graph)
        if args.runtime == TENSORRT_RTX:
            version = _version(args, TENSORRT_RTX)
            options = BuildOptions(runtime=TENSORRT_RTX, compute_capabilities=tuple(args.compute_capability or ()),
                                   **common)
        else:
            version, cc = _target(args)
            options = BuildOptions(compute_capability=cc, **common)
        plan = plan_build(version, options, package.manifest)
        if args.dry_run:
            print(json.dumps(plan.to_dict(), indent=2))
            return 0
        record = build_engine(package.root, plan, memory=args.memory)
    where = record.gpu_name or "any GPU of its targets"
    print(f"built {record.file}: {record.precision}, {record.runtime_title} {record.tensorrt}, {where} "
          f"({', '.join(record.compute_capabilities)}), batch {record.min_batch}..{record.max_batch}, "
          f"{record.size / 2**20:.1f} MiB in {record.build_seconds} s; recorded in "
          f"{Path(args.package) / 'manifest.json'}")
    return 0
