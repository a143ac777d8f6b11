"""Samplers that run during the benchmark: ``tegrastats`` as a bounded child process, or jtop's service.

Each keeps a :class:`~.tegrastats.Telemetry` and its ``stop()`` returns the summary, with ``unknown`` and
the reason when no sample came, never an exception.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import threading
import time
from collections import deque
from typing import Any

from .tegrastats import Telemetry, parse_tegrastats_line, sample_from_jtop

#: tegrastats' sampling period during a benchmark (its own default is 1000 ms).
INTERVAL_MS = 500
#: The sampler stops tegrastats after this long even if nobody stops it (a bound, not an expected length).
LIMIT_S = 6 * 3600.0
#: How long starting the sampler waits for its first line, so that a short run still gets a sample.
FIRST_SAMPLE_S = 3.0


class TegrastatsSampler:
    """``tegrastats --interval N`` as a child process while the benchmark runs, its lines summarised as they come.

    Bounded: a timer stops the child after ``limit_s`` even if :meth:`stop` is never called. :meth:`stop`
    terminates it by its PID (SIGTERM, then SIGKILL after 2 s) and reaps it. Should this process die
    first, the child's next write to the closed pipe ends it (SIGPIPE).
    """

    def __init__(self, interval_ms: int = INTERVAL_MS, executable: str = "tegrastats", *,
                 limit_s: float = LIMIT_S, path: str | None = None) -> None:
        self.interval_ms, self.executable, self.limit_s, self.path = interval_ms, executable, limit_s, path
        self.process: subprocess.Popen[str] | None = None
        self.telemetry = Telemetry()
        self._lock = threading.Lock()
        self._other: deque[str] = deque(maxlen=3)  # last lines that were not samples: the reason when none came
        self._reader: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._started = self._stopped = 0.0
        self._limited = False
        self._first = threading.Event()  # set by the first sample, or when the child's output ends
        self.unknown: str | None = None

    @property
    def source(self) -> str:
        return f"tegrastats --interval {self.interval_ms}"

    def start(self) -> TegrastatsSampler:
        executable = shutil.which(self.executable, path=self.path)
        if executable is None:
            self.unknown = f"{self.executable} is not on PATH"
            return self
        try:
            self.process = subprocess.Popen([executable, "--interval", str(self.interval_ms)], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                            errors="replace")
        except OSError as exc:  # permission denied, not executable
            self.unknown = f"could not start {executable}: {exc}"
            return self
        self._started = time.monotonic()
        self._reader = threading.Thread(target=self._read, name="tegrastats-reader", daemon=True)
        self._reader.start()
        self._timer = threading.Timer(self.limit_s, self._at_limit)
        self._timer.daemon = True
        self._timer.start()
        self._first.wait(FIRST_SAMPLE_S)
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        try:
            for line in self.process.stdout:
                sample = parse_tegrastats_line(line)
                with self._lock:
                    if sample is None:
                        if line.strip():
                            self._other.append(line.strip())
                    else:
                        self.telemetry.add(sample)
                        self._first.set()
        finally:
            self._first.set()

    def _at_limit(self) -> None:
        self._limited = True
        self._stopped = time.monotonic()
        self._terminate()

    def _terminate(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            process.terminate()  # SIGTERM to its PID
            process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        except ProcessLookupError:
            pass

    def stop(self) -> dict[str, Any]:
        """Stop the child (if still running) and summarise what it printed; ``unknown`` with a reason if nothing."""
        try:
            if self._timer is not None:
                self._timer.cancel()
            self._terminate()
        finally:
            if self.process is not None and self.process.poll() is None:  # never left running
                self.process.kill()
                self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5.0)  # the child is gone, so its pipe is at EOF
        if self.process is not None and self.process.stdout is not None and not (
                self._reader is not None and self._reader.is_alive()):
            self.process.stdout.close()
        self._stopped = self._stopped or time.monotonic()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = {"source": self.source}
        if self.unknown is not None:
            return {**result, "unknown": self.unknown}
        with self._lock:
            telemetry, other = self.telemetry.summary(), list(self._other)
        seconds = round((self._stopped or time.monotonic()) - self._started, 1)
        result.update(seconds=seconds, **telemetry)
        if self._limited:
            result["note"] = f"stopped at the {self.limit_s:g} s limit; later parts of the run are not sampled"
        if not telemetry["samples"]:
            code = None if self.process is None else self.process.returncode
            said = f": {' / '.join(other)}" if other else ""
            result["unknown"] = f"{self.executable} printed no samples (exit status {code}){said}"
        return result

    def __enter__(self) -> TegrastatsSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class JtopSampler:
    """jtop (the jetson-stats package) read in a thread: its service reads the sensors as root."""

    source = "jtop (jetson-stats)"

    def __init__(self, interval_ms: int = INTERVAL_MS, *, limit_s: float = LIMIT_S) -> None:
        self.interval_ms, self.limit_s = interval_ms, limit_s
        self.telemetry = Telemetry()
        self.stats: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._started = self._stopped = 0.0
        self._error: str | None = None

    def start(self) -> JtopSampler:
        """Connect to the jtop service; raises whatever jtop raises (JtopException) when it does not answer."""
        from jtop import jtop  # type: ignore[import-not-found]

        self._client = jtop(interval=self.interval_ms / 1000.0)
        self._client.start()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._read, name="jtop-reader", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        try:
            while not self._stop.is_set() and time.monotonic() - self._started < self.limit_s and self._client.ok():
                stats = dict(self._client.stats)
                with self._lock:
                    self.stats = stats
                    self.telemetry.add(sample_from_jtop(stats))
        except Exception as exc:  # noqa: BLE001 - a sampler must not take the benchmark down; the summary says why
            self._error = f"jtop failed: {exc}"

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        try:
            if self._thread is not None:
                self._thread.join(timeout=5.0)
        finally:
            try:
                if self._client is not None:
                    self._client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection is not worth an error
                pass
        self._stopped = time.monotonic()
        with self._lock:
            telemetry = self.telemetry.summary()
        result = {"source": self.source, "seconds": round(self._stopped - self._started, 1), **telemetry}
        if self._error:
            result["note"] = self._error
        if not telemetry["samples"]:
            result["unknown"] = self._error or "jtop returned no samples"
        return result


def jtop_installed() -> bool:
    """Whether the jetson-stats package (module ``jtop``) can be imported here."""
    try:
        return importlib.util.find_spec("jtop") is not None
    except (ImportError, ValueError):
        return False
