"""``liverlesion engines``: the TensorRT and TensorRT-RTX engines in a package, and whether each runs here."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "engines", help="list a package's TensorRT engines and whether each runs on this machine",
        description="List the TensorRT and TensorRT-RTX engines recorded in a model package and say, for "
                    "each, whether this machine (its TensorRT or TensorRT-RTX version and GPU) can run it, and "
                    "why not.")
    parser.add_argument("package", help="model package folder or .zip archive")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from ..engine_tags import TENSORRT, TENSORRT_RTX
    from ..engines.records import engine_compatibility, engine_records
    from ..engines.versions import installed_runtime_version
    from ..errors import LiverLesionError
    from ..machine.gpu import detect_gpu
    from ..package import load_package

    versions = {runtime: installed_runtime_version(runtime) for runtime in (TENSORRT, TENSORRT_RTX)}
    gpu = detect_gpu()
    rows = []
    with load_package(args.package, verify=False) as package:  # each engine is checked below, by itself
        for record in engine_records(package.manifest):
            cc, name = (None, None) if gpu is None else (gpu.compute_capability, gpu.name)
            ok, reason = engine_compatibility(record, versions.get(record.runtime), cc, name)
            try:
                package.verify([record.file_record()])
            except LiverLesionError as exc:
                ok, reason = False, f"{exc}; rebuild it with liverlesion build-engine"
            rows.append({"file": record.file, "precision": record.precision, "runtime": record.runtime,
                         "runtime_title": record.runtime_title, "tensorrt": record.tensorrt,
                         "gpu": record.gpu_name, "compute_capability": record.compute_capability,
                         "compute_capabilities": list(record.compute_capabilities),
                         "batch": [record.min_batch, int(record.profile["opt"][0]), record.max_batch],
                         "dla_core": record.dla_core, "graph": record.graph, "built": record.built, "runs_here": ok,
                         "reason": reason})
    machine = {"tensorrt": None if versions[TENSORRT] is None else str(versions[TENSORRT]),
               "tensorrt_rtx": None if versions[TENSORRT_RTX] is None else str(versions[TENSORRT_RTX]),
               "gpu": None if gpu is None else gpu.name,
               "compute_capability": None if gpu is None else gpu.cc_text}
    if args.json:
        print(json.dumps({"machine": machine, "engines": rows}, indent=2))
        return 0
    print(f"this machine: TensorRT {machine['tensorrt'] or 'not installed'}; TensorRT-RTX "
          f"{machine['tensorrt_rtx'] or 'not installed'}; "
          f"GPU {gpu.describe() if gpu is not None else 'none found'}")
    if not rows:
        print("the package has no TensorRT engines: liverlesion build-engine PACKAGE --precision fp16")
        return 0
    for row in rows:
        dla = f", DLA core {row['dla_core']}" if row["dla_core"] is not None else ""
        batch = "/".join(str(b) for b in row["batch"])
        ccs = " ".join(row["compute_capabilities"])
        gpus = f"{row['gpu']} (sm {ccs})" if row["gpu"] else f"any GPU of compute capability {ccs}"
        graph = ", slice graph (stored slice in)" if row["graph"] == "slice" else ""
        print(f"{'yes' if row['runs_here'] else 'no ':4} {row['file']}  {row['precision']}{graph}, "
              f"{row['runtime_title']} {row['tensorrt']}, {gpus}{dla}, batch min/opt/max "
              f"{batch}, built {row['built']}")
        print(f"     {row['reason']}")
    return 0
