"""Benchmark results as a table on stdout, JSON, markdown, and a latency-versus-accuracy plot.

The JSON is the whole result of :func:`liverlesion.bench.runner.run_benchmark` and is what
runs are compared by; the table and markdown show the same rows. Files are written
atomically (a temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import require
from ..openvino_execution import RUNTIME_NAMES
from .machine import format_header

_COLUMNS = ("config", "executed", "batch", "MB", "p50 ms", "p90 ms", "p99 ms", "slices/s", "raw p50",
            "e2e/raw", "host p50", "host p90", "host %", "GFLOP/s", "RSS MB", "lesion Dice", "liver Dice", "acc",
            "agree")

#: What the host columns are, printed under the table (they are not end to end minus raw: those are other calls).
HOST_LEGEND = ("host p50 / p90: ms per slice the SDK spends on the host (reading, resampling, decoding, "
               "components, measurements), from each timed end-to-end call's own Prediction.timings: total_ms "
               "minus inference_ms (the runtime's infer alone), plus, at batch > 1, the bench's load_slice of "
               "the batch; not p50 ms minus raw p50, which are different calls. host %: host / total of the "
               "same call, p50.")


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def executed_cell(row: dict[str, Any]) -> str:
    """What the convolutions executed: "fp16 avx512", "int8 38/39 amx", "bf16 amx+avx512"; "-" if unknown.

    The precision is the one most convolutions ran in, with their share when not all did, then the
    kernels' instruction-set families (why e.g. fp16 without AMX runs no faster than fp32).
    """
    precision = row.get("executed_precision")
    if not precision:
        return "-"
    counts: dict[str, int] = {}
    for runtime, count in (row.get("runtime_precisions") or {}).items():
        name = RUNTIME_NAMES.get(runtime, runtime)
        counts[name] = counts.get(name, 0) + int(count)
    total, same = sum(counts.values()), counts.get(precision, 0)
    share = f" {same}/{total}" if total and same != total else ""
    kernels = "+".join(row.get("kernels") or {})
    return f"{precision}{share}" + (f" {kernels}" if kernels else "")


def _cells(row: dict[str, Any]) -> list[str]:
    """One row's cells, in :data:`_COLUMNS` order (ok rows only)."""
    latency, raw = row["latency_ms"], row["raw_latency_ms"]
    name = row["config"] + (f" ({row['reference_row']})" if row.get("reference_row") else "")
    size = None if row["model_size_bytes"] is None else row["model_size_bytes"] / 1e6
    host, share = row.get("host_ms") or {}, row.get("host_share")  # absent in results from before issue 14
    return [name, executed_cell(row), str(row["batch"]), _num(size), _num(latency["p50"]), _num(latency["p90"]),
            _num(latency["p99"]), _num(row["throughput_sps"], 1), _num(raw["p50"]), _num(row["overhead"]),
            _num(host.get("p50")), _num(host.get("p90")), _num(None if share is None else 100 * share, 0),
            _num(row["gflops_per_s"], 1), _num(row["peak_rss_mb"], 0), _num(row["lesion_dice"], 3),
            _num(row["liver_dice"], 3), _num(row["accuracy"], 3), _num(row["agreement_with_reference"], 4)]


def _not_run(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(configurations, status, reason) of the rows that did not run; precisions sharing a reason merged."""
    merged: dict[tuple[Any, ...], list[str]] = {}
    for row in result["rows"]:
        if row["status"] != "ok":
            key = (row["backend"], row["batch"], row["status"], row["reason"])
            merged.setdefault(key, []).append(row["precision"])
    return [(f"{backend} {'/'.join(precisions)}{'' if batch is None else f' batch {batch}'}", status, reason)
            for (backend, batch, status, reason), precisions in merged.items()]


def _summary_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    summary = result.get("summary") or {}
    for item in summary.get("speedup_vs_torch_eager", []):
        lines.append(f"batch {item['batch']}: fastest CPU configuration {item['fastest']} "
                     f"{item['fastest_ms']:.2f} ms/slice vs PyTorch eager FP32 "
                     f"{item['torch_fp32_ms']:.2f} ms: "
                     f"{item['speedup']:.2f}x (target >= {item['target']:g}x)")
    shapes = (result.get("data") or {}).get("shapes") or []
    slices = ", ".join(f"{s[0]} x {s[1]}" for s in shapes)
    for item in summary.get("host_time", []):
        known = item["host_share"] is not None and math.isfinite(item["host_share"])
        share = f", {100 * item['host_share']:.0f}% of its end to end" if known else ""
        lines.append(f"batch {item['batch']}: host time of the fastest CPU configuration {item['config']} "
                     f"{item['host_ms']:.2f} ms/slice p50{share} (target <= {item['target_ms']:g} ms per "
                     f"512 x 512 slice{f'; these slices: {slices}' if slices else ''})")
    single = [r for r in result["rows"] if r["status"] == "ok" and r["batch"] == 1]
    if single:
        ratios = ", ".join(f"{r['config']} {r['overhead']:.2f}" for r in single)
        lines.append(f"host overhead, end-to-end / raw p50 at batch 1: {ratios} "
                     f"(target <= {summary.get('overhead_target', 1.15):g})")
    soak = result.get("memory_soak")
    if soak:
        lines.append(f"memory soak ({soak['config']}): {soak['predictions']} predictions after "
                     f"{soak['warmup']} warm-up, resident {soak['rss_start_mb']:.1f} -> "
                     f"{soak['rss_end_mb']:.1f} MB "
                     f"({soak['growth_percent']:+.2f}%, target < {soak['target_percent']:g}%)")
    return lines


def _context(result: dict[str, Any]) -> list[str]:
    package, options = result["package"], result["options"]
    grid = package["grid"]
    return [f"package {package['name']} ({package['arch']}, {package.get('parameters') or '?'} parameters, "
            f"{package.get('gflops_per_slice') or '?'} GFLOP/slice, grid {grid['size'][0]}x{grid['size'][1]} "
            f"at {grid['spacing_mm'][0]:g} mm)",
            f"data: {result['data']['description']}; {options['iterations']} iterations after "
            f"{options['warmup']} warm-up, threads {options['threads'] or 'default'}; "
            f"agreement against {result.get('reference') or 'no FP32 reference'}"]


def format_table(result: dict[str, Any]) -> str:
    """The result as plain text: machine header, one line per configuration, reasons, summary."""
    ok = [_cells(r) for r in result["rows"] if r["status"] == "ok"]
    widths = [max(len(c) for c in column) for column in zip(_COLUMNS, *ok, strict=True)]

    def line(cells: Sequence[str]) -> str:
        # first column left-aligned (names), numbers right-aligned
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in pairs)

    lines = [format_header(result["machine"]), *_context(result), "", line(_COLUMNS)]
    lines += [line(cells) for cells in ok]
    lines += [HOST_LEGEND] if ok else []
    lines += [f"{name}: {status}: {reason}" for name, status, reason in _not_run(result)]
    lines += ["", *_summary_lines(result)]
    return "\n".join(lines).rstrip() + "\n"


def to_markdown(result: dict[str, Any]) -> str:
    """The result as a markdown section: header, table, rows that did not run, summary."""
    header = format_header(result["machine"]).splitlines()
    lines = [f"Measured {result['created']} with liverlesion {result['liverlesion']}.", ""]
    lines += [f"- {line}" for line in header + _context(result)]
    lines += ["", "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    ok = ["| " + " | ".join(_cells(r)) + " |" for r in result["rows"] if r["status"] == "ok"]
    lines += [*ok, "", HOST_LEGEND] if ok else []
    not_run = _not_run(result)
    if not_run:
        lines += ["", "| config | status | why |", "|---|---|---|"]
        lines += [f"| {name} | {status} | {reason.replace('|', '/')} |" for name, status, reason in not_run]
    summary = _summary_lines(result)
    if summary:
        lines += ["", *[f"- {line}" for line in summary]]
    return "\n".join(lines) + "\n"


def _atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` through a temporary file beside it; readable as the umask allows."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def finite(value: Any) -> Any:
    """``value`` with non-finite floats (NaN, inf) as None, so that the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    text = json.dumps(finite(result), indent=1, allow_nan=False) + "\n"
    return _atomic_write(path, lambda tmp: tmp.write_text(text))


def write_markdown(result: dict[str, Any], path: str | Path) -> Path:
    text = to_markdown(result)
    return _atomic_write(path, lambda tmp: tmp.write_text(text))


def write_plot(result: dict[str, Any], path: str | Path) -> Path:
    """PNG: end-to-end latency per slice (log scale) against lesion Dice and against agreement with FP32.

    Marker shape is the backend, colour the precision; filled markers are batch 1, hollow
    ones larger batches.
    """
    matplotlib = require("matplotlib", "viz", "the benchmark plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker
    from matplotlib.lines import Line2D

    rows = [r for r in result["rows"] if r["status"] == "ok"]
    colours = {"fp32": "tab:blue", "fp16": "tab:orange", "int8": "tab:green"}
    shapes = ["o", "s", "^", "D", "v", "P"]
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    marker = {b: shapes[i % len(shapes)] for i, b in enumerate(backends)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), constrained_layout=True)
    panels = (("lesion_dice", "lesion Dice"),
              ("agreement_with_reference", f"label agreement with {result.get('reference') or 'FP32'}"))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for row in rows:
            if row[key] is None:
                continue
            colour = colours.get(row["precision"], "tab:gray")
            ax.scatter(row["latency_ms"]["p50"], row[key], marker=marker[row["backend"]], s=70,
                       linewidths=1.8, edgecolors=colour, facecolors=colour if row["batch"] == 1 else "none")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        latencies = [r["latency_ms"]["p50"] for r in rows]
        if latencies and max(latencies) < 10 * min(latencies):  # within a decade: label the minor ticks too
            ax.xaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("end-to-end latency p50, ms per slice (log)")
        ax.set_ylabel(title)
        ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], marker=marker[b], linestyle="", color="black", markerfacecolor="none", label=b)
               for b in backends]
    handles += [Line2D([], [], marker="o", linestyle="", color=c, label=p) for p, c in colours.items()
                if any(r["precision"] == p for r in rows)]
    larger = "/".join(str(b) for b in sorted({r["batch"] for r in rows}) if b != 1)
    handles.append(Line2D([], [], marker="o", linestyle="", color="gray", label="batch 1"))
    if larger:
        handles.append(Line2D([], [], marker="o", linestyle="", color="gray", markerfacecolor="none",
                              label=f"batch {larger}"))
    fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    machine = result["machine"]
    gpu = f" + {machine['gpu']['name']}" if machine.get("gpu") else ""
    fig.suptitle(f"{result['package']['name']} on {machine['cpu']}{gpu}, {result['created']}", fontsize=9)
    try:
        return _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)
