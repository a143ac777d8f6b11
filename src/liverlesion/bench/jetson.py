"""Jetson facts for ``liverlesion bench``: power mode, jetson_clocks, and power / temperatures during the run.

Latency on a Jetson depends on its ``nvpmodel`` power mode and on whether ``jetson_clocks`` pinned
the CPU, GPU and memory (EMC) clocks at their maximum; otherwise DVFS moves them with the load.
:func:`detect_jetson` finds a Jetson from ``/etc/nv_tegra_release``, ``/proc/device-tree`` or
``nvpmodel`` on PATH (the root and PATH are parameters, so tests use fake ones). :class:`JetsonMonitor`
reads ``nvpmodel -q`` and ``jetson_clocks --show`` before the run and samples ``tegrastats`` (or
``jtop`` from the jetson-stats package, where installed and its service answers) during it.

Everything the tools print goes through the pure parsers :func:`parse_nvpmodel`,
:func:`parse_jetson_clocks` and :func:`parse_tegrastats_line`, so tests feed them recorded output.
A missing tool, a permission error (``nvpmodel`` and ``jetson_clocks`` need root on some JetPacks)
or output that does not parse gives ``unknown`` with the reason, never an exception.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataFormatError

#: tegrastats' sampling period during a benchmark (its own default is 1000 ms).
INTERVAL_MS = 500
#: The sampler stops tegrastats after this long even if nobody stops it (a bound, not an expected length).
LIMIT_S = 6 * 3600.0
#: How long starting the sampler waits for its first line, so that a short run still gets a sample.
FIRST_SAMPLE_S = 3.0
#: How long a query (``nvpmodel -q``, ``jetson_clocks --show``) may take.
QUERY_TIMEOUT_S = 15.0
#: The warning the header prints when the clocks are not pinned.
CLOCKS_OFF_WARNING = "jetson_clocks is off: latency varies with DVFS; run sudo jetson_clocks"
#: Rails that measure the whole module's input: the power figure when tegrastats prints one.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
#: L4T major release -> JetPack major version.
JETPACK = {32: "4", 34: "5 (developer preview)", 35: "5", 36: "6", 38: "7", 39: "7"}
#: Below this a temperature is a placeholder: tegrastats prints -256C for powered-off sensors.
_NO_SENSOR_C = -40.0


# -- detection ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JetsonHost:
    """A Jetson: its model, L4T release and JetPack version (None where not found), and what gave it away."""

    model: str | None
    l4t: str | None
    jetpack: str | None
    evidence: tuple[str, ...]
    path: str | None = None  # the PATH its tools are looked up in (None: the process's)


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode(errors="replace")
    except OSError:
        return None


def parse_l4t(text: str) -> tuple[str, str | None]:
    """``("36.4.4", "6")`` from /etc/nv_tegra_release ("# R36 (release), REVISION: 4.4, GCID: ...")."""
    match = re.search(r"R(\d+)\s*\(\w+\),\s*REVISION:\s*([\d.]+)", text)
    if match is None:
        raise DataFormatError(f"not an L4T release line: {text.strip()[:80]!r}; expected e.g. "
                              f"'# R36 (release), REVISION: 4.4, ...'")
    major = int(match.group(1))
    return f"{major}.{match.group(2).rstrip('.')}", JETPACK.get(major)


def detect_jetson(root: str | Path = "/", path: str | None = None) -> JetsonHost | None:
    """The Jetson this runs on, or None: ``root``/etc/nv_tegra_release, its device tree, or nvpmodel on ``path``."""
    root = Path(root)
    evidence: list[str] = []
    release = _read(root / "etc/nv_tegra_release")
    l4t = jetpack = None
    if release is not None:
        evidence.append("/etc/nv_tegra_release")
        try:
            l4t, jetpack = parse_l4t(release)
        except DataFormatError:
            pass  # still a Jetson; the release stays unknown
    model = (_read(root / "proc/device-tree/model") or "").strip("\x00 \n") or None
    if model is not None and "jetson" in model.lower():
        evidence.append("/proc/device-tree/model")
    compatible = _read(root / "proc/device-tree/compatible") or ""
    if "nvidia,tegra" in compatible:  # carrier boards from other vendors may not say "Jetson" in the model
        evidence.append("/proc/device-tree/compatible")
    nvpmodel = shutil.which("nvpmodel", path=path)
    if nvpmodel is not None:
        evidence.append(f"nvpmodel at {nvpmodel}")
    if not evidence:
        return None
    return JetsonHost(model, l4t, jetpack, tuple(evidence), path)


# -- nvpmodel -q ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PowerMode:
    """An nvpmodel power mode: its name (MAXN, MAXN_SUPER, 15W, MODE_30W...) and id (None if not printed)."""

    name: str
    id: int | None


def parse_nvpmodel(text: str) -> PowerMode:
    """The mode ``nvpmodel -q`` printed: "NV Power Mode: MAXN" then its id alone on the next line."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.search(r"NV Power Mode:\s*(\S+)", line)
        if match is None:
            continue
        following = next((s.strip() for s in lines[i + 1:] if s.strip()), "")
        return PowerMode(match.group(1), int(following) if following.isdigit() else None)
    raise DataFormatError(f"nvpmodel -q printed no 'NV Power Mode: NAME' line (got {text.strip()[:120]!r})")


# -- jetson_clocks --show ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clock:
    """One clock as jetson_clocks prints it, in MHz; ``override`` is EMC's FreqOverride where printed."""

    name: str  # cpu0..cpuN, GPU, EMC
    min_mhz: float
    max_mhz: float
    current_mhz: float
    online: bool = True
    override: bool | None = None

    @property
    def pinned(self) -> bool:
        """Whether jetson_clocks holds it at its maximum (see :attr:`below_max` for where it runs now).

        jetson_clocks raises the CPU and GPU floors (MinFreq) to their ceilings; a busy DVFS governor
        also reaches the maximum, so current == max alone proves nothing for them. EMC keeps its floor
        on JetPack 5/6 and is locked through FreqOverride=1 instead; where that is not printed
        (JetPack 7), it counts as pinned when it runs at its maximum.
        """
        if self.name == "EMC":
            return self.override if self.override is not None else self.current_mhz >= self.max_mhz
        return self.min_mhz >= self.max_mhz

    @property
    def below_max(self) -> bool:
        return self.current_mhz < self.max_mhz


@dataclass(frozen=True)
class ClockState:
    """The CPU, GPU and EMC clocks of ``jetson_clocks --show`` (online CPUs only), and the mode it names."""

    clocks: tuple[Clock, ...]
    power_mode: str | None = None

    @property
    def on(self) -> bool:
        """Whether every clock is pinned: what running ``sudo jetson_clocks`` leaves."""
        return all(c.pinned for c in self.clocks)

    def not_pinned(self) -> list[str]:
        return [c.name for c in self.clocks if not c.pinned]

    def below_max(self) -> list[str]:
        """Clocks under their maximum as printed, e.g. "cpu1 729.6/1728 MHz" (DVFS, or throttling when pinned)."""
        return [f"{c.name} {c.current_mhz:g}/{c.max_mhz:g} MHz" for c in self.clocks if c.below_max]


def _cpu_list(text: str) -> set[int]:
    """CPU numbers of a list like "0-3,5" (jetson_clocks' "Online CPUs: 0,3-5")."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        if low.isdigit():
            cpus.update(range(int(low), int(high) + 1 if high.isdigit() else int(low) + 1))
    return cpus


def parse_jetson_clocks(text: str) -> ClockState:
    """The clocks ``jetson_clocks --show`` printed (CPU in kHz, GPU and EMC in Hz, all JetPack 4-7 layouts)."""
    online_match = re.search(r"^\s*Online CPUs:\s*([\d,\- ]+?)\s*(?:,\s*Offline CPUs:.*)?$", text, re.M)
    online_cpus = _cpu_list(online_match.group(1)) if online_match else None
    mode = re.search(r"NV Power Mode:\s*(\S+)", text)
    clocks = []
    for line in text.splitlines():
        match = re.match(r"\s*(cpu(\d+)|GPU|EMC)\b:?\s+(.*)$", line)
        if match is None:
            continue
        fields = dict(re.findall(r"(\w+)=(\S+)", match.group(3)))
        try:
            low, high, now = (int(fields[k]) for k in ("MinFreq", "MaxFreq", "CurrentFreq"))
        except (KeyError, ValueError):
            continue  # "GPU" lines without frequencies (e.g. "Active GPU TPCs") are not clocks
        name, cpu = match.group(1), match.group(2)
        if cpu is not None:
            online = fields["Online"] == "1" if "Online" in fields else (
                online_cpus is None or int(cpu) in online_cpus)
            if not online:
                continue  # an offline core keeps its own limits; it runs nothing
        scale = 1e3 if cpu is not None else 1e6  # kHz for CPUs, Hz for GPU and EMC
        override = fields.get("FreqOverride")
        clocks.append(Clock(name, low / scale, high / scale, now / scale,
                            override=None if override is None else override != "0"))
    if not clocks:
        raise DataFormatError(f"jetson_clocks --show printed no CPU, GPU or EMC clock lines "
                              f"(got {text.strip()[:120]!r}); expected e.g. 'GPU MinFreq=.. MaxFreq=.. CurrentFreq=..'")
    return ClockState(tuple(clocks), mode.group(1) if mode else None)


# -- tegrastats ---------------------------------------------------------------------------------------------
# Rails: "VDD_IN 5704mW/5704mW" (JetPack 5/6), "VDD_GPU_SOC 5139mW/5139mW/5139mW" (7), "POM_5V_IN 933/933" (4).
# The negative look-ahead keeps "RAM 2461/7620MB" and "IRAM 0/252kB" out.
_MW = r"(\d+(?:\.\d+)?)(?:mW)?"
_RAIL = re.compile(rf"\b([A-Z][A-Z0-9_]*) {_MW}/{_MW}(?:/{_MW})?(?![\w/])")
# Temperatures: "tj@47.5C", "CPU@41.375C", "cpu@52.968C/52.968C" (JetPack 7 adds the maximum).
_TEMP = re.compile(r"\b([A-Za-z][\w-]*)@(-?\d+(?:\.\d+)?)C\b")
# GPU: "GR3D_FREQ 63%@[621]", "GR3D_FREQ 12%@[1300,1300]", "GR3D_FREQ 0%@114", "GR3D_FREQ 99%", "GR3D_FREQ @[1000]".
_GR3D = re.compile(r"\bGR3D_FREQ (?:(\d+)%)?(?:@\[?(\d+))?")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
#: Rails named NC are not connected.
_NOT_CONNECTED = "NC"


@dataclass(frozen=True)
class TegraSample:
    """One tegrastats line: rails' current power in mW, temperatures in C, GPU load in %, RAM used in MB."""

    rails_mw: dict[str, float] = field(default_factory=dict)
    temps_c: dict[str, float] = field(default_factory=dict)
    gpu_load: float | None = None
    gpu_mhz: float | None = None
    ram_used_mb: float | None = None
    total_mw: float | None = None  # the input power when the source names one itself (jtop's "Power TOT")
    total_name: str | None = None


def parse_tegrastats_line(line: str) -> TegraSample | None:
    """The fields of one tegrastats line (JetPack 4-7 layouts), or None for a line that is not one."""
    rails = {name: float(now) for name, now, *_ in _RAIL.findall(line) if name != _NOT_CONNECTED}
    temps = {name: float(value) for name, value in _TEMP.findall(line) if float(value) > _NO_SENSOR_C}
    gr3d, ram = _GR3D.search(line), _RAM.search(line)
    if not (rails or temps or gr3d or ram):
        return None
    load = gr3d.group(1) if gr3d else None
    mhz = gr3d.group(2) if gr3d else None
    return TegraSample(rails, temps, None if load is None else float(load), None if mhz is None else float(mhz),
                       None if ram is None else float(ram.group(1)))


def sample_from_jtop(stats: dict[str, Any]) -> TegraSample:
    """A sample from jtop's ``stats`` dict ("Power TOT" and "Power <rail>" in mW, "Temp <zone>" in C, "GPU" %)."""
    def number(value: Any) -> float | None:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    rails: dict[str, float] = {}
    temps: dict[str, float] = {}
    for key, raw in stats.items():
        value = number(raw)
        if value is None:
            continue  # "OFF" for powered-down parts
        if key.startswith("Power ") and key != "Power TOT":
            rails[key.removeprefix("Power ")] = value
        elif key.startswith("Temp ") and value > _NO_SENSOR_C:
            temps[key.removeprefix("Temp ")] = value
    return TegraSample(rails, temps, number(stats.get("GPU")), total_mw=number(stats.get("Power TOT")),
                       total_name="jtop total (Power TOT)")


def input_power(sample: TegraSample) -> tuple[str, float] | None:
    """(what it is, mW) of the module's input power: the input rail, else the sum of all rails."""
    if sample.total_mw is not None:
        return sample.total_name or "total", sample.total_mw
    for rail in INPUT_RAILS:
        if rail in sample.rails_mw:
            return rail, sample.rails_mw[rail]
    if sample.rails_mw:  # AGX Xavier / AGX Orin print no input rail; the module's power is their sum
        return "sum of " + "+".join(sample.rails_mw), sum(sample.rails_mw.values())
    return None


class _Running:
    """Count, mean and maximum of a stream of numbers."""

    def __init__(self) -> None:
        self.count, self.total, self.peak = 0, 0.0, float("-inf")

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.peak = max(self.peak, value)

    def summary(self, scale: float = 1.0, digits: int = 3) -> dict[str, float]:
        return {"mean": round(self.total / self.count / scale, digits), "max": round(self.peak / scale, digits)}


class Telemetry:
    """What samples add up to: input power mean / max, each rail's, maximum temperature per zone, GPU load."""

    def __init__(self) -> None:
        self.samples = 0
        self.power = _Running()
        self.power_name: str | None = None
        self.rails: dict[str, _Running] = {}
        self.temps: dict[str, float] = {}
        self.gpu = _Running()
        self.ram_peak: float | None = None

    def add(self, sample: TegraSample) -> None:
        self.samples += 1
        power = input_power(sample)
        if power is not None:
            self.power_name = self.power_name or power[0]
            self.power.add(power[1])
        for name, value in sample.rails_mw.items():
            self.rails.setdefault(name, _Running()).add(value)
        for zone, value in sample.temps_c.items():
            self.temps[zone] = max(self.temps.get(zone, value), value)
        if sample.gpu_load is not None:
            self.gpu.add(sample.gpu_load)
        if sample.ram_used_mb is not None:
            self.ram_peak = max(self.ram_peak or 0.0, sample.ram_used_mb)

    def summary(self) -> dict[str, Any]:
        """JSON-able: power in W (mean / max), rails in W, max temperature per zone in C, GPU load in %."""
        result: dict[str, Any] = {"samples": self.samples, "input_rail": self.power_name,
                                  "power_w": self.power.summary(1000.0) if self.power.count else None,
                                  "rails_w": {k: v.summary(1000.0) for k, v in self.rails.items()},
                                  "temperature_c_max": {k: round(v, 2) for k, v in self.temps.items()},
                                  "gpu_load_percent": self.gpu.summary(1.0, 1) if self.gpu.count else None,
                                  "ram_used_mb_max": self.ram_peak}
        if self.samples and not self.power.count:
            result["power_unknown"] = ("tegrastats printed no power rails (some JetPack images show them to "
                                       "root only: run the benchmark with sudo)")
        return result


def summarize(samples: Iterable[TegraSample]) -> dict[str, Any]:
    """:meth:`Telemetry.summary` of ``samples``."""
    telemetry = Telemetry()
    for sample in samples:
        telemetry.add(sample)
    return telemetry.summary()


# -- the samplers -------------------------------------------------------------------------------------------
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


# -- queries and the monitor ----------------------------------------------------------------------------------
def _query(command: str, args: list[str], path: str | None, timeout: float) -> tuple[str | None, str | None]:
    """(stdout, None) of a tool, or (None, why not): not on PATH, permission, timeout, failure."""
    executable = shutil.which(command, path=path)
    if executable is None:
        return None, f"{command} is not on PATH"
    try:
        done = subprocess.run([executable, *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, errors="replace", check=False)
    except subprocess.TimeoutExpired:
        return None, f"{command} {' '.join(args)} did not answer within {timeout:g} s"
    except OSError as exc:
        return None, f"could not run {executable}: {exc}"
    said = (done.stderr.strip() or done.stdout.strip()).splitlines()
    if done.returncode != 0:
        root = " (it needs root here: run the benchmark with sudo)" if _needs_root(said) else ""
        return None, f"{command} {' '.join(args)} exited with status {done.returncode}" + (
            f": {said[-1]}" if said else "") + root
    return done.stdout, None


def _needs_root(lines: list[str]) -> bool:
    return any(word in line.lower() for line in lines for word in ("root", "permission", "sudo"))


def power_mode_facts(path: str | None = None, timeout: float = QUERY_TIMEOUT_S) -> dict[str, Any]:
    """``{"name", "id", "source"}`` from ``nvpmodel -q``, or ``{"name": None, "id": None, "unknown": why}``."""
    out, why = _query("nvpmodel", ["-q"], path, timeout)
    if out is not None:
        try:
            mode = parse_nvpmodel(out)
            return {"name": mode.name, "id": mode.id, "source": "nvpmodel -q"}
        except DataFormatError as exc:
            why = str(exc)
    return {"name": None, "id": None, "unknown": why}


def clock_facts(path: str | None = None, timeout: float = QUERY_TIMEOUT_S) -> dict[str, Any]:
    """Whether jetson_clocks pinned the clocks, from ``jetson_clocks --show``; ``on`` None and why when unknown."""
    out, why = _query("jetson_clocks", ["--show"], path, timeout)
    if out is not None:
        try:
            state = parse_jetson_clocks(out)
        except DataFormatError as exc:
            why = str(exc)
        else:
            return {"on": state.on, "source": "jetson_clocks --show", "not_pinned": state.not_pinned(),
                    "below_max": state.below_max(), "power_mode": state.power_mode,
                    "clocks": [{"name": c.name, "min_mhz": c.min_mhz, "max_mhz": c.max_mhz,
                                "current_mhz": c.current_mhz, "pinned": c.pinned} for c in state.clocks]}
    return {"on": None, "unknown": why}


class JetsonMonitor:
    """Jetson facts before the run and power / temperatures during it; does nothing when ``host`` is None.

    Use as a context manager around the run; :meth:`report` is then the ``machine["jetson"]`` section.
    """

    def __init__(self, host: JetsonHost | None, *, interval_ms: int = INTERVAL_MS, limit_s: float = LIMIT_S,
                 use_jtop: bool | None = None) -> None:
        self.host, self.interval_ms, self.limit_s = host, interval_ms, limit_s
        self.use_jtop = jtop_installed() if use_jtop is None else use_jtop
        self.facts: dict[str, Any] | None = None
        self.sampled: dict[str, Any] | None = None
        self._sampler: TegrastatsSampler | JtopSampler | None = None
        self._jtop_failed: str | None = None

    def __enter__(self) -> JetsonMonitor:
        if self.host is None:
            return self
        host = self.host
        self.facts = {"model": host.model, "l4t": host.l4t, "jetpack": host.jetpack,
                      "detected_by": list(host.evidence), "power_mode": power_mode_facts(host.path),
                      "jetson_clocks": clock_facts(host.path)}
        self._sampler = self._start_sampler()
        return self

    def _start_sampler(self) -> TegrastatsSampler | JtopSampler:
        if self.use_jtop:
            sampler = JtopSampler(self.interval_ms, limit_s=self.limit_s)
            try:
                return sampler.start()
            except Exception as exc:  # noqa: BLE001 - jtop raises its own JtopException; tegrastats is the fallback
                sampler.stop()
                self._jtop_failed = f"jtop did not answer ({exc}): "
        return TegrastatsSampler(self.interval_ms, limit_s=self.limit_s, path=self.host.path if self.host else None
                                 ).start()

    def __exit__(self, *exc: object) -> None:
        if self._sampler is None:
            return
        sampler, self._sampler = self._sampler, None
        self.sampled = sampler.stop()
        if self._jtop_failed:
            notes = [self._jtop_failed + "sampled tegrastats instead", self.sampled.get("note")]
            self.sampled["note"] = "; ".join(n for n in notes if n)
        if isinstance(sampler, JtopSampler) and self.facts is not None:
            self._fill_from_jtop(sampler.stats)

    def _fill_from_jtop(self, stats: dict[str, Any]) -> None:
        """Power mode and jetson_clocks from jtop's service (it runs as root) where the tools would not answer."""
        assert self.facts is not None
        mode, clocks = self.facts["power_mode"], self.facts["jetson_clocks"]
        if mode.get("name") is None and isinstance(stats.get("nvp model"), str):
            self.facts["power_mode"] = {"name": stats["nvp model"], "id": None, "source": "jtop",
                                        "note": mode.get("unknown")}
        if clocks.get("on") is None and stats.get("jetson_clocks") in ("ON", "OFF"):
            self.facts["jetson_clocks"] = {"on": stats["jetson_clocks"] == "ON", "source": "jtop",
                                           "note": clocks.get("unknown")}

    def report(self) -> dict[str, Any] | None:
        """The ``machine["jetson"]`` section (facts and ``sampled``), or None off a Jetson."""
        if self.facts is None:
            return None
        return {**self.facts, "sampled": self.sampled}


# -- the header lines ----------------------------------------------------------------------------------------
def _mode_text(mode: dict[str, Any]) -> str:
    if mode.get("name") is None:
        return f"power mode unknown ({mode.get('unknown') or 'not read'})"
    return f"power mode {mode['name']}" + ("" if mode.get("id") is None else f" (nvpmodel {mode['id']})")


def _clocks_text(clocks: dict[str, Any]) -> str:
    if clocks.get("on") is None:
        return f"jetson_clocks unknown ({clocks.get('unknown') or 'not read'})"
    if clocks["on"]:
        return "jetson_clocks on"
    names = clocks.get("not_pinned") or []
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return "jetson_clocks off" + (f" (not pinned: {shown})" if shown else "")


#: Zones the header names, when tegrastats prints them (the JSON has every zone).
_HEADER_ZONES = ("cpu", "gpu", "tj", "soc0", "soc", "cv0")


def _sampled_text(sampled: dict[str, Any] | None) -> str:
    if sampled is None:
        return "during the run: not sampled"
    if sampled.get("unknown"):
        return f"during the run: power and temperatures unknown ({sampled['unknown']})"
    parts = []
    power = sampled.get("power_w")
    if power:
        parts.append(f"{sampled['input_rail']} mean {power['mean']:.2f} W, max {power['max']:.2f} W")
    else:
        parts.append(f"power unknown ({sampled.get('power_unknown') or 'no rails'})")
    load = sampled.get("gpu_load_percent")
    if load:
        parts.append(f"GPU load mean {load['mean']:.0f}%, max {load['max']:.0f}%")
    temps = sampled.get("temperature_c_max") or {}
    lower = {k.lower(): (k, v) for k, v in temps.items()}
    named = [lower[z] for z in _HEADER_ZONES if z in lower] or list(temps.items())
    if named:
        parts.append("max temperature " + ", ".join(f"{k} {v:.1f} C" for k, v in named))
    return (f"during the run ({sampled['source']}, {sampled['samples']} samples over {sampled.get('seconds', 0):g} s): "
            + "; ".join(parts))


def format_lines(info: dict[str, Any]) -> list[str]:
    """The header lines of a ``machine["jetson"]`` section: model, mode, clocks, sampled power, a warning."""
    release = ", ".join(p for p in (f"L4T {info['l4t']}" if info.get("l4t") else "",
                                     f"JetPack {info['jetpack']}" if info.get("jetpack") else "") if p)
    model = (info.get("model") or "model unknown") + (f" ({release})" if release else "")
    clocks = info.get("jetson_clocks") or {}
    lines = [f"Jetson: {model}; {_mode_text(info.get('power_mode') or {})}; {_clocks_text(clocks)}",
             _sampled_text(info.get("sampled"))]
    if clocks.get("on") is False:
        lines.append(f"warning: {CLOCKS_OFF_WARNING}")
    below = clocks.get("below_max") or []
    if clocks.get("on") and below:
        lines.append(f"warning: pinned clocks below their maximum (thermal throttling?): {', '.join(below[:4])}")
    return lines
