"""Writing files and folders atomically: readers see the old content or the new, never half."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


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
        umask = os.umask(0o022)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the swapped-in folder private
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


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file so that readers see the old content or the new, never half of it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
