"""``liverlesion inspect``: a package's manifest as a readable summary, checksums re-verified.

Runtime only: reads JSON, hashes files and reads the graphs' binding; no torch, no onnx.
Prints the package digest an integrator pins (``predict --expect-digest``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "inspect", help="summarise a model package and re-verify its checksums",
        description="Print a model package's manifest as a readable summary (model, input spec, labels, "
                    "preprocessing, files, calibration, accuracy per precision, engines) after checking "
                    "every file's size and sha256 and the manifest against what the model files were exported "
                    "for. Prints the package digest to pin with predict --expect-digest.",
    )
    parser.add_argument("package", type=Path, metavar="PACKAGE", help="package folder or .zip archive")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON instead")


def _score(value: Any, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def summary(manifest: Any, root: Path) -> str:
    """The manifest as lines of text."""
    from ..package import package_digest

    raw = manifest.raw
    model, spec = raw["model"], raw["input"]
    lines = [f"package {root}",
             f"  digest       {package_digest(manifest)}  (pin: --expect-digest; engines built later are not "
             "in it)",
             f"  model        {model['name']} {model['version']} ({model['arch']})"
             + (f", {model['parameters']:,} parameters" if model.get("parameters") is not None else "")
             + (f", {model['gflops_per_slice']} GFLOP/slice" if model.get("gflops_per_slice") is not None else "")]
    if model.get("created"):
        lines.append(f"  created      {model['created']}")
    grid = manifest.grid
    lines.append(f"  input        '{spec['name']}' {spec.get('dtype', 'float32')} {spec.get('shape')} "
                 f"{spec['units']}, grid {grid.size[0]}x{grid.size[1]} px at "
                 f"{grid.spacing_mm[0]:g} x {grid.spacing_mm[1]:g} mm"
                 + (f", max batch {spec['max_batch']}" if "max_batch" in spec else ""))
    if "resample" in spec:
        lines.append("  resample     " + ", ".join(f"{k} {v}" for k, v in spec["resample"].items()))
    for name, out in manifest.outputs.items():
        lines.append(f"  output       '{name}' {out.get('dtype')} {out.get('shape')}")
    lines.append("  labels       " + ", ".join(f"{i} {n}" for i, n in enumerate(manifest.labels)))
    if manifest.lesion_classes:
        lines.append("  classes      " + ", ".join(manifest.lesion_classes))
    windows = manifest.preprocessing.windows
    lines.append("  windows (HU) " + ", ".join(f"[{lo:g}, {hi:g}]" for lo, hi in windows))
    lines.append("  files (sha256 and size verified)")
    for f in manifest.files:
        extra = ", ".join(f"{k} {v}" for k, v in f.extra.items() if k in ("form", "opset"))
        lines.append(f"    {f.path:<28} {f.role:<12} {f.precision or '-':<5} {f.size / 1e6:>8.2f} MB  "
                     f"{f.sha256[:12]}  {extra}")
    calib = raw.get("calibration")
    if calib:
        lines.append(f"  calibration  {calib.get('slices')} {calib.get('source')} slices from "
                     f"{calib.get('data')}, method {calib.get('method')}; {calib.get('selection', '')}")
    quant = raw.get("quantization") or {}
    if quant.get("extra_excluded_blocks"):
        lines.append("  INT8 kept in float: " + ", ".join(quant["extra_excluded_blocks"]))
    accuracy = raw.get("accuracy") or {}
    if accuracy:
        first = next(iter(accuracy.values()))
        lines.append(f"  accuracy on {first.get('slices', '?')} slices ({first.get('data', '')})")
        width = max([6, *(len(k) for k in accuracy)])
        lines.append(f"    {'':<{width}}{'lesion Dice':>12}{'liver Dice':>12}{'accuracy':>10}{'agree FP32':>12}")
        for precision, s in accuracy.items():  # the manifest validated each score as a number or null
            met = "" if "meets_target" not in s else (
                "  target met" if s["meets_target"] else "  TARGET MISSED")
            lines.append(f"    {precision:<{width}}{_score(s.get('lesion_dice'), 12, 4)}"
                         f"{_score(s.get('liver_dice'), 12, 4)}{_score(s.get('accuracy'), 10, 4)}"
                         f"{_score(s.get('agreement_with_fp32'), 12, 5)}{met}")
    versions = raw.get("versions") or {}
    if versions:
        lines.append("  made with    " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    engines = manifest.engines
    lines.append(f"  engines      {len(engines) or 'none'}")
    for e in engines:
        gpu = e.get("gpu")
        gpu_name = gpu.get("name", "?") if isinstance(gpu, dict) else gpu
        lines.append(f"    {e.get('file', e.get('path', '?'))}: TensorRT {e.get('tensorrt', '?')}, {gpu_name}, "
                     f"{e.get('precision', '?')}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json

    from ..package import load_package

    with load_package(args.package) as package:
        if args.json:
            print(json.dumps(package.manifest.to_dict(), indent=2))
        else:
            print(summary(package.manifest, Path(args.package)))
    return 0
