"""A ``liverlesion serve`` subprocess for the serving tests: started on free loopback ports, stopped by its PID.

The server runs in the serving environment (``.venv-serve``, or ``$LIVERLESION_SERVE_PYTHON``), the tests in
the dev one (tritonclient from the remote extra). Where either is missing the tests skip, saying why, except
under CI, where they fail.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import importlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
#: How long a server may take to load both models (about 6 s here) before the test fails.
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI is set and {reason}")
    pytest.skip(reason)


def serve_python() -> Path:
    """The serving environment's interpreter; skipped (failed under CI) where there is none."""
    path = Path(os.environ.get("LIVERLESION_SERVE_PYTHON") or REPO / ".venv-serve" / "bin" / "python")
    if not path.is_file():
        _missing(f"the serving environment {path} is missing (./dev.sh setup builds it: the serve extra with "
                 "PyTriton's tritonserver, constraints/serve.txt)")
    return path


def require_client() -> None:
    """tritonclient in this (the tests') environment: the remote extra."""
    try:
        for module in ("tritonclient.grpc", "tritonclient.http"):
            importlib.import_module(module)
    except ImportError:
        _missing("tritonclient is not installed in the test environment (the remote extra: ./dev.sh setup)")


def stop_group(process: subprocess.Popen) -> int | None:
    """SIGTERM to ``process``'s group (a server started with start_new_session), SIGKILL if it lingers."""
    pid = process.pid
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):  # tritonserver or its stubs, should they linger
        os.killpg(pid, signal.SIGKILL)
    return process.returncode


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 just now."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def _libc_prctl() -> Any:
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    return None


#: Looked up here, in the parent: loading a library in a forked child can hang on a lock another thread held.
_PRCTL = _libc_prctl()


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test runner dies, so that no server outlives a killed run (Linux)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class ServerProcess:
    """One ``liverlesion serve`` process (its own session: tritonserver and the stubs are in its group)."""

    package: Path
    http_port: int
    grpc_port: int
    token: str
    log: Path
    extra: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    ready: dict[str, Any] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def url(self, protocol: str) -> str:
        return self.http if protocol == "http" else self.grpc

    def start(self) -> ServerProcess:
        """Start the server and wait for its ready line (both models loaded)."""
        env = {**os.environ, "LIVERLESION_SERVE_TOKEN": self.token}
        command = [str(serve_python()), "-m", "liverlesion", "serve", str(self.package), "--backend", "openvino",
                   "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), *self.extra]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                            env=env, cwd=self.log.parent, start_new_session=True,
                                            preexec_fn=_die_with_parent)
        lines: list[str] = []
        reader = threading.Thread(target=self._read_ready, args=(lines,), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        if not self.ready:
            self.stop()
            tail = self.log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"liverlesion serve did not get ready within {START_TIMEOUT_S:.0f} s "
                                 f"(exit {self.process.returncode}); stdout {lines[-3:]}, log:\n{tail}")
        return self

    def _read_ready(self, lines: list[str]) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").strip()
            lines.append(line)
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    info = json.loads(line)
                    if info.get("ready"):
                        self.ready = info
                        break
        # keep draining stdout so the server never blocks on a full pipe
        threading.Thread(target=lambda: [None for _ in self.process.stdout], daemon=True).start()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """SIGTERM to the server's process group (its PID), then SIGKILL if it has not ended in time."""
        return None if self.process is None else stop_group(self.process)


def start_server(package: Path, folder: Path, *extra: str, ports: tuple[int, int] | None = None) -> ServerProcess:
    """A started server on ``package`` (free ports unless given), logging to ``folder``."""
    require_client()  # the tests talk to it with tritonclient: skip (fail under CI) without it
    http_port, grpc_port = ports or free_ports(2)
    token = "serving-tests-" + os.urandom(12).hex()
    folder.mkdir(parents=True, exist_ok=True)
    return ServerProcess(package, http_port, grpc_port, token, folder / f"serve-{http_port}.log", extra).start()


def wait_until(predicate: Any, timeout_s: float, step_s: float = 0.2) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passes; whether it became true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return bool(predicate())


def assert_same(remote, local) -> None:
    """Two Predictions of one slice are the same result: maps to the pixel, lesions and classes to the bit."""
    assert np.array_equal(remote.label_map, local.label_map) and remote.label_map.dtype == local.label_map.dtype
    assert np.array_equal(remote.lesion_components, local.lesion_components)
    assert remote.lesions == local.lesions
    assert (remote.slice_class, remote.slice_class_probability) == (local.slice_class, local.slice_class_probability)
    assert remote.class_probabilities == local.class_probabilities
    assert (remote.backend, remote.precision, remote.model) == (local.backend, local.precision, local.model)
    assert remote.spacing_mm == local.spacing_mm and remote.source == local.source


# -- raw requests ----------------------------------------------------------------------------------------------
def post(port: int, body: bytes, headers: dict | None = None, path: str = "/v2/models/liverlesion_pipeline/infer"):
    """One raw HTTP POST to a server on 127.0.0.1: (status, body text)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def binary_request(inputs: list[tuple[str, list[int], str, bytes]]) -> tuple[bytes, dict]:
    """A KServe v2 binary-data request body and its headers, built by hand (so that it can be wrong)."""
    header = json.dumps({"inputs": [{"name": n, "shape": s, "datatype": t, "parameters": {"binary_data_size": len(b)}}
                                    for n, s, t, b in inputs],
                         "outputs": [{"name": "prediction_json"}]}).encode()
    return header + b"".join(b for *_, b in inputs), {"Inference-Header-Content-Length": str(len(header))}


SPACING = ("spacing_mm", [1, 2], "FP64", np.array([1.0, 1.0]).tobytes())
HU_64 = ("hu", [1, 64, 64], "FP32", np.full((64, 64), -1000, np.float32).tobytes())
#: Bad requests: (body, headers, HTTP status, words of the error). Triton refuses most itself (400/500); a request
#: missing an input the SDK needs is answered (200) with the SDK's refusal in-band, since every HU input is optional
#: (one of contract.HU_INPUTS) and tritonserver 2.51 then leaves the required-input check to the model.
BAD_REQUESTS = {
    # tritonserver 2.51 answers a JSON it cannot parse with 500, its other refusals with 400
    "malformed JSON": (b'{"inputs": [', {}, 500, "failed to parse the request JSON buffer"),
    "wrong data type": (*binary_request([HU_64, ("spacing_mm", [1, 2], "FP32", np.ones(2, np.float32).tobytes())]),
                        400, "expects 'FP64'"),
    "missing input": (*binary_request([HU_64]), 200, "the request has no input 'spacing_mm'"),
    "no slice": (*binary_request([SPACING]), 200, "carries exactly one of the inputs hu, hu_int16"),
    "two slices": (*binary_request([HU_64, ("hu_int16", [1, 64, 64], "INT16", bytes(2 * 64 * 64)), SPACING]), 200,
                   "carries exactly one of the inputs hu, hu_int16; this one carries hu, hu_int16"),
    "wrong rank": (*binary_request([("hu", [1, 4096], "FP32", bytes(4 * 4096)), SPACING]), 400, "unexpected shape"),
    # 20000 x 20000 claimed with 8 bytes sent: refused from the header, nothing allocated for 1.6 GB
    "oversized claim": (*binary_request([("hu", [1, 20000, 20000], "FP32", bytes(8)), SPACING]), 400,
                        "Expected 1600000000, got 8"),
}
