"""Facts about the host: the CPUs this process may use, their model and SIMD flags, the per-user cache,
installed distributions' versions."""

from __future__ import annotations

import logging
import operator
import os
import platform
import sys
from pathlib import Path

from ..errors import BackendError

log = logging.getLogger("liverlesion.backends")

#: Set (to anything but "" or "0") to turn every compiled-model cache off: each load compiles.
NO_CACHE_ENV = "LIVERLESION_NO_CACHE"
#: (asked, usable) thread counts already warned about: once per process, not once per backend loaded.
_WARNED: set[tuple[int, int]] = set()


def cpu_count() -> int:
    """CPUs this process may use (affinity where the OS has it: containers and taskset limit it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cache_root() -> Path:
    """The per-user cache folder: $LIVERLESION_CACHE, else $XDG_CACHE_HOME/liverlesion, else ~/.cache/liverlesion."""
    explicit = os.environ.get("LIVERLESION_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "liverlesion"


def cache_disabled() -> bool:
    """Whether $LIVERLESION_NO_CACHE turns compiled-model caches off (an integrator's switch)."""
    return os.environ.get(NO_CACHE_ENV, "") not in ("", "0")


def threads_or_all(threads: int | None) -> int:
    """CPU threads a backend uses: ``threads`` (a positive integer, at most the usable CPUs) or, for None, all.

    More threads than CPUs never runs faster and oversubscribes the machine (threads=1000 on
    onnxruntime made 1,003 OS threads and 14 s per slice), so a larger value is clamped to
    :func:`cpu_count` with a warning rather than refused: a deployment's setting written for a
    bigger machine keeps working on a smaller one.
    """
    if threads is None:
        return cpu_count()
    try:
        value = operator.index(threads)  # int and numpy integers; not floats or strings
    except TypeError:
        value = None
    if isinstance(threads, bool) or value is None or value < 1:
        raise BackendError(f"threads={threads!r} is not accepted: give a positive integer, or None for all CPUs")
    usable = cpu_count()
    if value > usable:
        if (value, usable) not in _WARNED:
            _WARNED.add((value, usable))
            log.warning("liverlesion: threads=%d is more than the %d CPUs this process may use; using %d",
                        value, usable, usable)
        return usable
    return value


def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo on Linux, sysctl on macOS), else the platform's word."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess

        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


#: CPU features that decide which kernels (FP32 / INT8 / BF16 / FP16) runtimes pick.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_int8",
             "amx_bf16", "amx_fp16", "asimd", "asimddp")


def cpu_flags() -> list[str]:
    """Which of :data:`CPU_FLAGS` this CPU reports (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    found: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            found |= set(value.split())
    return [flag for flag in CPU_FLAGS if flag in found]
