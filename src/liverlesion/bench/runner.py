"""The benchmark itself: each backend x precision x batch size, timed and scored on the same slices.

For each configuration that runs here: the model file's size, end-to-end ``predict``
latency (p50/p90/p99 per slice) and throughput, raw ``Backend.infer`` latency on the
same slices already on the model grid (their ratio is the SDK's host overhead), host time
per slice (``host_ms``: each timed end-to-end call's own ``Prediction.timings``, total minus
inference, and ``host_share`` of that total; see :class:`.timing.HostTime`), the achieved
GFLOP/s against the manifest's FLOP count, peak host memory (and device memory on a GPU), and
lesion Dice, liver Dice, slice-class accuracy and label agreement with the FP32 reference,
all through :mod:`liverlesion.metrics`. For each configuration that cannot run, a row saying
why. The PyTorch eager FP32 reference is the torch backend (the trained network rebuilt from
the package's weights, run eagerly); OpenVINO runs the same ONNX files, and its rows say what
its convolutions actually executed in, read back from the compiled model:
``executed_precision``, ``runtime_precisions`` (OpenVINO's count of each) and ``kernels``
(their instruction-set families, e.g. AMX or AVX-512). On a Jetson the machine section also
holds the power mode, whether jetson_clocks pinned the clocks, and the power and
temperatures sampled while the configurations ran (:mod:`.jetson`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..backends.registry import probe_machine
from ..errors import InputError, LiverLesionError, MissingDependencyError
from ..metrics import agreement, evaluate_predictions
from ..package import ModelPackage, load_package
from ..sdk.analyzer import LesionAnalyzer
from ..sdk.inputs import SliceInput, load_slice
from ..sdk.loader import load_error, open_choice
from ..sdk.selection import Choice, select
from .configs import BACKEND_SPECS, DEFAULT_BATCH_SIZES, PRECISIONS, BenchConfig, configurations
from .data import BenchData
from .jetson import JetsonMonitor, detect_jetson
from .machine import machine_info
from .nvml import device_memory_used
from .progress import Progress
from .soak import memory_soak
from .timing import HostTime, PeakRss, interleaved

SCHEMA = "liverlesion.bench"
_MB = 2**20


@dataclass
class BenchOptions:
    """What to measure and how long."""

    backends: tuple[str, ...] = tuple(BACKEND_SPECS)
    precisions: tuple[str, ...] = PRECISIONS
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    iterations: int = 50
    warmup: int = 5
    threads: int | None = None
    memory_soak: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("iterations", "warmup", "memory_soak"):
            value = getattr(self, name)
            low = 1 if name == "iterations" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name}={value!r} is not accepted: give an integer >= {low}")
        if not self.batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1
                                       for b in self.batch_sizes):
            raise InputError(f"batch sizes {self.batch_sizes!r} are not accepted: give positive integers")
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise InputError(f"threads={self.threads!r} is not accepted: give a positive integer")
        configurations(self.backends, self.precisions)  # validates the names


@dataclass
class Opened:
    """A loaded configuration: the analyzer for end-to-end runs and its backend for raw ones."""

    config: BenchConfig
    analyzer: LesionAnalyzer
    backend: Any
    choice: Choice

    def close(self) -> None:
        self.analyzer.close()  # also closes the backend; the package belongs to the caller

    def __enter__(self) -> Opened:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_config(package: ModelPackage, config: BenchConfig, *, threads: int | None = None,
                machine: Any = None) -> Opened:
    """Load ``config`` on ``package``; raises a LiverLesionError saying why when it cannot run here."""
    machine = machine if machine is not None else probe_machine((config.backend,))
    selection = select(package.manifest, machine, config.backend, config.precision, provider=config.provider)
    try:  # the SDK's own loader: the row says what the backend takes; no engine is built here
        _, backend, choice = open_choice(package, selection.candidates[0], threads=threads)
    except Exception as exc:  # noqa: BLE001 - runtimes raise their own types; load_error types them
        raise load_error(selection.candidates[0], exc)  # noqa: B904 - it carries its cause
    try:
        analyzer = LesionAnalyzer(package, backend, selection.loaded(choice), owns_package=False)
    except BaseException:
        backend.close()
        raise
    return Opened(config, analyzer, backend, choice)


# -- one configuration ----------------------------------------------------------------------------
@dataclass
class _Inputs:
    """The benchmark slices as SliceInputs, and on the model grid for raw inference."""

    slices: list[SliceInput]
    grids: np.ndarray  # N x 1 x H x W float32 HU
    arrays: list[tuple[np.ndarray, tuple[float, float]]] = field(default_factory=list)


def _inputs(data: BenchData, package: ModelPackage) -> _Inputs:
    slices = [load_slice(s.hu, spacing=s.spacing_mm) for s in data.slices]
    grids = np.stack([s.on_model_grid(package.manifest.grid) for s in slices])[:, None].astype(np.float32)
    return _Inputs(slices, np.ascontiguousarray(grids), [(s.hu, s.spacing_mm) for s in data.slices])


def _batches(count: int, batch: int) -> list[list[int]]:
    """Slice indices of each round's batch, cycling through the slices (the pattern's period)."""
    period = count // math.gcd(count, batch)
    return [[(r * batch + j) % count for j in range(batch)] for r in range(period)]


def _ms(values: dict[str, float | int]) -> dict[str, float]:
    return {k.removesuffix("_ms"): round(float(v), 4) for k, v in values.items() if k.endswith("_ms")}


def _time_batch(opened: Opened, inputs: _Inputs, batch: int, options: BenchOptions, memory: PeakRss,
                device: dict[str, int | None], progress: Progress) -> dict[str, Any]:
    analyzer, backend = opened.analyzer, opened.backend
    rounds = _batches(len(inputs.slices), batch)
    raw_inputs = [np.ascontiguousarray(inputs.grids[r]) for r in rounds]
    stages: dict[str, list[float]] = {"preprocess": [], "inference": [], "postprocess": []}
    host = HostTime()

    def end_to_end(round_: int) -> None:
        picked = rounds[round_ % len(rounds)]
        read_ms = 0.0
        if batch == 1:
            hu, spacing = inputs.arrays[picked[0]]
            predictions = [analyzer.predict(hu, spacing=spacing)]  # reads inside: in its preprocess_ms
        else:  # per-slice spacings: load_slice per slice, as predict does inside; host work, so timed
            start = time.perf_counter()
            read = [load_slice(inputs.arrays[i][0], spacing=inputs.arrays[i][1]) for i in picked]
            read_ms = 1000.0 * (time.perf_counter() - start)
            predictions = analyzer.predict_batch(read, batch_size=batch)
        if round_ >= options.warmup:
            host.add([p.timings for p in predictions], extra_ms=read_ms)
            for p in predictions:
                for stage in stages:
                    stages[stage].append(p.timings[f"{stage}_ms"])

    def raw(round_: int) -> None:
        backend.infer(raw_inputs[round_ % len(raw_inputs)])

    def after_each(round_: int) -> None:
        memory.sample()
        if device["index"] is not None:
            used = device_memory_used(device["index"])
            if used is not None:
                device["peak"] = max(device["peak"] or 0, used)
        progress.update(round_ + 1, options.iterations, "iterations")

    timings = interleaved({"predict": end_to_end, "infer": raw}, iterations=options.iterations,
                          warmup=options.warmup, items=batch, after_each=after_each)
    e2e, bare = timings["predict"].summary(), timings["infer"].summary()
    host_summary = host.summary()
    return {"batch": batch, "latency_ms": _ms(e2e),
            "throughput_sps": round(float(e2e["throughput_per_s"]), 3),
            "raw_latency_ms": _ms(bare), "raw_throughput_sps": round(float(bare["throughput_per_s"]), 3),
            "overhead": round(float(e2e["p50_ms"]) / float(bare["p50_ms"]), 4),
            "host_ms": _ms(host_summary) if host_summary else None,
            "host_share": round(host_summary["share"], 4) if host_summary else None,
            "stages_ms": {k: round(float(np.median(v)), 4) for k, v in stages.items() if v},
            "iterations": options.iterations, "warmup": options.warmup}


def _score(opened: Opened, inputs: _Inputs, data: BenchData,
           batch: int) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Metrics of the end-to-end label maps against the truth, and the maps (for agreement later)."""
    predictions = opened.analyzer.predict_batch(inputs.slices, batch_size=batch)
    maps = [p.label_map for p in predictions]
    true_classes = data.classes
    pred_classes = [p.slice_class for p in predictions] if true_classes is not None else None
    scores = evaluate_predictions(maps, [s.labels for s in data.slices], pred_classes, true_classes)
    return {"lesion_dice": scores["lesion_dice"], "liver_dice": scores["liver_dice"],
            "accuracy": scores.get("accuracy")}, maps


def _empty_row(config: BenchConfig, status: str, reason: str) -> dict[str, Any]:
    return {"config": config.label, "backend": config.name, "precision": config.precision, "batch": None,
            "reference_row": config.reference, "status": status, "reason": reason, "device": None,
            "model_file": None, "model_size_bytes": None, "latency_ms": None, "throughput_sps": None,
            "raw_latency_ms": None, "raw_throughput_sps": None, "overhead": None, "host_ms": None,
            "host_share": None, "gflops_per_s": None,
            "stages_ms": None, "peak_rss_mb": None, "device_memory_mb": None, "lesion_dice": None,
            "liver_dice": None, "accuracy": None, "agreement_with_reference": None, "executed_precision": None,
            "runtime_precisions": None, "kernels": None}


def executed(backend: Any) -> dict[str, Any]:
    """What a backend reports its convolutions executed (OpenVINO does; the others leave None)."""
    runtime, kernels = getattr(backend, "runtime_precisions", None), getattr(backend, "kernels", None)
    return {"executed_precision": getattr(backend, "executed_precision", None),
            "runtime_precisions": dict(runtime) if runtime is not None else None,
            "kernels": dict(kernels) if kernels is not None else None}


def _run_config(package: ModelPackage, config: BenchConfig, inputs: _Inputs, data: BenchData,
                options: BenchOptions, machine: Any, gflops: float | None,
                progress: Progress) -> tuple[list[dict[str, Any]], list[np.ndarray] | None]:
    """The rows of one configuration (one per batch size, or one saying why it cannot run)."""
    memory = PeakRss()
    try:
        opened = open_config(package, config, threads=options.threads, machine=machine)
    except MissingDependencyError as exc:
        return [_empty_row(config, "not installed", str(exc))], None
    except LiverLesionError as exc:
        return [_empty_row(config, "unavailable", str(exc))], None
    on_gpu = opened.choice.device != "CPU"
    device: dict[str, int | None] = {"index": 0 if on_gpu else None, "peak": None}
    before = device_memory_used(0) if on_gpu else None
    rows = []
    with opened:
        path, size = opened.backend.model_file()
        limit = opened.analyzer.max_batch
        runnable = [b for b in options.batch_sizes if limit is None or b <= limit]
        try:
            scores, maps = _score(opened, inputs, data, max(runnable) if runnable else 1)
        except LiverLesionError as exc:
            return [_empty_row(config, "failed", f"predict failed: {exc}")], None
        for batch in options.batch_sizes:
            base = {**_empty_row(config, "ok", ""), "batch": batch, "device": opened.analyzer.device,
                    "model_file": path, "model_size_bytes": size, **scores, **executed(opened.backend)}
            if batch not in runnable:
                rows.append({**base, "status": "unavailable", "reason": f"the loaded model takes at most "
                                                                       f"{limit} slices per batch"})
                continue
            progress.start(f"{config.label}, batch {batch}")
            try:
                timed = _time_batch(opened, inputs, batch, options, memory, device, progress)
            except LiverLesionError as exc:
                progress.finish("failed")
                rows.append({**base, "status": "failed", "reason": str(exc)})
                continue
            host_note = f", {timed['host_ms']['p50']:.2f} ms host" if timed["host_ms"] else ""
            progress.finish(f"{timed['latency_ms']['p50']:.2f} ms/slice end to end, "
                            f"{timed['raw_latency_ms']['p50']:.2f} ms raw{host_note}")
            base.update(timed)
            if gflops:
                base["gflops_per_s"] = round(gflops * timed["raw_throughput_sps"], 3)
            base["peak_rss_mb"] = round(memory.peak_bytes() / _MB, 1)
            if before is not None and device["peak"] is not None:
                base["device_memory_mb"] = round((device["peak"] - before) / _MB, 1)
            rows.append(base)
    return rows, maps


def _selectable(package: ModelPackage, config: BenchConfig, machine: Any) -> bool:
    """Whether selection accepts ``config`` here (without loading it): for the progress total only."""
    try:
        select(package.manifest, machine, config.backend, config.precision, provider=config.provider)
    except LiverLesionError:
        return False
    return True


def _reference(rows: list[dict[str, Any]], maps: dict[str, list[np.ndarray]]) -> str | None:
    """The FP32 reference configuration: PyTorch eager if it ran, else the first FP32 that did."""
    ran = [r["config"] for r in rows if r["status"] == "ok" and r["config"] in maps]
    for wanted in ("torch fp32", "onnxruntime fp32"):
        if wanted in ran:
            return wanted
    return next((c for c in ran if c.endswith("fp32")), None)


#: Issue 14's aim for the SDK's host work per 512 x 512 slice on the fastest CPU configuration (ms).
HOST_TARGET_MS = 0.25


def _fastest_cpu(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The SDK's CPU row (no reference row) with the lowest end-to-end p50, None if there is none."""
    sdk = [r for r in rows if r["reference_row"] is None and r["device"] == "CPU"]
    return min(sdk, key=lambda r: r["latency_ms"]["p50"]) if sdk else None


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per batch size, the fastest CPU configuration's speed-up over PyTorch eager FP32 and its host time."""
    ok = [r for r in rows if r["status"] == "ok"]
    speedups, host = [], []
    for batch in sorted({r["batch"] for r in ok}):
        same = [r for r in ok if r["batch"] == batch]
        torch_rows = [r for r in same if r["backend"] == "torch"]
        fastest = _fastest_cpu(same)
        if fastest is None:
            continue
        if fastest.get("host_ms"):
            host.append({"batch": batch, "config": fastest["config"], "host_ms": fastest["host_ms"]["p50"],
                         "host_share": fastest["host_share"], "target_ms": HOST_TARGET_MS})
        if not torch_rows:
            continue
        reference = torch_rows[0]["latency_ms"]["p50"]
        speedups.append({"batch": batch, "fastest": fastest["config"],
                         "fastest_ms": fastest["latency_ms"]["p50"],
                         "torch_fp32_ms": reference,
                         "speedup": round(reference / fastest["latency_ms"]["p50"], 3), "target": 3.0})
    overhead = {f"{r['config']} b{r['batch']}": r["overhead"] for r in ok}
    return {"speedup_vs_torch_eager": speedups, "overhead": overhead, "overhead_target": 1.15,
            "host_time": host}


def run_benchmark(package_path: str | Path, data: BenchData,
                  options: BenchOptions | None = None) -> dict[str, Any]:
    """Run every configuration of ``options`` on ``data``; the JSON-able result (see :mod:`.report`)."""
    options = options or BenchOptions()
    configs = configurations(options.backends, options.precisions)
    started = time.perf_counter()
    # On a Jetson: power mode and clocks read first, power / temperatures sampled until the end; else inert.
    jetson = JetsonMonitor(detect_jetson())
    with jetson, load_package(Path(package_path)) as package:
        manifest = package.manifest
        model = manifest.model
        gflops = model.gflops_per_slice
        inputs = _inputs(data, package)
        wanted = tuple(dict.fromkeys(c.backend for c in configs))
        machine = probe_machine(wanted)
        selectable = sum(_selectable(package, c, machine) for c in configs)
        progress = Progress(selectable * len(options.batch_sizes) + bool(options.memory_soak),
                            enabled=options.progress)
        rows: list[dict[str, Any]] = []
        maps: dict[str, list[np.ndarray]] = {}
        for config in configs:
            config_rows, config_maps = _run_config(package, config, inputs, data, options, machine,
                                                   float(gflops) if gflops else None, progress)
            rows += config_rows
            if config_maps is not None:
                maps[config.label] = config_maps
        reference = _reference(rows, maps)
        if reference is not None:
            flat_ref = np.concatenate([m.ravel() for m in maps[reference]])
            for row in rows:
                if row["config"] in maps:
                    row["agreement_with_reference"] = agreement(
                        np.concatenate([m.ravel() for m in maps[row["config"]]]), flat_ref)
        soak = None
        if options.memory_soak:
            soak = _soak(package, rows, configs, inputs, options, machine, progress)
        result = {
            "schema": SCHEMA, "version": 1, "liverlesion": __version__,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": None,  # below, once the Jetson sampler (if any) has stopped
            "package": {"path": str(package_path), "name": manifest.model_name, "arch": manifest.arch,
                        "grid": manifest.grid.to_dict(), "parameters": model.parameters,
                        "gflops_per_slice": gflops, "config": model.config},
            "data": {"description": data.description, "slices": len(data),
                     "shapes": sorted({tuple(s.hu.shape) for s in data.slices})},
            "options": asdict(options), "reference": reference,
            "rows": rows, "summary": summarize(rows), "memory_soak": soak,
        }
    result["machine"] = machine_info(jetson=jetson.report())
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _soak(package: ModelPackage, rows: list[dict[str, Any]], configs: list[BenchConfig], inputs: _Inputs,
          options: BenchOptions, machine: Any, progress: Progress) -> dict[str, Any] | None:
    """The memory soak, on the fastest batch-1 configuration of the SDK (what one would deploy)."""
    candidates = [r for r in rows if r["status"] == "ok" and r["batch"] == 1 and r["reference_row"] is None]
    if not candidates:
        candidates = [r for r in rows if r["status"] == "ok"]
    if not candidates:
        return None
    best = min(candidates, key=lambda r: r["latency_ms"]["p50"])
    config = next(c for c in configs if c.label == best["config"])
    progress.start(f"memory soak: {options.memory_soak} predictions on {config.label}")
    with open_config(package, config, threads=options.threads, machine=machine) as opened:
        analyzer = opened.analyzer

        def predict(i: int) -> None:
            hu, spacing = inputs.arrays[i % len(inputs.arrays)]
            analyzer.predict(hu, spacing=spacing)

        soak = memory_soak(predict, options.memory_soak, progress=progress)
    progress.finish(f"resident memory {soak['growth_percent']:+.2f}%")
    return {"config": config.label, **soak}
