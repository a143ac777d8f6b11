"""``liverlesion bench --serve``: Triton-served throughput against in-process ``predict_batch``, in one run.

On the same slices (lesion-slice phantoms, 512 x 512) and the same backend and precision:

1. in-process: ``LesionAnalyzer.predict_batch`` in batches of the server's largest batch: slices/s;
2. served: ``liverlesion serve`` started as a subprocess (the serving environment's Python: PyTriton pins
   numpy<2), then 1, 4 and 8 concurrent clients (``RemoteAnalyzer``, one slice per request) x N requests each:
   requests/s, p50 / p99 latency, failed requests, answers that differ from in-process ``predict`` on the same
   slice (maps, lesions, class), and from Triton's statistics the mean dynamic batch size and
   where a request's time goes: the client (reading the slice, serialising, transport, decoding), Triton's
   queue (the batcher's delay), Triton's tensor copies, the Python backend and PyTriton's IPC to the handler
   process, and the SDK itself (what ``predict_batch`` spends in the handler).

The target (issue 16): at 8 clients, at least :data:`TARGET_RATIO` of the in-process slices/s. The server is
stopped by its PID at the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import BackendError, InputError

SCHEMA = "liverlesion.bench.serve"
DEFAULT_REQUESTS = 200
DEFAULT_CLIENTS = (1, 4, 8)
#: Served requests/s at 8 clients as a share of in-process predict_batch slices/s (issue 16).
TARGET_RATIO = 0.70
#: Environment variable naming the serving environment's Python (default: ./.venv-serve, or this Python).
SERVE_PYTHON_VARIABLE = "LIVERLESION_SERVE_PYTHON"
START_TIMEOUT_S = 120.0


def serve_python() -> str:
    """The interpreter that runs ``liverlesion serve``: $LIVERLESION_SERVE_PYTHON, this one if it has PyTriton,
    else ./.venv-serve's (what ./dev.sh builds)."""
    given = os.environ.get(SERVE_PYTHON_VARIABLE)
    if given:
        return given
    if importlib.util.find_spec("pytriton") is not None:
        return sys.executable
    local = Path.cwd() / ".venv-serve" / "bin" / "python"
    if local.is_file():
        return str(local)
    raise BackendError(f"no Python with PyTriton to run liverlesion serve: install liverlesion[serve] in an "
                       f"environment of its own (numpy<2) and set {SERVE_PYTHON_VARIABLE} to its python")


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextlib.contextmanager
def served(package: Path, backend: str, precision: str, *, threads: int | None, max_batch: int,
           queue_delay_ms: float, instances: int, log: Path) -> Iterator[dict[str, Any]]:
    """A ``liverlesion serve`` subprocess on free loopback ports; yields its ready line (plus ports and token)."""
    http_port, grpc_port = _free_ports(2)
    token = secrets.token_urlsafe(24)
    command = [serve_python(), "-m", "liverlesion", "serve", str(package), "--backend", backend,
               "--precision", precision, "--http-port", str(http_port), "--grpc-port", str(grpc_port),
               "--max-batch", str(max_batch), "--queue-delay-ms", str(queue_delay_ms), "--instances", str(instances)]
    if threads:
        command += ["--threads", str(threads)]
    with open(log, "ab") as sink:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=sink, stdin=subprocess.DEVNULL,
                                   env={**os.environ, "LIVERLESION_SERVE_TOKEN": token}, start_new_session=True)
    try:
        ready = _wait_ready(process, log)
        yield {**ready, "http_port": http_port, "grpc_port": grpc_port, "token": token}
    finally:
        _stop(process)


def _wait_ready(process: subprocess.Popen, log: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def read() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if isinstance(line, dict) and line.get("ready"):
                    found.update(line)
                    break
        for _ in process.stdout:  # keep draining, so that the server never blocks on stdout
            pass

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not found and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if not found:
        tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
        raise BackendError(f"liverlesion serve did not get ready (exit {process.poll()}); its log {log}:\n{tail}")
    return found


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (its PID), SIGKILL after 30 s."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


def _statistics(url: str, token: str, model: str) -> dict[str, float]:
    """Triton's cumulative counters of ``model`` (its statistics endpoint needs the admin token)."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(model, headers={"triton-access-token": token})["model_stats"][0]
    finally:
        client.close()
    inference = stats["inference_stats"]
    out = {"inferences": float(stats["inference_count"]), "executions": float(stats["execution_count"])}
    for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        out[f"{key}_ms"] = float(inference.get(key, {}).get("ns", 0)) / 1e6
    return out


def in_process(analyzer: Any, slices: Sequence[Any], requests: int, batch: int) -> dict[str, Any]:
    """``predict_batch`` over ``requests`` slices (cycled), after one warm-up batch: slices/s."""
    cycle = [slices[i % len(slices)] for i in range(requests)]
    analyzer.predict_batch(cycle[:batch], batch_size=batch)
    start = time.perf_counter()
    analyzer.predict_batch(cycle, batch_size=batch)
    seconds = time.perf_counter() - start
    return {"slices": requests, "batch_size": batch, "seconds": seconds, "slices_per_s": requests / seconds}


def _same(served: Any, local: Any) -> bool:
    """The served Prediction is the in-process one: maps to the pixel, lesions and slice class."""
    return bool(np.array_equal(served.label_map, local.label_map)
                and np.array_equal(served.lesion_components, local.lesion_components)
                and served.lesions == local.lesions
                and (served.slice_class, served.slice_class_probability)
                == (local.slice_class, local.slice_class_probability))


def served_load(url: str, protocol: str, slices: Sequence[Any], clients: int, requests: int,
                stats: Any, expected: Sequence[Any] | None = None) -> dict[str, Any]:
    """``clients`` threads, each its own RemoteAnalyzer sending ``requests`` one-slice requests, released at once;
    each answer compared with ``expected`` (in-process Predictions of ``slices``) when given."""
    from ..serving.remote import RemoteAnalyzer

    latencies: list[float] = []
    sdk_ms: list[float] = []
    round_trip_ms: list[float] = []
    failures: list[str] = []
    mismatched = [0]
    lock = threading.Lock()
    start_line = threading.Barrier(clients + 1)
    remotes = [RemoteAnalyzer(url, protocol=protocol, timeout_s=120) for _ in range(clients)]
    for remote in remotes:  # one untimed request each: connections made, identity checked
        remote.predict(slices[0].hu, spacing=slices[0].spacing_mm)

    def client(k: int) -> None:
        mine, sdk, trips, bad, differ = [], [], [], [], 0
        start_line.wait()
        for i in range(requests):
            item = slices[(i + k) % len(slices)]
            began = time.perf_counter()
            try:
                prediction = remotes[k].predict(item.hu, spacing=item.spacing_mm)
            except Exception as exc:  # noqa: BLE001 - counted and reported: the target is zero
                bad.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            mine.append((time.perf_counter() - began) * 1000.0)
            if expected is not None and not _same(prediction, expected[(i + k) % len(slices)]):
                differ += 1
            sdk.append(prediction.timings.get("total_ms", 0.0))
            trips.append(prediction.timings.get("round_trip_ms", 0.0))
        with lock:
            latencies.extend(mine)
            sdk_ms.extend(sdk)
            round_trip_ms.extend(trips)
            failures.extend(bad)
            mismatched[0] += differ

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    before = stats()
    start_line.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    after = stats()
    for remote in remotes:
        remote.close()
    row = _row(clients, requests, seconds, latencies, sdk_ms, round_trip_ms, failures,
               {k: after[k] - before[k] for k in after})
    return {**row, "mismatched": None if expected is None else mismatched[0]}


def _row(clients: int, requests: int, seconds: float, latencies: list[float], sdk_ms: list[float],
         round_trip_ms: list[float], failures: list[str], delta: dict[str, float]) -> dict[str, Any]:
    done = len(latencies)
    inferences, executions = max(delta["inferences"], 1.0), max(delta["executions"], 1.0)
    sdk_total = float(np.sum(sdk_ms)) if sdk_ms else 0.0
    compute = delta["compute_input_ms"] + delta["compute_infer_ms"] + delta["compute_output_ms"]
    # per request, in ms: where the round trip goes (means over the requests of this row)
    split = {
        "client_and_transport_ms": max(0.0, float(np.mean(round_trip_ms)) - delta["success_ms"] / inferences)
        if round_trip_ms else None,
        "triton_queue_ms": delta["queue_ms"] / inferences,
        "triton_tensor_copies_ms": (delta["compute_input_ms"] + delta["compute_output_ms"]) / inferences,
        "python_backend_and_ipc_ms": max(0.0, (delta["compute_infer_ms"] - sdk_total) / inferences),
        "sdk_ms": sdk_total / max(done, 1),
    }
    return {"clients": clients, "requests": clients * requests, "answered": done, "failed": len(failures),
            "failures": failures[:5], "seconds": seconds, "requests_per_s": done / seconds if seconds else 0.0,
            "p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
            "p99_ms": float(np.percentile(latencies, 99)) if latencies else None,
            "mean_batch": inferences / executions, "executions": int(delta["executions"]),
            "triton_compute_ms_per_execution": compute / executions, "time_split_ms": split}


def run_serve_bench(package: str | Path, *, requests: int = DEFAULT_REQUESTS,
                    clients: Sequence[int] = DEFAULT_CLIENTS, backend: str = "auto", precision: str = "auto",
                    threads: int | None = None, max_batch: int = 8, queue_delay_ms: float = 2.0,
                    instances: int = 1, protocol: str = "grpc", slices: int = 16, seed: int = 0,
                    progress: bool = True, log: Path | None = None) -> dict[str, Any]:
    """The in-process row and one served row per client count (see the module docstring)."""
    from ..sdk import LesionAnalyzer
    from ..serving import contract
    from .data import load_bench_data

    if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
        raise InputError(f"--serve {requests!r}: give the number of requests per client, >= 1")
    package = Path(package)
    data = load_bench_data(None, slices, seed=seed)
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if progress else (lambda text: None)
    with LesionAnalyzer.load(package, backend, precision, threads=threads) as analyzer:
        chosen_backend, chosen_precision = analyzer.backend, analyzer.precision
        say(f"in-process: predict_batch of {requests} slices on {chosen_backend} {chosen_precision} ...")
        local = in_process(analyzer, [s.hu for s in data.slices], max(requests, 8 * max_batch), max_batch)
        expected = [analyzer.predict(s.hu, spacing=s.spacing_mm) for s in data.slices]
    log = log or Path.cwd() / "liverlesion-bench-serve.log"
    rows = []
    with served(package, chosen_backend, chosen_precision, threads=threads, max_batch=max_batch,
                queue_delay_ms=queue_delay_ms, instances=instances, log=log) as server:
        url = f"127.0.0.1:{server['grpc_port'] if protocol == 'grpc' else server['http_port']}"
        http = f"127.0.0.1:{server['http_port']}"

        def stats() -> dict[str, float]:
            return _statistics(http, server["token"], contract.PIPELINE_MODEL)

        for count in clients:
            say(f"served ({protocol}): {count} client(s) x {requests} requests ...")
            rows.append(served_load(url, protocol, data.slices, count, requests, stats, expected))
    best = next((r for r in rows if r["clients"] == max(clients)), rows[-1])
    ratio = best["requests_per_s"] / local["slices_per_s"] if local["slices_per_s"] else 0.0
    return {"schema": SCHEMA, "liverlesion": __version__, "created": datetime.now(timezone.utc).isoformat(),
            "package": str(package), "backend": chosen_backend, "precision": chosen_precision,
            "data": data.description, "protocol": protocol, "max_batch": max_batch, "queue_delay_ms": queue_delay_ms,
            "instances": instances, "cpus": os.cpu_count(), "in_process": local, "served": rows,
            "ratio_at_most_clients": ratio, "target_ratio": TARGET_RATIO, "meets_target": ratio >= TARGET_RATIO}


def format_serve_table(result: dict[str, Any]) -> str:
    """The served rows against the in-process one, then where a request's time goes."""
    local = result["in_process"]
    lines = [f"liverlesion bench --serve: {result['backend']} {result['precision']}, {result['protocol']}, "
             f"max batch {result['max_batch']}, queue delay {result['queue_delay_ms']} ms, {result['cpus']} CPUs",
             f"in-process predict_batch: {local['slices_per_s']:.1f} slices/s (batch {local['batch_size']})",
             f"{'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'batch':>6} {'failed':>6} {'differ':>6}  "
             f"{'client':>7} {'queue':>6} {'copies':>6} {'py+ipc':>7} {'sdk':>6}  (ms per request)"]
    for row in result["served"]:
        split = row["time_split_ms"]
        lines.append(f"{row['clients']:>7} {row['requests_per_s']:>8.1f} {row['p50_ms'] or 0:>8.1f} "
                     f"{row['p99_ms'] or 0:>8.1f} {row['mean_batch']:>6.2f} {row['failed']:>6} "
                     f"{'-' if row.get('mismatched') is None else row['mismatched']:>6}  "
                     f"{split['client_and_transport_ms'] or 0:>7.2f} {split['triton_queue_ms']:>6.2f} "
                     f"{split['triton_tensor_copies_ms']:>6.2f} {split['python_backend_and_ipc_ms']:>7.2f} "
                     f"{split['sdk_ms']:>6.2f}")
    verdict = "meets" if result["meets_target"] else "misses"
    lines.append(f"served at {max(r['clients'] for r in result['served'])} clients: "
                 f"{100 * result['ratio_at_most_clients']:.0f}% of in-process ({verdict} the "
                 f"{100 * result['target_ratio']:.0f}% target)")
    return "\n".join(lines) + "\n"
