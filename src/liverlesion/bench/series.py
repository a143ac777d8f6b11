"""``liverlesion bench --series``: a whole DICOM series from disk to SEG + SR written, against raw inference.

A series of N slices (default 200, 512 x 512) is synthesised on disk from a LiTS-format phantom
volume (``data.phantom.lits_phantom``; a volume of at most :data:`PHANTOM_SLICES` slices, read
back and forth along the feet-head axis, so the anatomy stays continuous and the phantom's
memory bounded) on a real CT header: pydicom's CT_small.dcm where pydicom ships it, else a
minimal CT header built with pydicom. Each configuration then times, in one run:

- end to end: ``predict_series`` on the folder (headers, decoding, resampling, inference,
  postprocessing, 3D lesions), then one DICOM SEG and one SR built and written;
- raw inference: the same analyzer's backend run (``LesionAnalyzer._infer``: ``Backend.infer`` on
  the host path) on one ready batch of the same size, as many times as the series needs, once
  before and once after the end-to-end run (their mean is reported, so load drifting during
  the run falls on both alike);

and reports their slices/s, the ratio (target :data:`TARGET_RATIO`: the host work hidden behind
inference), the batch size and the peak memory of the end-to-end run: the kernel's resident
high-water mark (VmHWM, reset before the run where Linux allows it) minus the resident memory
at its start (``timing.PeakRss``). The files are read from the page cache (just written), as a
series on a local disk read twice would be.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InputError, LiverLesionError

SCHEMA = "liverlesion.bench.series"
DEFAULT_SLICES = 200
DEFAULT_SIDE = 512
#: End-to-end slices/s as a share of raw batched inference that the series pipeline aims at.
TARGET_RATIO = 0.85
#: Slices of the phantom volume rendered (then read back and forth): bounds its memory (64 MB at 512 x 512).
PHANTOM_SLICES = 64
#: The HU stored in the files is HU + this (Rescale Intercept -1024), as CT_small.dcm stores it.
_INTERCEPT = -1024.0
_MB = 2**20


@dataclass(frozen=True)
class SyntheticSeries:
    """A series written by :func:`synthesize_series`: its folder, files (feet -> head) and geometry."""

    folder: Path
    paths: tuple[Path, ...]
    spacing_mm: tuple[float, float]
    slice_mm: float
    tumours: dict[str, Any]


def ct_header() -> Any:
    """A CT image header to copy: pydicom's CT_small.dcm (a real scanner's) if installed, else a minimal one."""
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm", download=False)
    if path is not None:
        return pydicom.dcmread(path)
    return _minimal_header()


def _minimal_header() -> Any:
    """The attributes a CT image needs to be read as one (patient, study, series, frame, image, pixels)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")  # CT Image Storage
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Liver", "PHANTOM", "", "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = datetime.now(timezone.utc).strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "000000"
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    ds.Manufacturer, ds.KVP, ds.SeriesNumber = "liverlesion bench", 120, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PositionReferenceIndicator, ds.PatientPosition = "", "FFS"
    ds.RescaleType = "HU"
    return ds


def synthesize_series(folder: str | Path, slices: int = DEFAULT_SLICES, *, side: int = DEFAULT_SIDE,
                      seed: int = 0) -> SyntheticSeries:
    """Write an N-slice CT series of a LiTS-format phantom into ``folder`` (created); slice 0 nearest the feet."""
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from ..data.phantom import lits_phantom

    if isinstance(slices, bool) or not isinstance(slices, int) or slices < 2:
        raise InputError(f"a benchmark series needs at least 2 slices; got {slices!r}")
    if isinstance(side, bool) or not isinstance(side, int) or not 64 <= side <= 1024:
        raise InputError(f"a benchmark series' slices are 64..1024 pixels a side; got {side!r}")
    hu, _, spacing, thickness, facts = lits_phantom(seed, 0, slices=min(slices, PHANTOM_SLICES), size=side)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ds = ct_header()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.SeriesDescription = "CT", f"liverlesion bench phantom {seed}"
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [float(spacing), float(spacing)]
    ds.SliceThickness = ds.SpacingBetweenSlices = float(thickness)
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, _INTERCEPT
    for keyword in ("LargestImagePixelValue", "SmallestImagePixelValue", "WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    corner = -0.5 * side * float(spacing)
    stored = [np.clip(np.rint(plane - _INTERCEPT), -32768, 32767).astype(np.int16).tobytes() for plane in hu]
    del hu
    paths = []
    for k in range(slices):
        period = 2 * len(stored) - 2 or 1  # 0, 1, ..., n-1, n-2, ..., 1, 0, 1, ...: continuous anatomy
        phase = k % period
        plane = phase if phase < len(stored) else period - phase
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        z = k * float(thickness)
        ds.ImagePositionPatient = [corner, corner, z]
        ds.SliceLocation = z
        ds.PixelData = stored[plane]
        path = folder / f"ct_{k:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return SyntheticSeries(folder, tuple(paths), (float(spacing), float(spacing)), float(thickness), facts)


# -- one configuration ----------------------------------------------------------------------------
def _raw(analyzer: Any, series: Any, batch: int, slices: int) -> float:
    """Raw batched inference, slices/s: one ready batch of ``batch`` slices run ceil(slices / batch) times."""
    from ..sdk.options import PredictOptions

    prepared = analyzer._prepare([(k, series.read(k % len(series))) for k in range(batch)], PredictOptions())
    for _ in range(2):  # the runtime's first runs at this batch size allocate
        analyzer._infer(prepared)
    runs = math.ceil(slices / batch)
    start = time.perf_counter()
    for _ in range(runs):
        analyzer._infer(prepared)
    return runs * batch / (time.perf_counter() - start)


def _end_to_end(analyzer: Any, folder: Path, out: Path, batch: int) -> tuple[float, dict[str, Any]]:
    """(seconds, details) of the folder read -> predict_series -> SEG + SR built and written."""
    from ..sdk.outputs.dicom import save_dicom
    from .timing import PeakRss

    memory = PeakRss()
    start = time.perf_counter()
    result = analyzer.predict_series(folder, batch_size=batch)
    outputs = time.perf_counter()
    seg = result.to_dicom_seg()
    sr = result.to_dicom_sr(seg)
    save_dicom(seg, out / "seg.dcm")
    save_dicom(sr, out / "sr.dcm")
    seconds = time.perf_counter() - start
    t = result.timings
    details = {
        "predict_series_s": round(outputs - start, 4), "seg_sr_s": round(seconds - (outputs - start), 4),
        "stages_ms": {k: round(float(t[k]), 2) for k in ("open_ms", "read_ms", "inference_ms", "postprocess_ms",
                                                          "wait_read_ms", "wait_write_ms", "measure_ms")},
        "readers": t["readers"], "lesions": len(result.lesions),
        "peak_memory_mb": round((memory.peak_bytes() - memory.start_bytes) / _MB, 1), "memory_method": memory.method,
        "seg_mb": round((out / "seg.dcm").stat().st_size / _MB, 2),
    }
    return seconds, details


def _row(package: Path, backend: str, precision: str, batch_size: int | None, synthetic: SyntheticSeries,
         out: Path, threads: int | None) -> dict[str, Any]:
    from ..sdk import LesionAnalyzer
    from ..sdk.series.source import open_series
    from .configs import BACKEND_SPECS

    row: dict[str, Any] = {"config": f"{backend} {precision}", "backend": backend, "precision": precision,
                           "status": "ok", "reason": None}
    name, provider = BACKEND_SPECS.get(backend, (backend, None))  # "onnxruntime-cuda": onnxruntime, provider cuda
    try:
        analyzer = LesionAnalyzer.load(package, name, precision, threads=threads, provider=provider)
    except LiverLesionError as exc:
        return {**row, "status": "unavailable", "reason": str(exc)}
    with analyzer:
        batch = analyzer._batch_size(batch_size)
        row.update(backend=analyzer.backend, precision=analyzer.precision, device=analyzer.device,
                   graph=analyzer.graph, batch=batch)
        try:
            series = open_series(synthetic.folder)
            count = len(series)
            before = _raw(analyzer, series, batch, count)
            seconds, details = _end_to_end(analyzer, synthetic.folder, out, batch)
            after = _raw(analyzer, series, batch, count)
        except LiverLesionError as exc:
            return {**row, "status": "failed", "reason": str(exc)}
    raw = 2.0 / (1.0 / before + 1.0 / after)  # the same slices in the two runs: the harmonic mean of their rates
    end_to_end = count / seconds
    ratio = round(end_to_end / raw, 4)  # the ratio reported is the one judged
    return {**row, "slices": count, "end_to_end_s": round(seconds, 4), "end_to_end_per_s": round(end_to_end, 2),
            "raw_per_s": round(raw, 2), "raw_runs_per_s": [round(before, 2), round(after, 2)],
            "ratio": ratio, "target_ratio": TARGET_RATIO, "met": ratio >= TARGET_RATIO, **details}


def run_series_bench(package: str | Path, *, slices: int = DEFAULT_SLICES, side: int = DEFAULT_SIDE,
                     backends: Sequence[str] = ("auto",), precisions: Sequence[str] = ("auto",),
                     batch_sizes: Sequence[int | None] = (None,), threads: int | None = None, seed: int = 0,
                     folder: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """One row per backend x precision x batch size (None: the analyzer's): synthesise the series (in a
    temporary folder, or ``folder``), then time it end to end against raw inference (see the module)."""
    from .machine import machine_info
    from .progress import Progress

    package = Path(package)
    configs = [(b, p, n) for b in backends for p in precisions for n in batch_sizes]
    bar = Progress(len(configs) + 1, enabled=progress)
    with tempfile.TemporaryDirectory(prefix="liverlesion-bench-series-") as scratch:
        bar.start(f"writing a {slices}-slice {side} x {side} DICOM series")
        synthetic = synthesize_series(Path(folder) if folder is not None else Path(scratch) / "ct", slices,
                                      side=side, seed=seed)
        bar.finish(f"{synthetic.folder} ({synthetic.spacing_mm[0]:.3f} mm pixels, {synthetic.slice_mm:g} mm slices)")
        rows: list[dict[str, Any]] = []
        for backend, precision, batch in configs:
            bar.start(f"{backend} {precision} batch {batch or 'default'}")
            out = Path(scratch) / f"out{len(rows)}"
            out.mkdir()
            row = _row(package, backend, precision, batch, synthetic, out, threads)
            rows.append(row)
            bar.finish(_note(row))
    return {"schema": SCHEMA, "liverlesion": __version__, "created": datetime.now(timezone.utc).isoformat(),
            "package": str(package), "machine": machine_info(),
            "series": {"slices": slices, "side": side, "spacing_mm": list(synthetic.spacing_mm),
                       "slice_mm": synthetic.slice_mm, "phantom": synthetic.tumours, "seed": seed},
            "target_ratio": TARGET_RATIO, "rows": rows}


def _note(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"{row['status']}: {row['reason']}"
    return (f"{row['end_to_end_per_s']:.1f} slices/s end to end, {row['raw_per_s']:.1f} raw "
            f"({100 * row['ratio']:.0f}%), peak {row['peak_memory_mb']:.0f} MB")


def format_series_table(result: dict[str, Any]) -> str:
    """A table: one line per configuration (slices/s end to end and raw, ratio, peak memory, batch)."""
    from .machine import format_header

    s = result["series"]
    lines = [format_header(result["machine"]), "",
             f"series: {s['slices']} slices of {s['side']} x {s['side']} from disk to SEG + SR written; target: end "
             f"to end >= {100 * result['target_ratio']:.0f}% of raw batched inference", ""]
    head = (f"{'backend':<22} {'precision':<9} {'batch':>5} {'e2e/s':>8} {'raw/s':>8} {'ratio':>6} {'met':>4} "
            f"{'peak MB':>8}")
    lines += [head, "-" * len(head)]
    for row in result["rows"]:
        if row["status"] != "ok":
            lines.append(f"{row['backend']:<22} {row['precision']:<9} {'':>5} {row['status']}: {row['reason']}")
            continue
        lines.append(f"{row['backend']:<22} {row['precision']:<9} {row['batch']:>5} {row['end_to_end_per_s']:>8.1f} "
                     f"{row['raw_per_s']:>8.1f} {100 * row['ratio']:>5.0f}% {'yes' if row['met'] else 'no':>4} "
                     f"{row['peak_memory_mb']:>8.0f}")
    ok = [r for r in result["rows"] if r["status"] == "ok"]
    if ok:
        lines += ["", f"peak memory: {ok[0]['memory_method']}, minus the resident memory at the start of the run"]
    return "\n".join(lines) + "\n"
