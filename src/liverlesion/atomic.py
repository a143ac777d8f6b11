"""Writing files and folders atomically: readers see the old content or the new, never half.

The temporary file or folder (``mkstemp``'s 0600, ``mkdtemp``'s 0700) gets the mode a plain
``open`` or ``mkdir`` would have given (0666 / 0777 less the umask) before it replaces the
target, so outputs are as readable as any other file the process writes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux says it (``/proc/self/status``).

    Elsewhere it is set and restored under a lock, which keeps this module's own calls from
    racing each other (another thread creating a file in that instant would get umask 0o077).
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


@contextmanager
def folder_swap(dest: str | Path, is_ours: Callable[[Path], bool], what: str) -> Iterator[Path]:
    """Yield an empty temp folder beside ``dest``; on success it replaces ``dest``.

    A reader sees the old folder or the new one, never half of one. An existing
    ``dest`` is replaced only if it is empty or ``is_ours(dest)``, so a mistyped
    path cannot delete someone's data. On error the temp folder is removed.
    """
    dest = Path(dest)
    if dest.exists() and not (dest.is_dir() and (not any(dest.iterdir()) or is_ours(dest))):
        raise InputError(f"{dest} exists and is not {what}; refusing to overwrite it "
                         f"(give a new or empty folder, or an existing {what})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would make the swapped-in folder private
        yield tmp
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / dest.name)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, *, private: bool = False) -> None:
    """Write a file so that readers see the old content or the new, never half of it.

    The file gets 0666 less the umask, as ``open`` would give it; ``private``: 0600 (caches).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            if not private and hasattr(os, "fchmod"):  # mkstemp's 0600 would make every output private
                os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
