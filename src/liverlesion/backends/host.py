"""Facts about the host every CPU backend needs: the CPUs this process may use, and the per-user cache."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BackendError


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


def threads_or_all(threads: int | None) -> int:
    """CPU threads a backend uses: ``threads`` (a positive integer) or, for None, every usable CPU."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise BackendError(f"threads={threads!r} is not accepted: give a positive integer, or None for all CPUs")
    return threads or cpu_count()
