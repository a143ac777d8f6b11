"""``liverlesion predict``: run a model package on CT slices; print one line each, write what was asked.

Inputs are DICOM files, NIfTI volumes (with ``--index``) or ``.npy`` HU arrays (with
``--spacing``, else the package default). A bad input is reported on stderr and the
others still run; the exit status is 1 when any input failed. Output targets are checked
before the model is loaded (exit status 2); SEG/SR names come from the source's SOP
Instance UID, checked to be a DICOM UID, so they cannot name another folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..backends.choice import PRECISIONS as SDK_PRECISIONS
from ..backends.registry import BACKEND_NAMES
from ..backends.registry import BACKENDS as ROWS

BACKENDS = ("auto", *BACKEND_NAMES)
PRECISIONS = ("auto", *SDK_PRECISIONS)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict", help="segment and classify liver lesions on CT slices with a model package",
        description="Run a model package on CT slices (DICOM files, NIfTI volumes with --index, or .npy "
                    "arrays of HU) and print one line per input: slice class, lesions with their areas, time "
                    "and backend. Optionally write a JSON list, DICOM SEG and SR objects, and overlay PNGs.",
    )
    add = parser.add_argument
    add("package", type=Path, metavar="PACKAGE", help="model package folder or .zip archive")
    add("inputs", type=Path, nargs="+", metavar="INPUT", help="DICOM file, NIfTI volume or .npy HU array")
    add("--backend", choices=BACKENDS, default="auto",
        help="inference backend (default: auto, the fastest here)")
    add("--precision", choices=PRECISIONS, default="auto", help="model precision (default: auto)")
    add("--provider", choices=tuple(ROWS["onnxruntime"].variants), help="onnxruntime execution provider")
    add("--threads", type=int, metavar="N", help="CPU threads for onnxruntime / OpenVINO / torch")
    add("--index", type=int, metavar="K", help="axial slice of each NIfTI volume (0 = nearest the feet)")
    add("--frame", type=int, metavar="F", help="frame of each multi-frame DICOM object (0-based)")
    add("--spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"),
        help="pixel spacing of .npy arrays (default: the package's)")
    add("--allow-non-hu", action="store_true",
        help="accept values that are not plausible CT HU (a Rescale Type other than HU, no air or fat)")
    add("--json", type=Path, metavar="OUT", help="write the results as a JSON list ('-' for stdout)")
    add("--masks", choices=("summary", "rle", "none"), default="summary",
        help="label maps in the JSON: pixel counts (default), run-length encoded, or none")
    add("--dicom-seg", type=Path, metavar="DIR",
        help="write a DICOM SEG per DICOM input, named after its SOP instance")
    add("--dicom-sr", type=Path, metavar="DIR",
        help="write a TID 1500 SR per DICOM input (and its SEG there too unless --dicom-seg is given)")
    add("--overlay", type=Path, metavar="PNG_OR_DIR",
        help="write overlay PNGs: a .png file name (numbered for several inputs) or a folder")
    add("--slice-thickness", type=float, metavar="MM",
        help="slice thickness written in the DICOM SEG of a source that records none (else it is refused)")
    add("--no-warmup", action="store_true", help="skip the warm-up run on load")
    add("--expect-digest", metavar="HEX", help="refuse any package whose digest (liverlesion inspect) is not HEX")
    add("--trust-device-builds", action="store_true",
        help="with --expect-digest: also use the engines and caches built on this device, outside the digest")


def _load_input(analyzer: Any, path: Path, args: argparse.Namespace) -> Any:
    """A SliceInput for one command-line input."""
    from ..errors import DataFormatError
    from ..input_limits import regular_file
    from ..sdk.options import PredictOptions

    options = PredictOptions(index=args.index, frame=args.frame, allow_non_hu=args.allow_non_hu)
    if path.suffix.lower() == ".npy":
        import numpy as np

        regular_file(path, "a .npy array of HU")  # np.load would wait forever on a FIFO
        try:  # memory-mapped: the SDK checks the header's shape before anything is read or copied
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataFormatError(f"{path}: not a readable .npy array of HU ({exc})") from None
        return replace(options, spacing=args.spacing).load(array, analyzer.default_spacing)
    return options.load(path)  # --spacing applies to .npy arrays only


def _check_targets(args: argparse.Namespace) -> None:
    """Refuse output targets that cannot be written, before the model is loaded (a typed error: exit 2).

    The one place that probes each folder by creating a file in it; the writers do not.
    """
    from ..sdk.outputs.targets import check_file, check_folder

    if args.json is not None and str(args.json) != "-":
        check_file(args.json, "--json", create_parents=True, probe=True)
    for option, folder in (("--dicom-seg", args.dicom_seg), ("--dicom-sr", args.dicom_sr)):
        if folder is not None:
            check_folder(folder, option, probe=True)
    if args.overlay is not None:
        if args.overlay.suffix.lower() == ".png":
            check_file(args.overlay, "--overlay", create_parents=True, probe=True)
        else:
            check_folder(args.overlay, "--overlay", probe=True)


def _stem(slice_: Any) -> str:
    """File stem for DICOM outputs: the source SOP Instance UID (a DICOM UID: digits and dots) and frame."""
    from ..sdk.outputs.dicom import check_uid

    uid = check_uid(slice_.source.get("sop_instance_uid"), "the source's SOP Instance UID")
    frame = slice_.source.get("frame")
    return uid if frame is None else f"{uid}_frame{frame}"


def _dicom_stem(slice_: Any, path: Path, args: argparse.Namespace, written: dict[str, Path]) -> str | None:
    """The stem of this input's SEG/SR (None if none is asked for); refused if an earlier input wrote it."""
    from ..errors import InputError

    if not (args.dicom_seg or args.dicom_sr):
        return None
    if slice_.dataset is None:
        kind = slice_.source.get("kind")
        raise InputError(f"{path}: DICOM SEG/SR need a DICOM input; this is a {kind} slice")
    stem = _stem(slice_)
    if stem in written:  # same SOP instance (and frame) twice: refuse rather than overwrite its SEG/SR
        raise InputError(f"SOP instance {stem} already had its SEG/SR written for input {written[stem]}; not "
                         "overwriting them (each input must be a distinct SOP instance, or frame)")
    return stem


def _overlay_path(target: Path, path: Path, number: int, count: int) -> Path:
    from ..sdk.outputs.targets import inside

    if target.suffix.lower() == ".png":
        return target if count == 1 else target.with_name(f"{target.stem}_{number}{target.suffix}")
    stem = Path(path.name.removesuffix(".gz")).stem
    return inside(target, f"{stem}_{number}.png" if count > 1 else f"{stem}.png", "--overlay")


def _write_outputs(prediction: Any, slice_: Any, stem: str | None, path: Path, number: int, count: int,
                   args: argparse.Namespace) -> list[str]:
    """DICOM SEG / SR (when ``stem``) and overlay for one input; returns the written paths."""
    from ..sdk import save_dicom, write_overlay
    from ..sdk.outputs.targets import inside, make_folder

    written = []
    if stem is not None:
        seg = prediction.to_dicom_seg(slice_thickness_mm=args.slice_thickness)
        sr = prediction.to_dicom_sr(None, seg) if args.dicom_sr else None  # both built before either is written
        option = "--dicom-seg" if args.dicom_seg else "--dicom-sr"
        seg_dir = make_folder(args.dicom_seg or args.dicom_sr, option)
        written.append(str(save_dicom(seg, inside(seg_dir, f"{stem}_seg.dcm", option))))
        if sr is not None:
            sr_dir = make_folder(args.dicom_sr, "--dicom-sr")
            written.append(str(save_dicom(sr, inside(sr_dir, f"{stem}_sr.dcm", "--dicom-sr"))))
    if args.overlay:
        target = _overlay_path(args.overlay, path, number, count)
        make_folder(target.parent, "--overlay")
        written.append(str(write_overlay(slice_.hu, prediction, target)))
    return written


def _dump(results: list[dict[str, Any]], target: Path) -> None:
    from ..atomic import atomic_write_bytes
    from ..errors import InputError
    from ..sdk.outputs.targets import check_file, make_folder

    text = json.dumps(results, indent=2) + "\n"
    if str(target) == "-":
        sys.stdout.write(text)
    else:
        make_folder(target.absolute().parent, "--json")
        check_file(target, "--json")
        try:
            atomic_write_bytes(target, text.encode())
        except OSError as exc:
            raise InputError(f"--json: cannot write {target} ({exc.strerror or exc})") from None


def run(args: argparse.Namespace) -> int:
    from ..errors import LiverLesionError
    from ..sdk import LesionAnalyzer

    results: list[dict[str, Any]] = []
    failed = 0
    quiet = args.json is not None and str(args.json) == "-"  # stdout carries the JSON then
    say = (lambda text: print(text, file=sys.stderr)) if quiet else print
    _check_targets(args)
    with LesionAnalyzer.load(args.package, args.backend, args.precision, provider=args.provider,
                             threads=args.threads, warmup=not args.no_warmup,
                             expect_digest=args.expect_digest,
                             trust_device_builds=args.trust_device_builds) as analyzer:
        say(f"{args.package}: {analyzer.selection.summary()}")
        stems: dict[str, Path] = {}  # SEG/SR stems written so far, and by which input
        for number, path in enumerate(args.inputs, start=1):
            try:
                slice_ = _load_input(analyzer, path, args)
                stem = _dicom_stem(slice_, path, args, stems)
                prediction = analyzer.predict(slice_)
                written = _write_outputs(prediction, slice_, stem, path, number, len(args.inputs), args)
                if stem is not None:
                    stems[stem] = path
                record = {"input": str(path), **prediction.to_dict(masks=args.masks), "files": written}
            except LiverLesionError as exc:
                failed += 1
                print(f"{path}: error: {exc}", file=sys.stderr)
                results.append({"input": str(path), "error": str(exc), "error_type": type(exc).__name__})
                continue
            except Exception as exc:  # noqa: BLE001 - last safety net: one input's failure must not end the run
                failed += 1
                print(f"{path}: unexpected error (a bug, please report it): {type(exc).__name__}: {exc}",
                      file=sys.stderr)
                results.append({"input": str(path), "error": str(exc), "error_type": type(exc).__name__,
                                "unexpected": True})
                continue
            say(f"{path}: {prediction.summary()} [{analyzer.backend} {analyzer.precision}]")
            results.append(record)
    if args.json is not None:
        _dump(results, args.json)
    if failed:
        print(f"{failed} of {len(args.inputs)} input(s) failed", file=sys.stderr)
    return 1 if failed else 0
