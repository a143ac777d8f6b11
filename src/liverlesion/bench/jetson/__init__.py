"""Jetson facts for ``liverlesion bench``: power mode, jetson_clocks, and power / temperatures during the run.

Latency on a Jetson depends on its ``nvpmodel`` power mode and on whether ``jetson_clocks`` pinned the CPU,
GPU and memory clocks; :mod:`.detect` finds a Jetson, :mod:`.tools` reads ``nvpmodel -q`` and
``jetson_clocks --show``, :mod:`.tegrastats` parses and summarises samples, :mod:`.samplers` runs
``tegrastats`` or jtop during the run, and :mod:`.monitor` puts it together as the ``machine["jetson"]``
section and its header lines. Tuning constants (``INTERVAL_MS``, ``FIRST_SAMPLE_S``...) live in the module
that reads them, so that is the module to patch.
"""

from .detect import JetsonHost, detect_jetson, parse_l4t
from .monitor import CLOCKS_OFF_WARNING, JetsonMonitor, format_lines
from .samplers import JtopSampler, TegrastatsSampler, jtop_installed
from .tegrastats import TegraSample, Telemetry, input_power, parse_tegrastats_line, sample_from_jtop, summarize
from .tools import Clock, ClockState, PowerMode, clock_facts, parse_jetson_clocks, parse_nvpmodel, power_mode_facts

__all__ = [
    "CLOCKS_OFF_WARNING",
    "Clock",
    "ClockState",
    "JetsonHost",
    "JetsonMonitor",
    "JtopSampler",
    "PowerMode",
    "TegraSample",
    "TegrastatsSampler",
    "Telemetry",
    "clock_facts",
    "detect_jetson",
    "format_lines",
    "input_power",
    "jtop_installed",
    "parse_jetson_clocks",
    "parse_l4t",
    "parse_nvpmodel",
    "parse_tegrastats_line",
    "power_mode_facts",
    "sample_from_jtop",
    "summarize",
]
