"""Where outputs may go: targets checked before anything is computed, names that cannot leave their folder.

Writability is probed by creating (and removing) a file, not with ``os.access``, which says
yes to root on a read-only mount.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import InputError


def _as_path(path: str | os.PathLike[str], what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"{what}: {path!r} is not a path; accepted: a str or os.PathLike naming a file system path")
    text = os.fspath(path)
    if not isinstance(text, str) or not text or "\0" in text:
        raise InputError(f"{what}: {text!r} is not a usable path (empty, bytes or with a NUL character)")
    return Path(text)


def _probe(folder: Path, what: str) -> None:
    """Refuse ``folder`` (an existing directory) unless a file can be created in it."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".liverlesion-probe-")
    except OSError as exc:
        raise InputError(f"{what}: cannot write into the folder {folder} ({exc.strerror or exc}); "
                         "accepted: a folder this process can create files in") from None
    os.close(fd)
    os.unlink(name)


def _nearest_existing(folder: Path, what: str) -> Path:
    """The deepest existing ancestor of ``folder`` (itself if it exists); it must be a directory."""
    current = folder.absolute()
    while not current.exists():
        if current.is_symlink():  # a dangling link: mkdir would fail with a bare FileExistsError
            raise InputError(f"{what}: {current} is a broken symbolic link, where a folder is needed")
        current = current.parent
    if not current.is_dir():
        raise InputError(f"{what}: {current} is a file, where a folder is needed")
    return current


def check_folder(folder: str | os.PathLike[str], what: str) -> Path:
    """An output folder that exists (or can be created, by its nearest existing ancestor) and is writable."""
    folder = _as_path(folder, what)
    _probe(_nearest_existing(folder, what), what)
    return folder


def make_folder(folder: str | os.PathLike[str], what: str) -> Path:
    """Create (if needed) the output folder ``folder``, with a typed error instead of an OSError."""
    folder = check_folder(folder, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{what}: cannot create the folder {folder} ({exc.strerror or exc})") from None
    return folder


def check_file(path: str | os.PathLike[str], what: str, *, create_parents: bool = False) -> Path:
    """An output file: not an existing folder, in a writable folder that exists (or may be created)."""
    path = _as_path(path, what)
    if path.is_dir():
        raise InputError(f"{what}: {path} is a folder, where a file is needed; give a file name")
    parent = path.absolute().parent
    if not create_parents and not parent.is_dir():
        state = "is not a folder" if parent.exists() else "does not exist"
        raise InputError(f"{what}: the folder {parent} {state}; create it first (accepted: a file in an "
                         "existing, writable folder)")
    check_folder(parent, what)
    return path


def inside(folder: Path, name: str, what: str) -> Path:
    """``folder / name`` for a plain file name that cannot leave ``folder`` (checked once resolved)."""
    if (not name or name in (".", "..") or "\0" in name or "/" in name
            or (os.altsep is not None and os.altsep in name) or os.sep in name):
        raise InputError(f"{what}: {name!r} is not a plain file name; refusing to write outside {folder}")
    target = folder / name
    if os.path.realpath(target.parent) != os.path.realpath(folder):  # pragma: no cover - guarded above
        raise InputError(f"{what}: {target} would be written outside {folder}; refused")
    return target
