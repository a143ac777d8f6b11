"""Facts about the host every CPU backend needs: the CPUs this process may use, and the per-user cache."""

from __future__ import annotations

import os
from pathlib import Path


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
