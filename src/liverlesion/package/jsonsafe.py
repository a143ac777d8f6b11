"""JSON from a package, parsed with bounds: depth, digits, no NaN/Infinity, no duplicate keys, real Unicode.

Python's ``json`` raises RecursionError on deep nesting and ValueError on a
5,000-digit integer, silently keeps the last of two equal keys (which another
reader may not), and turns ``"\\ud800"`` into a lone surrogate that no UTF-8 writer
accepts (the digest would crash on it): each becomes a PackageError naming the source.
The depth is measured on the bytes before parsing (:func:`json_depth`), so a deep or
bracket-heavy document costs a scan, not a parse.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

from ..errors import PackageError
from .limits import DEFAULT_LIMITS, PackageLimits

#: A JSON string (escapes included), unrolled so that long strings are matched without backtracking.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
#: Brackets become +1 / -1 (as int8), every other byte is deleted.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[{]}")


class _Refused(ValueError):
    """Raised from inside the parser's hooks."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"the key {key!r:.80} appears twice in one object")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text:.40} is out of range")
    return value


def json_depth(data: bytes) -> int:
    """Deepest nesting of objects and lists in JSON ``data``, counted on its bytes (brackets outside strings)."""
    steps = _STRING.sub(b"", data).translate(_STEPS, _NOT_BRACKETS)
    if not steps:
        return 0
    return int(np.frombuffer(steps, np.int8).cumsum(dtype=np.int64).max())


def loads_bounded(data: bytes, source: str, limits: PackageLimits = DEFAULT_LIMITS) -> Any:
    """Parse UTF-8 JSON ``data`` read from ``source`` within ``limits``, or raise PackageError."""
    def integer(text: str) -> int:
        if len(text.lstrip("-")) > limits.int_digits:
            raise _Refused(f"an integer of {len(text.lstrip('-'))} digits (at most {limits.int_digits} accepted)")
        return int(text)

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackageError(f"{source}: not UTF-8 text ({exc})") from None
    depth = json_depth(data)
    if depth > limits.json_depth:
        raise PackageError(f"{source}: JSON nested {depth} levels deep, too deeply to parse; at most "
                           f"{limits.json_depth} levels accepted")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_constant,
                           parse_float=_float, parse_int=integer)
    except RecursionError:  # not reached after the depth scan; kept so that no parse can escape as one
        raise PackageError(f"{source}: JSON nested too deeply to parse (at most {limits.json_depth} levels "
                           "accepted)") from None
    except ValueError as exc:  # JSONDecodeError, _Refused, and int() past Python's digit limit
        raise PackageError(f"{source}: not acceptable JSON ({exc})") from None
    try:  # "\ud800" parses to a lone surrogate: a str that is no Unicode text, which no writer can encode
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start:exc.end].encode("utf-8", "backslashreplace").decode("ascii")
        raise PackageError(f"{source}: a string holds {bad}, a lone UTF-16 surrogate that is not a Unicode "
                           "character; accepted: Unicode text (a surrogate only as half of an escaped pair)") from None
    return value
