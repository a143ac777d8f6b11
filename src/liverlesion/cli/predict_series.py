"""``liverlesion predict-series``: one whole series through a model package: 3D lesions, one SEG, one SR.

The series is found and checked from its headers first (a folder holding several CT series
and no ``--series-uid`` is refused with the list, exit status 2), and the output targets are
checked, all before the model is loaded. A progress bar on stderr counts slices; stdout says
which series was chosen and why, then one line per 3D lesion, the liver volume and the burden.
Every output is built in memory first and each is written atomically, so an error leaves none
of them half written (and none written at all when building one fails).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .predict import BACKENDS, PRECISIONS, ROWS


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict-series", help="segment a whole CT series: 3D lesions, RECIST axes, volumes, one SEG and SR",
        description="Run a model package on every slice of one CT series (a DICOM folder, a NIfTI volume, or a "
                    ".npy 3-D array of HU with --spacing), join the lesions across slices, and print each 3D "
                    "lesion (type, volume, RECIST long and short axis), the liver volume and the lesion burden. "
                    "Optionally write one DICOM SEG and one TID 1500 SR for the series, a JSON report and a "
                    "NIfTI label volume.",
    )
    add = parser.add_argument
    add("package", type=Path, metavar="PACKAGE", help="model package folder or .zip archive")
    add("source", type=Path, metavar="SOURCE",
        help="DICOM folder (searched recursively) or file, NIfTI volume, or .npy 3-D HU array (slices, rows, cols)")
    add("--series-uid", metavar="UID", help="the Series Instance UID to run where SOURCE holds several series")
    add("--spacing", type=float, nargs=3, metavar=("SLICE_MM", "ROW_MM", "COL_MM"),
        help="voxel spacing of a .npy array (required for one)")
    add("--backend", choices=BACKENDS, default="auto", help="inference backend (default: auto, the fastest here)")
    add("--precision", choices=PRECISIONS, default="auto", help="model precision (default: auto)")
    add("--provider", choices=tuple(ROWS["onnxruntime"].variants), help="onnxruntime execution provider")
    add("--threads", type=int, metavar="N", help="CPU threads for onnxruntime / OpenVINO / torch")
    add("--batch-size", type=int, metavar="N", help="slices per backend run (default: the analyzer's)")
    add("--readers", type=int, choices=(1, 2), help="threads reading the next batch (default: 1 up to 4 CPUs, else 2)")
    add("--allow-non-hu", action="store_true",
        help="accept values that are not plausible CT HU (a Rescale Type other than HU, no air or fat)")
    add("--dicom-seg", type=Path, metavar="FILE", help="write the series' DICOM SEG (one multi-frame object)")
    add("--dicom-sr", type=Path, metavar="FILE",
        help="write the series' TID 1500 SR (and its SEG beside it as FILE_seg.dcm unless --dicom-seg is given)")
    add("--json", type=Path, metavar="OUT", help="write the series report as JSON ('-' for stdout)")
    add("--nifti", type=Path, metavar="FILE", help="write the label volume as NIfTI (.nii or .nii.gz)")
    add("--slice-thickness", type=float, metavar="MM",
        help="slice thickness written in the SEG when the source records none")
    add("--no-warmup", action="store_true", help="skip the warm-up run on load")
    add("--expect-digest", metavar="HEX", help="refuse any package whose digest (liverlesion inspect) is not HEX")
    add("--trust-device-builds", action="store_true",
        help="with --expect-digest: also use the engines and caches built on this device, outside the digest")
    add("--quiet", action="store_true", help="no progress bar on stderr")


def _targets(args: argparse.Namespace) -> dict[str, Path]:
    """Every output file by option, checked before anything is read (a typed error: exit 2)."""
    from ..errors import InputError
    from ..sdk.outputs.targets import check_file
    from ..sdk.series.result import nifti_compressed

    targets: dict[str, Path] = {}
    if args.dicom_seg is not None:
        targets["--dicom-seg"] = args.dicom_seg
    if args.dicom_sr is not None:
        targets["--dicom-sr"] = args.dicom_sr
        if args.dicom_seg is None:  # the SR references the SEG: it is stored too
            targets["--dicom-seg"] = args.dicom_sr.with_name(f"{args.dicom_sr.stem}_seg.dcm")
    if args.nifti is not None:
        nifti_compressed(args.nifti, "--nifti")
        targets["--nifti"] = args.nifti
    if args.json is not None and str(args.json) != "-":
        targets["--json"] = args.json
    seen: dict[Path, str] = {}
    for option, path in targets.items():
        check_file(path, option, create_parents=True, probe=True)
        same = seen.get(path.absolute())
        if same is not None:
            raise InputError(f"{option} and {same} both name {path}; accepted: a separate file for each output")
        seen[path.absolute()] = option
    return targets


def _source(args: argparse.Namespace) -> Any:
    """SOURCE as open_series takes it: a path, or a .npy array (memory-mapped, with --spacing)."""
    from ..errors import DataFormatError, InputError

    if args.source.suffix.lower() != ".npy":
        if args.spacing is not None:
            raise InputError("--spacing is for a .npy array; DICOM and NIfTI sources carry their own spacing")
        return args.source
    import numpy as np

    from ..input_limits import regular_file

    regular_file(args.source, "a .npy 3-D array of HU")
    try:  # memory-mapped: each slice is read when the pipeline reaches it
        return np.load(args.source, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"{args.source}: not a readable .npy array of HU ({exc})") from None


def _open(args: argparse.Namespace, say: Any) -> Any:
    """The one series of SOURCE, and a line saying why it was chosen."""
    from ..errors import InputError
    from ..sdk.series.source import SeriesChoiceError, open_series

    try:
        series = open_series(_source(args), series_uid=args.series_uid,
                             spacing=None if args.spacing is None else tuple(args.spacing),
                             allow_non_hu=args.allow_non_hu)
    except SeriesChoiceError as exc:
        raise SeriesChoiceError(str(exc).replace("pass series_uid=", "give --series-uid"), exc.series) from None
    info = series.info
    if (args.dicom_seg or args.dicom_sr) and info.kind != "dicom":
        raise InputError(f"--dicom-seg/--dicom-sr need a DICOM series; {args.source} is a "
                         f"{'NIfTI volume' if info.kind == 'nifti' else '3-D array'} (use --nifti or --json)")
    if args.series_uid is not None:
        why = "asked for with --series-uid"
    elif info.kind == "dicom":
        why = f"the only CT image series in {args.source}"
    else:
        why = f"a {'NIfTI volume' if info.kind == 'nifti' else '3-D array'} holds one series"
    say(f"series {info.describe()}: {why}")
    for warning in series.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return series


def _dicom_bytes(dataset: Any, option: str) -> bytes:
    """A DICOM object as a Part 10 file's bytes (written later, with the other outputs)."""
    import io

    import pydicom

    from ..errors import DicomError

    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
        raise DicomError(f"{option}: the object cannot be written as a DICOM Part 10 file "
                         f"({type(exc).__name__}: {exc})") from None
    return buffer.getvalue()


def _outputs(result: Any, args: argparse.Namespace, targets: dict[str, Path]) -> dict[str, bytes]:
    """Every output's bytes by option, all built before any is written."""
    from ..sdk.series.result import nifti_compressed

    built: dict[str, bytes] = {}
    if "--dicom-seg" in targets:
        seg = result.to_dicom_seg(slice_thickness_mm=args.slice_thickness)
        sr = result.to_dicom_sr(seg) if "--dicom-sr" in targets else None
        built["--dicom-seg"] = _dicom_bytes(seg, "--dicom-seg")
        if sr is not None:
            built["--dicom-sr"] = _dicom_bytes(sr, "--dicom-sr")
    if "--nifti" in targets:
        built["--nifti"] = result.to_nifti_bytes(compressed=nifti_compressed(targets["--nifti"], "--nifti"))
    if args.json is not None:
        report = {"source": str(args.source), **result.to_dict(),
                  "files": {option: str(path) for option, path in targets.items() if option != "--json"}}
        built["--json"] = (json.dumps(report, indent=2, allow_nan=False) + "\n").encode()
    return built


def _write(built: dict[str, bytes], targets: dict[str, Path]) -> list[str]:
    from ..atomic import atomic_write_bytes
    from ..errors import InputError
    from ..sdk.outputs.targets import check_file, make_folder

    written = []
    for option, data in built.items():
        if option == "--json" and option not in targets:
            sys.stdout.write(data.decode())
            continue
        path = targets[option]
        make_folder(path.absolute().parent, option)
        check_file(path, option)  # still a regular file (or none) after the run
        try:
            atomic_write_bytes(path, data)
        except OSError as exc:
            raise InputError(f"{option}: cannot write {path} ({exc.strerror or exc})") from None
        written.append(f"{option} {path}")
    return written


def run(args: argparse.Namespace) -> int:
    from ..bench.progress import Progress
    from ..sdk import LesionAnalyzer

    quiet = args.json is not None and str(args.json) == "-"  # stdout carries the JSON then
    say = (lambda text: print(text, file=sys.stderr)) if quiet else print
    targets = _targets(args)
    series = _open(args, say)
    with LesionAnalyzer.load(args.package, args.backend, args.precision, provider=args.provider,
                             threads=args.threads, warmup=not args.no_warmup, expect_digest=args.expect_digest,
                             trust_device_builds=args.trust_device_builds) as analyzer:
        say(f"{args.package}: {analyzer.selection.summary()}")
        bar = Progress(1, enabled=not args.quiet)
        bar.start(f"{series.info.series_uid or args.source}: {len(series)} slices")
        result = analyzer.predict_series(series, batch_size=args.batch_size, readers=args.readers,
                                         progress=lambda done, total: bar.update(done, total, "slices"))
        t = result.timings
        bar.finish(f"{len(series)}/{len(series)} slices in {t['wall_s']:.2f} s ({t['slices_per_s']:.1f} slices/s, "
                   f"batch {t['batch_size']})")
        built = _outputs(result, args, targets)
    for line in result.summary():
        say(line)
    for line in _write(built, targets):
        say(f"wrote {line}")
    return 0
