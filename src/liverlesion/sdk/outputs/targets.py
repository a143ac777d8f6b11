"""Where outputs may go: targets checked before anything is computed, names that cannot leave their folder.

A target file must be new or an existing regular file: a symbolic link, a device or a FIFO
is refused rather than replaced (``--json /dev/stdout`` would replace /dev/stdout; use
``--json -``). A path that cannot be looked at (a folder under another user's private
folder) is an InputError naming the option. Only the CLI's pre-check probes writability,
by creating (and removing) a file, not with ``os.access``, which says yes to root on a
read-only mount; the SDK's writers let the atomic write itself fail, with a typed error.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from ...errors import InputError
from ...input_limits import file_kind


def _as_path(path: str | os.PathLike[str], what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"{what}: {path!r} is not a path; accepted: a str or os.PathLike naming a file system path")
    text = os.fspath(path)
    if not isinstance(text, str) or not text or "\0" in text:
        raise InputError(f"{what}: {text!r} is not a usable path (empty, bytes or with a NUL character)")
    return Path(text)


def _mode(path: Path, what: str, *, follow: bool = True) -> int | None:
    """``st_mode`` of ``path`` (of a link itself unless ``follow``); None where nothing is there.

    Path.exists() and is_dir() raise PermissionError on a path below a folder this process
    may not search: that is an InputError naming the option.
    """
    try:
        return (path.stat() if follow else path.lstat()).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise InputError(f"{what}: {path} cannot be looked at ({exc.strerror or exc}); accepted: a path in "
                         "folders this process may search") from None


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
    while (mode := _mode(current, what)) is None:
        if _mode(current, what, follow=False) is not None:  # a dangling link: mkdir would fail with a bare error
            raise InputError(f"{what}: {current} is a broken symbolic link, where a folder is needed")
        current = current.parent
    if not stat.S_ISDIR(mode):
        raise InputError(f"{what}: {current} is a file, where a folder is needed")
    return current


def check_folder(folder: str | os.PathLike[str], what: str, *, probe: bool = False) -> Path:
    """An output folder that exists or can be created (its nearest existing ancestor is a folder).

    ``probe``: also create (and remove) a file there, as the CLI does before it loads a model.
    """
    folder = _as_path(folder, what)
    existing = _nearest_existing(folder, what)
    if probe:
        _probe(existing, what)
    return folder


def make_folder(folder: str | os.PathLike[str], what: str) -> Path:
    """Create (if needed) the output folder ``folder``, with a typed error instead of an OSError."""
    folder = check_folder(folder, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{what}: cannot create the folder {folder} ({exc.strerror or exc})") from None
    return folder


def check_file(path: str | os.PathLike[str], what: str, *, create_parents: bool = False,
               probe: bool = False) -> Path:
    """An output file: new or an existing regular file, in a folder that exists (or may be created).

    ``probe``: also check that a file can be created in that folder (see :func:`check_folder`).
    """
    path = _as_path(path, what)
    mode = _mode(path, what, follow=False)
    if mode is not None and stat.S_ISDIR(mode):
        raise InputError(f"{what}: {path} is a folder, where a file is needed; give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        stdout = " (for standard output give --json -)" if what == "--json" else ""
        raise InputError(f"{what}: {path} is {file_kind(mode)}, not a regular file; refusing to replace it{stdout}; "
                         "accepted: a new file or an existing regular file")
    parent = path.absolute().parent
    if not create_parents:
        parent_mode = _mode(parent, what)
        if parent_mode is None or not stat.S_ISDIR(parent_mode):
            state = "is not a folder" if parent_mode is not None else "does not exist"
            raise InputError(f"{what}: the folder {parent} {state}; create it first (accepted: a file in an "
                             "existing, writable folder)")
    check_folder(parent, what, probe=probe)
    return path


def inside(folder: Path, name: str, what: str) -> Path:
    """``folder / name`` for a plain file name, which cannot leave ``folder``."""
    if (not name or name in (".", "..") or "\0" in name or "/" in name
            or (os.altsep is not None and os.altsep in name) or os.sep in name):
        raise InputError(f"{what}: {name!r} is not a plain file name; refusing to write outside {folder}")
    return folder / name
