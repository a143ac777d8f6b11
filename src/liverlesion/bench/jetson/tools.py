"""The power mode (``nvpmodel -q``) and whether ``jetson_clocks`` pinned the clocks (``jetson_clocks --show``).

What the tools print goes through the pure parsers :func:`parse_nvpmodel` and :func:`parse_jetson_clocks`,
so tests feed them recorded output. A missing tool, a permission error (both need root on some JetPacks)
or output that does not parse gives ``unknown`` with the reason, never an exception.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from ...errors import DataFormatError

#: How long a query (``nvpmodel -q``, ``jetson_clocks --show``) may take.
QUERY_TIMEOUT_S = 15.0


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


# -- the queries ----------------------------------------------------------------------------------------------
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
