"""JSON from a package, parsed with bounds: depth, digits, no NaN/Infinity, no duplicate keys.

Python's ``json`` raises RecursionError on deep nesting and ValueError on a
5,000-digit integer, and silently keeps the last of two equal keys (which another
reader may not): each becomes a PackageError naming the source.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import PackageError
from .limits import DEFAULT_LIMITS, PackageLimits


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


def _depth(value: Any) -> int:
    """Nesting depth of objects and lists, walked without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def loads_bounded(data: bytes, source: str, limits: PackageLimits = DEFAULT_LIMITS) -> Any:
    """Parse UTF-8 JSON ``data`` read from ``source`` within ``limits``, or raise PackageError."""
    def integer(text: str) -> int:
        if len(text.lstrip("-")) > limits.int_digits:
            raise _Refused(f"an integer of {len(text.lstrip('-'))} digits (at most {limits.int_digits} accepted)")
        return int(text)

    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_constant,
                           parse_float=_float, parse_int=integer)
    except RecursionError:
        raise PackageError(f"{source}: JSON nested too deeply to parse (at most {limits.json_depth} levels "
                           "accepted)") from None
    except UnicodeDecodeError as exc:
        raise PackageError(f"{source}: not UTF-8 text ({exc})") from None
    except ValueError as exc:  # JSONDecodeError, _Refused, and int() past Python's digit limit
        raise PackageError(f"{source}: not acceptable JSON ({exc})") from None
    depth = _depth(value)
    if depth > limits.json_depth:
        raise PackageError(f"{source}: JSON nested {depth} levels deep; at most {limits.json_depth} accepted")
    return value
