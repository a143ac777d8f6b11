"""Power, temperatures and GPU load from tegrastats lines or jtop's stats, and what a run's samples add up to.

:func:`parse_tegrastats_line` reads every JetPack 4-7 layout; :class:`Telemetry` keeps running means and
maxima so a sampler need not hold its samples.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Rails that measure the whole module's input: the power figure when tegrastats prints one.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
#: Below this a temperature is a placeholder: tegrastats prints -256C for powered-off sensors.
_NO_SENSOR_C = -40.0

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
