"""Files an SDK-managed cache may execute: folders made private, files read only when this user owns them.

Shared by the OpenVINO compiled-model cache and the TensorRT-RTX runtime (JIT kernel) cache: a
cache folder level is 0700 and checked; a file is read only as a regular file (not a link) owned
by this user, writable by no one else, within a size limit. What the bytes must match (a sha256
in a record) is each cache's own check.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("liverlesion.backends.cache")


def untrusted(info: os.stat_result, what: str) -> str | None:
    """Why a cache file or folder may not be trusted (another owner, writable by group or others), or None."""
    getuid = getattr(os, "getuid", None)
    if getuid is None:  # no user ids here (Windows): nothing to compare
        return None
    if info.st_uid != getuid():
        return f"{what} belongs to user id {info.st_uid}, not to this user ({getuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{what} is writable by {'others' if info.st_mode & stat.S_IWOTH else 'its group'} " \
               f"(mode {stat.S_IMODE(info.st_mode):o})"
    return None


def prepare_folder(root: Path, folder: Path, without: str = "OpenVINO compiles on every load") -> Path | None:
    """Create ``folder`` (each missing level 0700) and check the levels below ``root``; None when unusable.

    Safe when many processes load at once: each level is made with ``exist_ok`` and then
    checked, never tested for and then made (the loser of that race would see "File exists").
    """
    try:
        relative = folder.relative_to(root)
        levels = [root.joinpath(*relative.parts[:i + 1]) for i in range(len(relative.parts))]
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for level in levels:
            level.mkdir(mode=0o700, exist_ok=True)  # an existing level keeps its mode, checked below
        for level in levels:
            info = level.stat()
            if not stat.S_ISDIR(info.st_mode):
                raise NotADirectoryError(f"{level} is not a folder")
            problem = untrusted(info, f"cache folder {level}")
            if problem is not None:
                log.warning("liverlesion: %s; not using the cache (%s). Fix it with: chmod 700 %s, or remove it",
                            problem, without, level)
                return None
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"{folder} is not writable")
    except (OSError, ValueError) as exc:
        log.warning("liverlesion: cache %s is not usable (%s); %s", folder, exc, without)
        return None
    return folder


def read_trusted(path: Path, limit: int, what: str) -> bytes | None:
    """The bytes of a regular file this user owns, not a link, at most ``limit`` bytes; None if absent."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symbolic link, refused like ssh refuses one it did not make
        raise UntrustedFile(f"{what} {path} cannot be opened as a plain file ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())  # of the file opened, not of whatever the path names later
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedFile(f"{what} {path} is not a regular file")
        problem = untrusted(info, f"{what} {path}")
        if problem is not None:
            raise UntrustedFile(problem)
        if info.st_size > limit:
            raise UntrustedFile(f"{what} {path} is {info.st_size} bytes; at most {limit} are accepted")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UntrustedFile(f"{what} {path} grew past {limit} bytes while being read")
    return data


class UntrustedFile(Exception):
    """A cache file that is not used (the message says why); callers log it and rebuild."""
