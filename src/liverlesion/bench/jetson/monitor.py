"""The Jetson section of a benchmark result: facts before the run, samples during it, and its header lines.

:class:`JetsonMonitor` reads the power mode and jetson_clocks before the run and samples tegrastats (or jtop)
during it; :func:`format_lines` turns the section into the lines the benchmark header prints.
"""

from __future__ import annotations

from typing import Any

from .detect import JetsonHost
from .samplers import INTERVAL_MS, LIMIT_S, JtopSampler, TegrastatsSampler, jtop_installed
from .tools import clock_facts, power_mode_facts

#: The warning the header prints when the clocks are not pinned.
CLOCKS_OFF_WARNING = "jetson_clocks is off: latency varies with DVFS; run sudo jetson_clocks"


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
