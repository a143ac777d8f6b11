"""liverlesion.bench.jetson: the parsers on recorded tool output, detection, the samplers, the report.

The recorded outputs live in data/jetson/ (where each came from is written above its '---' line).
The samplers run fake tools (small Python scripts on a temporary PATH); nothing here needs a Jetson.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import ClassVar

import pytest

from liverlesion.bench import jetson
from liverlesion.bench.jetson import (
    CLOCKS_OFF_WARNING,
    JetsonHost,
    JetsonMonitor,
    TegrastatsSampler,
    clock_facts,
    detect_jetson,
    format_lines,
    parse_jetson_clocks,
    parse_l4t,
    parse_nvpmodel,
    parse_tegrastats_line,
    power_mode_facts,
    sample_from_jtop,
    summarize,
)
from liverlesion.bench.jetson import monitor as jetson_monitor
from liverlesion.bench.jetson import samplers as jetson_samplers
from liverlesion.bench.machine import format_header, machine_info
from liverlesion.bench.report import format_table, to_markdown, write_json
from liverlesion.errors import DataFormatError

DATA = Path(__file__).parent / "data" / "jetson"
#: Generous bound on waiting for a child process (not a timing assertion: the tests only need it to happen).
PATIENCE_S = 60.0


def recorded(name: str) -> str:
    """The recorded output in data/jetson/NAME (below its '---' line)."""
    return (DATA / name).read_text().split("\n---\n", 1)[1]


def lines_of(name: str) -> list[str]:
    return [line for line in recorded(name).splitlines() if line.strip()]


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {PATIENCE_S:g} s")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def tool(bin_dir: Path, name: str, body: str) -> Path:
    """An executable Python script ``bin_dir/name`` (a fake Jetson tool)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def printing(text: str) -> str:
    """A fake tool's body that prints ``text`` and exits 0."""
    return f"import sys\nsys.stdout.write({text!r})\n"


def fake_tegrastats(bin_dir: Path, lines: list[str], *, repeat_every_s: float | None = None) -> Path:
    """A fake tegrastats: records its arguments, prints ``lines``, then repeats them or waits to be killed."""
    return tool(bin_dir, "tegrastats", f"""
        import sys, time
        open({str(bin_dir / 'tegrastats.args')!r}, "w").write(" ".join(sys.argv[1:]))
        lines = {lines!r}
        while True:
            for line in lines:
                print(line, flush=True)
                if {repeat_every_s!r} is not None:
                    time.sleep({repeat_every_s!r})
            if {repeat_every_s!r} is None:
                time.sleep(3600)
        """)


# -- nvpmodel, L4T -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "mode", "mode_id"), [("nvpmodel_jp6_orin_nx_maxn_super.txt", "MAXN_SUPER", 2),
                                                       ("nvpmodel_jp6_orin_nano_25w.txt", "25W", 1),
                                                       ("nvpmodel_jp4_nano_maxn.txt", "MAXN", 0)])
def test_nvpmodel_mode_name_and_id(name: str, mode: str, mode_id: int) -> None:
    parsed = parse_nvpmodel(recorded(name))
    assert (parsed.name, parsed.id) == (mode, mode_id)


def test_nvpmodel_skips_warnings_and_refuses_other_output() -> None:
    # nvpmodel may print NVPM WARN lines first; the mode line is what counts
    assert parse_nvpmodel("NVPM WARN: fan mode is not set!\n" + recorded("nvpmodel_jp4_nano_maxn.txt")).id == 0
    assert parse_nvpmodel("NV Power Mode: MODE_30W\n").id is None
    with pytest.raises(DataFormatError, match="NV Power Mode"):
        parse_nvpmodel("nvpmodel: command failed\n")


def test_l4t_release_and_jetpack() -> None:
    assert parse_l4t(recorded("nv_tegra_release_r36_4_4.txt")) == ("36.4.4", "6")
    assert parse_l4t("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref") == ("35.4.1", "5")
    assert parse_l4t("# R39 (release), REVISION: 2.0, GCID: 45755727, BOARD: generic") == ("39.2.0", "7")
    with pytest.raises(DataFormatError, match="R36"):
        parse_l4t("Ubuntu 22.04")


# -- detection ---------------------------------------------------------------------------------------
def fake_root(root: Path, *, release: str | None = None, model: str | None = None,
              compatible: str | None = None) -> Path:
    for rel, text in (("etc/nv_tegra_release", release), ("proc/device-tree/model", model),
                      ("proc/device-tree/compatible", compatible)):
        if text is not None:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(text.encode())
    return root


def test_detects_a_jetson_from_its_release_file_and_device_tree(tmp_path: Path) -> None:
    root = fake_root(tmp_path, release=recorded("nv_tegra_release_r36_4_4.txt"),
                     model="NVIDIA Jetson Orin NX Engineering Reference Developer Kit\x00")
    host = detect_jetson(root, path=str(tmp_path / "empty"))
    assert host is not None
    assert host.model == "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"  # NUL stripped
    assert (host.l4t, host.jetpack) == ("36.4.4", "6")
    assert host.evidence == ("/etc/nv_tegra_release", "/proc/device-tree/model")


def test_detects_a_jetson_from_any_one_sign(tmp_path: Path) -> None:
    only_model = detect_jetson(fake_root(tmp_path / "a", model="NVIDIA Jetson Nano Developer Kit"), path="")
    assert only_model is not None and only_model.l4t is None and only_model.evidence == ("/proc/device-tree/model",)
    compatible = "lanner,eai-i233\x00nvidia,p3701-0005\x00nvidia,tegra234\x00"
    carrier = detect_jetson(fake_root(tmp_path / "b", model="Lanner EAI-I233", compatible=compatible), path="")
    assert carrier is not None and carrier.evidence == ("/proc/device-tree/compatible",)
    nvpmodel = tool(tmp_path / "bin", "nvpmodel", printing(recorded("nvpmodel_jp4_nano_maxn.txt")))
    by_tool = detect_jetson(tmp_path / "nothing", path=str(tmp_path / "bin"))
    assert by_tool is not None and by_tool.evidence == (f"nvpmodel at {nvpmodel}",)
    assert by_tool.path == str(tmp_path / "bin")  # the tools are then looked up on the same PATH


def test_not_a_jetson(tmp_path: Path) -> None:
    assert detect_jetson(tmp_path, path=str(tmp_path)) is None
    assert detect_jetson(fake_root(tmp_path / "pi", model="Raspberry Pi 4 Model B Rev 1.4",
                                   compatible="raspberrypi,4-model-b\x00brcm,bcm2711\x00"), path="") is None


# -- jetson_clocks --show ----------------------------------------------------------------------------
def test_clocks_before_jetson_clocks_are_not_pinned() -> None:
    state = parse_jetson_clocks(recorded("jetson_clocks_agx_orin_30w_off.txt"))
    assert state.power_mode == "MODE_30W"
    # cpu0-7 online, cpu8-11 offline (left out), GPU, EMC; DLA / PVA lines are not CPU, GPU or EMC clocks
    assert [c.name for c in state.clocks] == [f"cpu{i}" for i in range(8)] + ["GPU", "EMC"]
    cpu1, gpu, emc = state.clocks[1], state.clocks[8], state.clocks[9]
    assert (cpu1.min_mhz, cpu1.max_mhz, cpu1.current_mhz) == (729.6, 1728.0, 729.6)  # kHz -> MHz
    assert (gpu.min_mhz, gpu.max_mhz, gpu.current_mhz) == (306.0, 612.0, 306.0)  # Hz -> MHz
    assert (emc.current_mhz, emc.max_mhz, emc.override) == (3199.0, 3199.0, False)
    assert not state.on
    # EMC at its maximum but without FreqOverride is DVFS's choice, not jetson_clocks'
    assert state.not_pinned() == [f"cpu{i}" for i in range(8)] + ["GPU", "EMC"]
    assert state.below_max() == ["cpu0 1420.8/1728 MHz", "cpu1 729.6/1728 MHz", "cpu2 1420.8/1728 MHz",
                                 "cpu3 729.6/1728 MHz", "cpu4 1497.6/1728 MHz", "cpu5 729.6/1728 MHz",
                                 "cpu6 1497.6/1728 MHz", "cpu7 729.6/1728 MHz", "GPU 306/612 MHz"]


def test_clocks_after_jetson_clocks_are_pinned() -> None:
    state = parse_jetson_clocks(recorded("jetson_clocks_agx_orin_30w_on.txt"))
    assert state.on and state.not_pinned() == [] and state.below_max() == []
    assert all(c.min_mhz == c.max_mhz == 1728.0 for c in state.clocks[:8])
    assert state.clocks[-1].override is True
    jp7 = parse_jetson_clocks(recorded("jetson_clocks_jp7_agx_orin_maxn_on.txt"))  # no "Online=", no FreqOverride
    assert len(jp7.clocks) == 14 and jp7.on and jp7.power_mode == "MAXN"
    assert jp7.clocks[12].max_mhz == 1300.5 and jp7.clocks[13].override is None


@pytest.mark.parametrize(("name", "clocks", "mode", "below"), [
    ("jetson_clocks_jp6_orin_nx_maxn_super_off.txt", 8, "MAXN_SUPER",
     ["cpu1 1497.6/1510.4 MHz", "cpu2 1190.4/1510.4 MHz", "cpu3 1113.6/1510.4 MHz", "cpu4 729.6/1510.4 MHz",
      "cpu5 883.2/1510.4 MHz", "GPU 306/624.75 MHz"]),
    ("jetson_clocks_orin_nano_super_25w_off.txt", 8, "25W",
     ["cpu0 960/1344 MHz", "cpu1 960/1344 MHz", "cpu5 1267.2/1344 MHz", "GPU 306/918 MHz", "EMC 665.6/3199 MHz"]),
])
def test_clocks_left_to_dvfs_on_jetpack_6(name: str, clocks: int, mode: str, below: list[str]) -> None:
    state = parse_jetson_clocks(recorded(name))
    assert len(state.clocks) == clocks and state.power_mode == mode
    assert not state.on and state.below_max() == below
    assert "cpu0" in state.not_pinned()  # at its maximum now, but free to drop: its floor is 729.6 MHz


def test_offline_cpus_from_the_online_list() -> None:
    state = parse_jetson_clocks("Online CPUs: 0,3-5\n"
                                "cpu0: Governor=schedutil MinFreq=2035200 MaxFreq=2035200 CurrentFreq=2035200\n"
                                "cpu1: Governor=schedutil MinFreq=345600 MaxFreq=2035200 CurrentFreq=345600\n"
                                "cpu3: Governor=schedutil MinFreq=2035200 MaxFreq=2035200 CurrentFreq=2035200\n")
    assert [c.name for c in state.clocks] == ["cpu0", "cpu3"] and state.on
    with pytest.raises(DataFormatError, match="no CPU, GPU or EMC"):
        parse_jetson_clocks("Error: Run this script(/usr/bin/jetson_clocks) as a root user\n")


# -- tegrastats ---------------------------------------------------------------------------------------
def test_tegrastats_jetpack6_orin_nano_every_field() -> None:
    busy, idle, third = (parse_tegrastats_line(line) for line in lines_of("tegrastats_jp6_orin_nano.txt"))
    assert busy is not None and idle is not None and third is not None
    assert busy.rails_mw == {"VDD_IN": 12479.0, "VDD_CPU_GPU_CV": 4667.0, "VDD_SOC": 2817.0}
    assert busy.temps_c == {"cpu": 53.968, "soc2": 52.437, "soc0": 50.75, "gpu": 53.343, "tj": 53.968,
                            "soc1": 51.656}
    assert (busy.gpu_load, busy.gpu_mhz, busy.ram_used_mb) == (63.0, 621.0, 6185.0)
    assert (idle.gpu_load, idle.gpu_mhz, idle.rails_mw["VDD_IN"]) == (0.0, None, 4824.0)  # "GR3D_FREQ 0%"
    assert (third.gpu_load, third.gpu_mhz, third.rails_mw["VDD_SOC"]) == (0.0, 305.0, 1624.0)


def test_tegrastats_summary_of_a_run() -> None:
    summary = summarize(parse_tegrastats_line(line) for line in lines_of("tegrastats_jp6_orin_nano.txt"))
    assert summary["samples"] == 3 and summary["input_rail"] == "VDD_IN"
    assert summary["power_w"] == {"mean": round((12479 + 4824 + 5704) / 3000, 3), "max": 12.479}
    assert summary["rails_w"]["VDD_CPU_GPU_CV"] == {"mean": round((4667 + 518 + 831) / 3000, 3), "max": 4.667}
    assert summary["temperature_c_max"] == {"cpu": 53.97, "soc2": 52.44, "soc0": 50.75, "gpu": 53.34,
                                            "tj": 53.97, "soc1": 51.66}
    assert summary["gpu_load_percent"] == {"mean": 21.0, "max": 63.0}
    assert summary["ram_used_mb_max"] == 6185.0 and "power_unknown" not in summary


def test_tegrastats_jetpack5_xavier_nx() -> None:
    (line,) = lines_of("tegrastats_jp5_xavier_nx.txt")
    sample = parse_tegrastats_line(line)
    assert sample is not None
    assert sample.rails_mw == {"VDD_IN": 5079.0, "VDD_CPU_GPU_CV": 696.0, "VDD_SOC": 1104.0}
    assert sample.temps_c == {"AUX": 39.0, "CPU": 39.5, "AO": 37.5, "GPU": 37.5, "PMIC": 50.0}
    assert (sample.gpu_load, sample.gpu_mhz, sample.ram_used_mb) == (0.0, 510.0, 2690.0)
    assert jetson.input_power(sample) == ("VDD_IN", 5079.0)


def test_tegrastats_agx_orin_sums_its_rails_and_drops_placeholders() -> None:
    (line,) = lines_of("tegrastats_agx_orin_64gb.txt")
    sample = parse_tegrastats_line(line)
    assert sample is not None
    # no VDD_IN on AGX Orin; "NC" channels are not connected; "RAM 4321/62801MB" is no rail
    assert sample.rails_mw == {"VDD_GPU_SOC": 2340.0, "VDD_CPU_CV": 390.0, "VIN_SYS_5V0": 4025.0,
                               "VDDQ_VDD2_1V8AO": 301.0}
    assert jetson.input_power(sample) == ("sum of VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0+VDDQ_VDD2_1V8AO", 7056.0)
    # CV0..2 and GPU read -256C (powered off): not temperatures
    assert sample.temps_c == {"CPU": 44.562, "Tboard": 32.0, "SOC2": 40.093, "Tdiode": 33.0, "SOC0": 41.093,
                              "tj": 44.343, "SOC1": 41.25}
    assert (sample.gpu_load, sample.gpu_mhz) == (0.0, 0.0)  # "GR3D_FREQ 0%@[0,0]"


def test_tegrastats_jetpack7_three_value_rails_and_two_value_zones() -> None:
    (line,) = lines_of("tegrastats_jp7_agx_orin.txt")
    sample = parse_tegrastats_line(line)
    assert sample is not None
    assert sample.rails_mw == {"VDD_GPU_SOC": 5139.0, "VDD_CPU_CV": 3268.0, "VIN_SYS_5V0": 5500.0}
    assert sample.temps_c == {"cpu": 52.968, "soc2": 48.406, "soc0": 49.531, "gpu": 47.625}
    assert (sample.gpu_load, sample.gpu_mhz, sample.ram_used_mb) == (12.0, 1300.0, 20642.0)


def test_tegrastats_jetpack4_bare_milliwatts() -> None:
    (nano,) = (parse_tegrastats_line(line) for line in lines_of("tegrastats_jp4_nano.txt"))
    assert nano is not None
    assert nano.rails_mw == {"POM_5V_IN": 2545.0, "POM_5V_GPU": 0.0, "POM_5V_CPU": 549.0}
    assert jetson.input_power(nano) == ("POM_5V_IN", 2545.0)  # the input rail, not the sum
    assert nano.temps_c["PMIC"] == 100.0 and nano.temps_c["thermal"] == 24.5
    tx2 = summarize(parse_tegrastats_line(line) for line in lines_of("tegrastats_jp4_tx2.txt"))
    assert tx2["input_rail"] == "VDD_IN" and tx2["power_w"] == {"mean": round((3140 + 5297) / 2000, 3), "max": 5.297}
    assert set(tx2["rails_w"]) == {"VDD_SYS_GPU", "VDD_SYS_SOC", "VDD_4V0_WIFI", "VDD_IN", "VDD_SYS_CPU",
                                   "VDD_SYS_DDR"}
    (xavier,) = (parse_tegrastats_line(line) for line in lines_of("tegrastats_jp4_agx_xavier.txt"))
    assert xavier is not None
    # "CPU 618/618" is a rail, "CPU [0%@1190,..." the load and "CPU@31.5C" a temperature
    assert xavier.rails_mw == {"GPU": 463.0, "CPU": 618.0, "SOC": 2936.0, "CV": 0.0, "VDDRQ": 309.0, "SYS5V": 3306.0}
    assert jetson.input_power(xavier) == ("sum of GPU+CPU+SOC+CV+VDDRQ+SYS5V", 7632.0)
    assert xavier.temps_c["CPU"] == 31.5 and xavier.ram_used_mb == 14700.0


def test_tegrastats_without_rails_and_other_lines() -> None:
    # the JetPack 6 line with its rails cut off: what some images print to a non-root user
    line = lines_of("tegrastats_jp6_orin_nano.txt")[0].split(" VDD_IN")[0]
    summary = summarize([parse_tegrastats_line(line)])
    assert summary["power_w"] is None and summary["input_rail"] is None and "sudo" in summary["power_unknown"]
    assert summary["temperature_c_max"]["tj"] == 53.97
    assert parse_tegrastats_line("") is None
    assert parse_tegrastats_line("Error: permission denied") is None


def test_jtop_stats_become_a_sample() -> None:
    # jtop's documented ``stats`` keys: "Power TOT" / "Power <rail>" in mW, "Temp <zone>" in C, "GPU" in %
    stats = {"time": "2026-01-01", "CPU1": 12, "GPU": 63.0, "Temp cpu": 53.9, "Temp cv0": -256, "Temp tj": 54.1,
             "Power VDD_CPU_GPU_CV": 4667, "Power VDD_SOC": 2817, "Power TOT": 12479, "NVENC": "OFF",
             "jetson_clocks": "ON", "nvp model": "MAXN_SUPER"}
    sample = sample_from_jtop(stats)
    assert sample.rails_mw == {"VDD_CPU_GPU_CV": 4667.0, "VDD_SOC": 2817.0}
    assert sample.temps_c == {"cpu": 53.9, "tj": 54.1}
    assert sample.gpu_load == 63.0
    assert jetson.input_power(sample) == ("jtop total (Power TOT)", 12479.0)


# -- the tegrastats sampler ------------------------------------------------------------------------------
def test_sampler_runs_tegrastats_and_stops_it_by_pid(tmp_path: Path) -> None:
    lines = lines_of("tegrastats_jp6_orin_nano.txt")
    fake_tegrastats(tmp_path / "bin", lines)
    sampler = TegrastatsSampler(250, path=str(tmp_path / "bin")).start()
    try:
        assert sampler.process is not None
        pid = sampler.process.pid
        wait_for(lambda: sampler.telemetry.samples == len(lines), "three samples")
        assert alive(pid)  # it waits to be stopped
    finally:
        summary = sampler.stop()
    assert not alive(pid)  # terminated and reaped: never left running
    assert (tmp_path / "bin" / "tegrastats.args").read_text() == "--interval 250"
    assert summary["source"] == "tegrastats --interval 250" and "unknown" not in summary and "note" not in summary
    expected = summarize(parse_tegrastats_line(line) for line in lines)
    assert {k: summary[k] for k in expected} == expected
    assert sampler.stop() == summary  # stopping twice is harmless


def test_sampler_is_bounded(tmp_path: Path) -> None:
    fake_tegrastats(tmp_path / "bin", lines_of("tegrastats_jp5_xavier_nx.txt"), repeat_every_s=0.02)
    sampler = TegrastatsSampler(20, path=str(tmp_path / "bin"), limit_s=0.5).start()
    try:
        assert sampler.process is not None
        wait_for(lambda: sampler.process.poll() is not None, "the limit stopping tegrastats")  # nobody called stop
    finally:
        summary = sampler.stop()
    assert not alive(sampler.process.pid)
    assert "0.5 s limit" in summary["note"] and summary["samples"] >= 1
    assert summary["power_w"]["max"] == 5.079


def test_sampler_without_tegrastats_or_with_a_failing_one(tmp_path: Path) -> None:
    missing = TegrastatsSampler(path=str(tmp_path / "nothing")).start().stop()
    assert missing == {"source": "tegrastats --interval 500", "unknown": "tegrastats is not on PATH"}
    tool(tmp_path / "bin", "tegrastats", "import sys\nprint('tegrastats: Permission denied')\nsys.exit(1)\n")
    failing = TegrastatsSampler(path=str(tmp_path / "bin")).start()
    summary = failing.stop()
    assert summary["samples"] == 0
    assert summary["unknown"] == "tegrastats printed no samples (exit status 1): tegrastats: Permission denied"


# -- nvpmodel / jetson_clocks as tools ------------------------------------------------------------------------
def test_queries_read_the_tools(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    tool(bin_dir, "nvpmodel", printing(recorded("nvpmodel_jp6_orin_nx_maxn_super.txt")))
    tool(bin_dir, "jetson_clocks", printing(recorded("jetson_clocks_jp6_orin_nx_maxn_super_off.txt")))
    assert power_mode_facts(str(bin_dir)) == {"name": "MAXN_SUPER", "id": 2, "source": "nvpmodel -q"}
    clocks = clock_facts(str(bin_dir))
    assert clocks["on"] is False and clocks["source"] == "jetson_clocks --show"
    assert clocks["not_pinned"] == ["cpu0", "cpu1", "cpu2", "cpu3", "cpu4", "cpu5", "GPU", "EMC"]
    assert clocks["clocks"][6] == {"name": "GPU", "min_mhz": 306.0, "max_mhz": 624.75, "current_mhz": 306.0,
                                   "pinned": False}
    assert clocks["power_mode"] == "MAXN_SUPER"


def test_queries_say_why_they_do_not_know(tmp_path: Path) -> None:
    assert power_mode_facts(str(tmp_path)) == {"name": None, "id": None, "unknown": "nvpmodel is not on PATH"}
    bin_dir = tmp_path / "bin"
    tool(bin_dir, "jetson_clocks", "import sys\nsys.stderr.write("
         "'Error: Run this script(/usr/bin/jetson_clocks) as a root user\\n')\nsys.exit(1)\n")
    clocks = clock_facts(str(bin_dir))
    assert clocks["on"] is None and clocks["unknown"] == (
        "jetson_clocks --show exited with status 1: Error: Run this script(/usr/bin/jetson_clocks) as a root "
        "user (it needs root here: run the benchmark with sudo)")
    tool(bin_dir, "nvpmodel", "import time\ntime.sleep(60)\n")
    slow = power_mode_facts(str(bin_dir), timeout=0.5)
    assert slow["name"] is None and slow["unknown"] == "nvpmodel -q did not answer within 0.5 s"
    tool(bin_dir, "nvpmodel", printing("NVPM ERROR: failed to read the configuration\n"))
    assert "NV Power Mode" in power_mode_facts(str(bin_dir))["unknown"]


# -- the monitor -----------------------------------------------------------------------------------------
def fake_jetson_tools(bin_dir: Path, clocks: str = "jetson_clocks_agx_orin_30w_off.txt") -> None:
    tool(bin_dir, "nvpmodel", printing(recorded("nvpmodel_jp6_orin_nx_maxn_super.txt")))
    tool(bin_dir, "jetson_clocks", printing(recorded(clocks)))
    fake_tegrastats(bin_dir, lines_of("tegrastats_jp6_orin_nano.txt"))


def test_monitor_is_inert_off_a_jetson() -> None:
    with JetsonMonitor(None) as monitor:
        pass
    assert monitor.report() is None and monitor.sampled is None


def test_monitor_on_a_fake_jetson(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_jetson_tools(bin_dir)
    host = JetsonHost("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "36.4.4", "6",
                      ("/etc/nv_tegra_release",), str(bin_dir))
    with JetsonMonitor(host, interval_ms=100, use_jtop=False) as monitor:
        wait_for(lambda: monitor._sampler is not None and monitor._sampler.telemetry.samples == 3, "three samples")
        pid = monitor._sampler.process.pid
    assert not alive(pid)
    report = monitor.report()
    assert report is not None
    assert report["power_mode"] == {"name": "MAXN_SUPER", "id": 2, "source": "nvpmodel -q"}
    assert report["jetson_clocks"]["on"] is False
    assert report["sampled"]["power_w"]["max"] == 12.479 and report["sampled"]["samples"] == 3
    assert (report["model"], report["l4t"], report["jetpack"]) == (host.model, "36.4.4", "6")


class _FakeJtop:
    """The part of jtop's client the sampler uses: start(), ok(), stats, close()."""

    stats_seen: ClassVar[list[dict]] = [{"GPU": 40.0, "Temp tj": 50.0, "Power TOT": 9000, "Power VDD_SOC": 2000,
                                          "jetson_clocks": "ON", "nvp model": "MAXN"},
                                         {"GPU": 80.0, "Temp tj": 55.5, "Power TOT": 11000, "Power VDD_SOC": 2500,
                                          "jetson_clocks": "ON", "nvp model": "MAXN"}]
    refuse = False

    def __init__(self, interval: float) -> None:
        self.interval, self.reads, self.closed = interval, 0, False

    def start(self) -> None:
        if self.refuse:
            raise RuntimeError("The jtop.service is not active")

    def ok(self) -> bool:
        self.reads += 1
        return self.reads <= len(self.stats_seen)

    @property
    def stats(self) -> dict:
        return self.stats_seen[self.reads - 1]

    def close(self) -> None:
        self.closed = True


def test_monitor_reads_jtop_and_fills_what_the_tools_would_not_say(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jtop", types.SimpleNamespace(jtop=_FakeJtop))
    host = JetsonHost("NVIDIA Jetson AGX Orin Developer Kit", None, None, ("nvpmodel",), str(tmp_path))  # no tools
    with JetsonMonitor(host, use_jtop=True) as monitor:
        wait_for(lambda: monitor._sampler.telemetry.samples == 2, "two jtop samples")
    report = monitor.report()
    assert report["sampled"]["source"] == "jtop (jetson-stats)"
    assert report["sampled"]["input_rail"] == "jtop total (Power TOT)"
    assert report["sampled"]["power_w"] == {"mean": 10.0, "max": 11.0}
    assert report["sampled"]["gpu_load_percent"] == {"mean": 60.0, "max": 80.0}
    assert report["sampled"]["temperature_c_max"] == {"tj": 55.5}
    assert report["power_mode"]["name"] == "MAXN" and report["power_mode"]["source"] == "jtop"
    assert report["jetson_clocks"]["on"] is True and "not on PATH" in report["jetson_clocks"]["note"]


def test_monitor_falls_back_to_tegrastats_when_jtop_does_not_answer(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    refusing = type("RefusingJtop", (_FakeJtop,), {"refuse": True})
    monkeypatch.setitem(sys.modules, "jtop", types.SimpleNamespace(jtop=refusing))
    fake_jetson_tools(tmp_path / "bin")
    host = JetsonHost(None, None, None, ("nvpmodel",), str(tmp_path / "bin"))
    with JetsonMonitor(host, interval_ms=100, use_jtop=True) as monitor:
        wait_for(lambda: monitor._sampler.telemetry.samples == 3, "three tegrastats samples")
    sampled = monitor.report()["sampled"]
    assert sampled["source"] == "tegrastats --interval 100"
    assert sampled["note"] == "jtop did not answer (The jtop.service is not active): sampled tegrastats instead"


# -- the report ----------------------------------------------------------------------------------------------
def jetson_section(clocks_name: str) -> dict:
    """A machine["jetson"] section as the monitor writes it, from recorded outputs."""
    state = parse_jetson_clocks(recorded(clocks_name))
    sampled = summarize(parse_tegrastats_line(line) for line in lines_of("tegrastats_jp6_orin_nano.txt"))
    return {"model": "NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "l4t": "36.4.4", "jetpack": "6",
            "detected_by": ["/etc/nv_tegra_release"],
            "power_mode": {"name": "MAXN_SUPER", "id": 2, "source": "nvpmodel -q"},
            "jetson_clocks": {"on": state.on, "source": "jetson_clocks --show", "not_pinned": state.not_pinned(),
                              "below_max": state.below_max(), "power_mode": state.power_mode, "clocks": []},
            "sampled": {"source": "tegrastats --interval 500", "seconds": 41.5, **sampled}}


def result_on(machine: dict) -> dict:
    """The smallest benchmark result the reports print: the machine, no rows."""
    return {"machine": machine, "created": "2026-01-01T00:00:00Z", "liverlesion": "0",
            "package": {"name": "demo", "arch": "joint", "parameters": 1, "gflops_per_slice": 1.0,
                        "grid": {"size": [160, 160], "spacing_mm": [2.0, 2.0]}},
            "data": {"description": "phantoms"}, "options": {"iterations": 2, "warmup": 1, "threads": None},
            "reference": None, "rows": [], "summary": {}, "memory_soak": None}


def test_header_on_a_jetson_with_clocks_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIVERLESION_NO_GPU", "1")
    machine = machine_info(jetson=jetson_section("jetson_clocks_jp6_orin_nx_maxn_super_off.txt"))
    header = format_header(machine).splitlines()
    assert header[2] == ("Jetson: NVIDIA Jetson Orin NX Engineering Reference Developer Kit (L4T 36.4.4, JetPack 6); "
                         "power mode MAXN_SUPER (nvpmodel 2); jetson_clocks off "
                         "(not pinned: cpu0, cpu1, cpu2, cpu3 and 4 more)")
    assert header[3] == ("during the run (tegrastats --interval 500, 3 samples over 41.5 s): VDD_IN mean 7.67 W, "
                         "max 12.48 W; GPU load mean 21%, max 63%; max temperature cpu 54.0 C, gpu 53.3 C, "
                         "tj 54.0 C, soc0 50.8 C")
    assert header[4] == f"warning: {CLOCKS_OFF_WARNING}"
    table = format_table(result_on(machine))
    markdown = to_markdown(result_on(machine))
    for line in header[2:5]:
        assert line in table.splitlines() and f"- {line}" in markdown.splitlines()
    saved = json.loads(write_json(result_on(machine), tmp_path / "bench.json").read_text())
    assert saved["machine"]["jetson"]["power_mode"]["name"] == "MAXN_SUPER"
    assert saved["machine"]["jetson"]["jetson_clocks"]["on"] is False
    assert saved["machine"]["jetson"]["sampled"]["power_w"] == {"mean": 7.669, "max": 12.479}


def test_header_with_clocks_on_or_unknown() -> None:
    on = format_lines(jetson_section("jetson_clocks_agx_orin_30w_on.txt"))
    assert on[0].endswith("jetson_clocks on") and not any(CLOCKS_OFF_WARNING in line for line in on)
    unknown = {**jetson_section("jetson_clocks_agx_orin_30w_on.txt"),
               "power_mode": {"name": None, "id": None, "unknown": "nvpmodel is not on PATH"},
               "jetson_clocks": {"on": None, "unknown": "jetson_clocks --show exited with status 1"},
               "sampled": {"source": "tegrastats --interval 500", "unknown": "tegrastats is not on PATH"}}
    lines = format_lines(unknown)
    assert lines[0].endswith("power mode unknown (nvpmodel is not on PATH); "
                             "jetson_clocks unknown (jetson_clocks --show exited with status 1)")
    assert lines[1] == "during the run: power and temperatures unknown (tegrastats is not on PATH)"
    assert len(lines) == 2  # no warning when the state is not known


def test_off_a_jetson_the_header_does_not_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVERLESION_NO_GPU", "1")
    info = machine_info()
    assert "jetson" not in info
    header = format_header(info)
    assert "Jetson" not in header and "jetson_clocks" not in header and len(header.splitlines()) == 3


# -- the benchmark on a fake Jetson ------------------------------------------------------------------------------
@pytest.mark.slow
def test_benchmark_on_a_fake_jetson(sdk_world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from liverlesion.bench import BenchOptions, load_bench_data, run_benchmark, runner

    bin_dir = tmp_path / "bin"
    fake_jetson_tools(bin_dir)
    root = fake_root(tmp_path / "root", release=recorded("nv_tegra_release_r36_4_4.txt"),
                     model="NVIDIA Jetson Orin NX Engineering Reference Developer Kit\x00")
    monkeypatch.setattr(runner, "detect_jetson", lambda: detect_jetson(root, path=str(bin_dir)))
    monkeypatch.setattr(jetson_monitor, "jtop_installed", lambda: False)
    monkeypatch.setattr(jetson_samplers, "FIRST_SAMPLE_S", PATIENCE_S)  # a short run: let tegrastats get going
    options = BenchOptions(backends=("onnxruntime",), precisions=("fp32",), batch_sizes=(1,), iterations=2,
                           warmup=0, progress=False)
    result = run_benchmark(sdk_world.package, load_bench_data(None, 2, size=64), options)
    section = result["machine"]["jetson"]
    assert section["l4t"] == "36.4.4" and section["power_mode"]["name"] == "MAXN_SUPER"
    assert section["jetson_clocks"]["on"] is False
    assert section["sampled"]["samples"] >= 1 and section["sampled"]["input_rail"] == "VDD_IN"
    assert result["rows"][0]["status"] == "ok"
    table = format_table(result)
    assert f"warning: {CLOCKS_OFF_WARNING}" in table and "power mode MAXN_SUPER (nvpmodel 2)" in table
