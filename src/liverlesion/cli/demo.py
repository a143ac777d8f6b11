"""``liverlesion demo``: the whole job end to end on built-in phantom data.

Every step is the same CLI command a user would type, printed before it runs,
so the demo doubles as a worked example: phantoms -> LiTS pretraining ->
joint fine-tuning (transfer) -> evaluation -> export (FP32/FP16) -> INT8
calibrated on LiTS slices -> predictions on phantom and real DICOM slices.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LiverLesionError, MissingDependencyError, install_hint

#: What the demo's steps import, by extra: (module, extra, the steps that need it).
REQUIRED = (("torch", "train", "training"), ("safetensors", "train", "checkpoints"),
            ("nibabel", "train", "the LiTS NIfTI phantoms"), ("onnx", "train", "export"),
            ("onnxruntime", "train", "export's parity check and INT8 accuracy"))
#: Optional outputs, skipped with a note when their extra is missing: (module, extra, what is skipped).
OPTIONAL = (("matplotlib", "viz", "overlay images (--overlay)"),
            ("highdicom", "dicom", "DICOM SEG and SR of the real CT slice"))


@dataclass(frozen=True)
class DemoSize:
    """How big the demo's data, network and training are."""

    lits_volumes: int
    lits_slices: int
    lesion_slices: int
    size: int
    width: int
    grid_size: int
    grid_spacing: float
    pretrain_epochs: int
    finetune_epochs: int
    calib_slices: int
    held_out_slices: int


#: Full demo (< 15 min on 2 cores) and --quick (< 3 min, a smoke check of every step).
SIZES = {
    "full": DemoSize(lits_volumes=6, lits_slices=32, lesion_slices=150, size=512, width=16, grid_size=128,
                     grid_spacing=3.0, pretrain_epochs=30, finetune_epochs=40, calib_slices=64,
                     held_out_slices=120),
    "quick": DemoSize(lits_volumes=3, lits_slices=12, lesion_slices=36, size=256, width=8, grid_size=64,
                      grid_spacing=6.0, pretrain_epochs=8, finetune_epochs=12, calib_slices=16,
                      held_out_slices=24),
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline end to end on generated phantoms",
        description="Generate phantoms, pretrain on LiTS-format volumes, fine-tune the joint network, export "
                    "the model package (FP32, FP16, INT8) and run predictions, printing each command.")
    parser.add_argument("--out", type=Path, required=True, help="output folder (phantoms/, checkpoints/, package/)")
    parser.add_argument("--quick", action="store_true", help="tiny model and data: a smoke check in a few minutes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantoms and of training (0)")


class _Steps:
    """Runs CLI steps, printing each command and timing it."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def __call__(self, title: str, argv: list[str]) -> None:
        from . import main

        print(f"\n== {title}\n$ liverlesion {shlex.join(argv)}", flush=True)
        start = time.perf_counter()
        code = main(argv)
        self.timings[title] = time.perf_counter() - start
        if code != 0:
            raise LiverLesionError(f"demo step '{title}' failed (exit code {code}); see the messages above")


def _importable(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (a module blocked in sys.modules is not)."""
    import importlib.util
    import sys

    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def preflight(find: Any = None) -> set[str]:
    """Check every step's imports before the first step runs (not minutes into training).

    Raises MissingDependencyError naming the extras when a required one is missing; returns
    the optional modules that are missing, whose outputs the demo then skips.
    """
    find = find or _importable
    missing = [(m, extra, why) for m, extra, why in REQUIRED if not find(m)]
    if missing:
        extras = ",".join(sorted({extra for _, extra, _ in missing}))
        needs = "; ".join(f"{why} needs '{m}'" for m, _, why in missing)
        raise MissingDependencyError(f"the demo cannot run: {needs}; install: {install_hint(extras)}")
    skipped = set()
    for module, extra, what in OPTIONAL:
        if not find(module):
            skipped.add(module)
            print(f"note: '{module}' is not installed, so the demo skips {what} "
                  f"({install_hint(extra)} adds them)", flush=True)
    return skipped


def run(args: argparse.Namespace) -> int:
    skipped = preflight()
    overlays = [] if "matplotlib" in skipped else ["--overlay", str(args.out / "overlays")]
    size = SIZES["quick" if args.quick else "full"]
    out: Path = args.out
    phantoms, checkpoints, package = out / "phantoms", out / "checkpoints", out / "package"
    pretrained, joint = checkpoints / "lits-pretrain", checkpoints / "joint"
    reports = out / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    step = _Steps()
    started = time.perf_counter()
    seed = str(args.seed)

    step("phantoms in the LiTS and lesion-slice formats", [
        "phantom", "--out", str(phantoms), "--seed", seed, "--lits-volumes", str(size.lits_volumes),
        "--lits-slices", str(size.lits_slices), "--lesion-slices", str(size.lesion_slices),
        "--size", str(size.size)])
    step("stage 1: pretrain a 3-label lesion segmentation network on LiTS volumes", [
        "train", "--stage", "pretrain", "--data", str(phantoms / "lits"), "--out", str(pretrained),
        "--epochs", str(size.pretrain_epochs), "--seed", seed, "--width", str(size.width),
        "--grid-size", str(size.grid_size), "--grid-spacing", str(size.grid_spacing),
        "--json", str(reports / "pretrain.json")])
    step("stages 2+3: transfer the LiTS weights, fine-tune the joint 5-label network", [
        "train", "--stage", "finetune", "--arch", "joint", "--data", str(phantoms / "lesion_slices"),
        "--init", str(pretrained), "--out", str(joint), "--epochs", str(size.finetune_epochs), "--seed", seed,
        "--json", str(reports / "finetune.json")])
    step("evaluate the joint network on its held-out patients", [
        "evaluate", str(joint), "--data", str(phantoms / "lesion_slices"), "--split", "val",
        "--json", str(reports / "evaluate.json")])
    held_out = phantoms / "held_out"
    step("held-out phantom slices (another seed, never trained on) to measure each precision", [
        "phantom", "--out", str(held_out), "--seed", str(args.seed + 1), "--lits-volumes", "0",
        "--lesion-slices", str(size.held_out_slices), "--size", str(size.size)])
    step("export the fused graph (HU in, labels out) to ONNX FP32 and FP16", [
        "export", str(joint), "--out", str(package), "--eval-data", str(held_out / "lesion_slices")])
    step("INT8: calibrate on LiTS slices, measure against FP32", [
        "quantize", str(package), "--calib", str(phantoms / "lits"), "--eval-data",
        str(held_out / "lesion_slices"), "--slices", str(size.calib_slices)])
    step("slice graphs (resampling onto the model grid and back inside the graph, for GPUs), checked "
         "against the host path", ["slice-graphs", str(package), "--eval-data", str(held_out / "lesion_slices")])
    step("inspect the model package", ["inspect", str(package)])
    _rtx_engines(step, package)
    index = json.loads((phantoms / "lesion_slices" / "dataset.json").read_text())
    for case in _held_out_cases(index, reports / "finetune.json")[:2]:
        row_mm, col_mm = case["spacing_mm"]
        step(f"predict a held-out phantom slice ({case['id']}, a {case['class']})", [
            "predict", str(package), str(phantoms / "lesion_slices" / case["image"]),
            "--spacing", str(row_mm), str(col_mm), *overlays,
            "--json", str(reports / f"predict-{case['id']}.json")])
    real = _real_ct()
    if real:
        dicom = [] if "highdicom" in skipped else ["--dicom-seg", str(out / "dicom"), "--dicom-sr", str(out / "dicom")]
        step(f"predict on a real CT slice (pydicom's CT_small.dcm){', with DICOM SEG and SR out' if dicom else ''}", [
            "predict", str(package), real, *overlays, *dicom, "--json", str(reports / "predict-CT_small.json")])
    step("a whole series: LiTS phantom volume 0 (NIfTI; a pretraining volume, so this shows the series path, not "
         "accuracy) through predict-series: 3D lesions, volumes, RECIST axes", [
             "predict-series", str(package), str(phantoms / "lits" / "volume-0.nii.gz"),
             "--nifti", str(out / "series" / "labels-0.nii.gz"),
             "--json", str(reports / "series-0.json"), "--quiet"])

    _summary(out, reports, step.timings, time.perf_counter() - started)
    return 0


def _rtx_engines(step: _Steps, package: Path) -> None:
    """Where TensorRT-RTX is installed: AOT engines for RTX workstations, built here without a GPU."""
    from ..machine.runtimes import tensorrt_rtx_version

    if tensorrt_rtx_version() is None:
        print(f"note: TensorRT-RTX is not installed, so the demo builds no RTX workstation engines "
              f"({install_hint('tensorrt-rtx')} adds them)", flush=True)
        return
    for precision in ("fp16", "int8"):
        step(f"TensorRT-RTX {precision} engine for RTX GPUs (Ampere, Ada, Blackwell), built ahead of time on this "
             "CPU", ["build-engine", str(package), "--runtime", "tensorrt-rtx", "--precision", precision,
                     "--compute-capability", "8.6", "8.9", "12.0"])
    step("which engines run on this machine, and why not", ["engines", str(package)])


def _real_ct() -> str | None:
    """pydicom's own real CT slice, when pydicom ships it (never downloads)."""
    try:
        from pydicom.data import get_testdata_file

        path = get_testdata_file("CT_small.dcm", download=False)
    except Exception:  # noqa: BLE001 - an absent test file only shortens the demo
        return None
    return str(path) if path else None


def _held_out_cases(index: dict[str, Any], finetune_report: Path) -> list[dict[str, Any]]:
    """Lesion-slice cases of the patients fine-tuning held out (all cases if unknown)."""
    report = _load(finetune_report)
    held_out = set(report.get("data", {}).get("val_groups", []) or [])
    cases = [c for c in index["cases"] if not held_out or c["patient_id"] in held_out]
    by_class: dict[str, dict[str, Any]] = {}
    for case in cases:  # one slice of each class first, so the demo shows different lesions
        by_class.setdefault(case["class"], case)
    return list(by_class.values()) + [c for c in cases if c not in by_class.values()]


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _summary(out: Path, reports: Path, timings: dict[str, float], total: float) -> None:
    print("\n== summary")
    print(f"output: {out}  (phantoms/, checkpoints/, package/, overlays/, dicom/, reports/)")
    evaluation = _load(reports / "evaluate.json")
    metrics = evaluation.get("metrics", evaluation)
    if metrics:
        print("joint network, held-out phantom patients: "
              f"lesion Dice {metrics.get('lesion_dice', float('nan')):.3f}, "
              f"lesion recall {metrics.get('lesion_recall', float('nan')):.3f}, "
              f"liver Dice {metrics.get('liver_dice', float('nan')):.3f}, "
              f"class accuracy {metrics.get('accuracy', float('nan')):.3f}")
    from ..package.store import read_manifest

    try:
        manifest = read_manifest(out / "package")
        accuracy, files = manifest.accuracy, manifest.files
    except LiverLesionError:  # no package written: nothing to summarise
        accuracy, files = {}, ()
    if accuracy:
        width = max([10, *(len(k) + 1 for k in accuracy)])
        print(f"{'precision':<{width}}{'lesion Dice':>12}{'liver Dice':>12}{'accuracy':>10}{'agree FP32':>12}"
              f"{'MB':>8}")
        # each record's file: named by its own "accuracy" key, else by precision (bf16 runs the FP32 file)
        sizes = {f.extra.get("accuracy") or f.precision: f.size for f in files if f.role == "onnx"}
        for key, row in accuracy.items():
            file_key = {"bf16": "fp32"}.get(key, key.split("@")[0])
            print(f"{key:<{width}}{_nan(row.lesion_dice):>12.3f}{_nan(row.liver_dice):>12.3f}"
                  f"{_nan(row.accuracy):>10.3f}{_nan(row.agreement_with_fp32):>12.4f}"
                  f"{sizes.get(file_key, 0) / 1e6:>8.2f}")
    for report in sorted(reports.glob("predict-*.json")):
        for item in _load(report) or []:
            timing = item.get("timings", {})
            print(f"predict {Path(str(item.get('input', '?'))).name}: "
                  f"{item.get('slice_class') or 'no lesion'}, {len(item.get('lesions', []))} lesion(s), "
                  f"{timing.get('total_ms', float('nan')):.1f} ms on {item.get('backend')}/{item.get('precision')}")
    for title, seconds in timings.items():
        print(f"  {seconds:7.1f} s  {title}")
    print(f"  {total:7.1f} s  total")
    print("Phantoms are synthetic: these figures show the pipeline works, not clinical accuracy.")
