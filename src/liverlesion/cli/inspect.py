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


#: How the runtimes a file's ``nvidia_parser`` record names are written.
_TITLES = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT-RTX"}


def parser_verdict(record: Any, form: Any = None) -> str:
    """One line for a file's ``nvidia_parser`` record (written by export; free JSON, so read defensively)."""
    if not isinstance(record, dict):
        if form == "qdq-u8s8":
            return "NVIDIA parser: not for TensorRT (the CPU form, for onnxruntime CPU and OpenVINO)"
        return "NVIDIA parser: not checked (no TensorRT or TensorRT-RTX at export, or an older liverlesion)"
    runtime = _TITLES.get(str(record.get("runtime")), str(record.get("runtime")))
    seconds = record.get("build_seconds")
    built = "built" if record.get("built") else "not built"
    if record.get("built") and isinstance(seconds, (int, float)):
        built += f" in {seconds:.2f} s"
    return (f"NVIDIA parser: accepted by {runtime} {record.get('version')} (ONNX parser "
            f"{record.get('parser_version')}): {record.get('layers')} layers, {record.get('convolutions')} "
            f"convolutions ({record.get('int8_convolutions')} on int8 inputs), {built}")


def summary(manifest: Any, root: Path) -> str:
    """The manifest as lines of text."""
    from ..errors import PackageError
    from ..package import package_digest

    model, spec = manifest.model, manifest.input
    lines = [f"package {root}",
             f"  digest       {package_digest(manifest)}  (pin: --expect-digest; engines built later are not "
             "in it)",
             f"  model        {model.name} {model.version} ({model.arch})"
             + (f", {model.parameters:,} parameters" if model.parameters is not None else "")
             + (f", {model.gflops_per_slice} GFLOP/slice" if model.gflops_per_slice is not None else "")]
    if model.created:
        lines.append(f"  created      {model.created}")
    grid = manifest.grid
    lines.append(f"  input        '{spec.name}' {spec.dtype or 'float32'} {spec.shape} "
                 f"{spec.units}, grid {grid.size[0]}x{grid.size[1]} px at "
                 f"{grid.spacing_mm[0]:g} x {grid.spacing_mm[1]:g} mm"
                 + (f", max batch {spec.max_batch}" if spec.max_batch is not None else ""))
    if spec.resample is not None:
        lines.append("  resample     " + ", ".join(f"{k} {v}" for k, v in spec.resample.items()))
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
        if f.role == "onnx-slice":
            lines.append(f"      slice graph of {f.extra.get('wraps', '?')}: the stored slice in, labels on its grid "
                         "out")
        if f.role in ("onnx", "onnx-slice"):
            lines.append(f"      {parser_verdict(f.extra.get('nvidia_parser'), f.extra.get('form'))}")
    calib = manifest.calibration
    if calib is not None and calib.to_dict():
        lines.append(f"  calibration  {calib.slices} {calib.source} slices from "
                     f"{calib.data}, method {calib.method}; {calib.selection or ''}")
    quant = manifest.quantization
    if quant is not None and quant.extra_excluded_blocks:
        lines.append("  INT8 kept in float: " + ", ".join(quant.extra_excluded_blocks))
    accuracy = manifest.accuracy
    if accuracy:
        first = next(iter(accuracy.values()))
        lines.append(f"  accuracy on {'?' if first.slices is None else first.slices} slices ({first.data or ''})")
        width = max([6, *(len(k) for k in accuracy)])
        lines.append(f"    {'':<{width}}{'lesion Dice':>12}{'liver Dice':>12}{'accuracy':>10}{'agree FP32':>12}")
        for precision, s in accuracy.items():  # the manifest validated each score as a number or null
            met = "" if not s.has_verdict else ("  target met" if s.meets_target else "  TARGET MISSED")
            lines.append(f"    {precision:<{width}}{_score(s.lesion_dice, 12, 4)}"
                         f"{_score(s.liver_dice, 12, 4)}{_score(s.accuracy, 10, 4)}"
                         f"{_score(s.agreement_with_fp32, 12, 5)}{met}")
    lines += _slice_parity(manifest.slice_graph)
    versions = manifest.versions
    if versions:
        lines.append("  made with    " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    try:
        engines = manifest.engines
    except PackageError as exc:  # a summary still shows the rest; using the engines refuses them
        lines.append(f"  engines      {manifest.engine_count}, not all readable: {exc}")
        return "\n".join(lines)
    lines.append(f"  engines      {len(engines) or 'none'}")
    for e in engines:
        where = f"{e.gpu_name} ({e.sm})" if e.gpu_name else f"any GPU of {e.sm}"
        lines.append(f"    {e.file}: {e.runtime_title} {e.tensorrt}, {where}, {e.precision}")
    return "\n".join(lines)


def _slice_parity(section: Any) -> list[str]:
    """The slice graphs' agreement with the host path, one line per graph (``slice-graphs --eval-data``)."""
    parity = section.get("parity") if isinstance(section, dict) else None
    if not isinstance(parity, dict) or not parity:
        return []
    lines = [f"  slice graphs vs the host path ({section.get('parity_data') or '?'})"]
    for key, record in parity.items():
        if not isinstance(record, dict):
            continue
        differing = record.get("differing", 0)
        where = f", {record.get('boundary_share', 0):.0%} of them on label boundaries" if differing else ""
        lines.append(f"    {key:<18} labels equal on {record.get('agreement', float('nan')):.4%} of "
                     f"{record.get('pixels', 0)} input pixels ({differing} differ{where}); target "
                     f"{record.get('target', '?')}")
    return lines


def run(args: argparse.Namespace) -> int:
    import json

    from ..package import load_package

    with load_package(args.package) as package:
        if args.json:
            print(json.dumps(package.manifest.to_dict(), indent=2))
        else:
            print(summary(package.manifest, Path(args.package)))
    return 0
