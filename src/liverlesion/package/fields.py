"""Field checks shared by the manifest's sections: each refusal names the field and what is accepted."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import PackageError
from .limits import PackageLimits

Kind = type | tuple[type, ...]


def kind_name(kind: Kind) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
             bool: "true or false"}
    if kind == (int, float):
        return "a number"
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def is_kind(value: Any, kind: Kind) -> bool:
    if isinstance(value, bool):  # JSON's true is not a number here
        return kind is bool or (isinstance(kind, tuple) and bool in kind)
    return isinstance(value, kind)


def need(data: Mapping[str, Any], key: str, kind: Kind, where: str) -> Any:
    if key not in data:
        raise PackageError(f"manifest: '{where}.{key}' is missing")
    return typed(data[key], kind, f"{where}.{key}")


def typed(value: Any, kind: Kind, where: str) -> Any:
    if not is_kind(value, kind):
        raise PackageError(f"manifest: '{where}' must be {kind_name(kind)}, got {type(value).__name__}")
    return value


def optional(data: Mapping[str, Any], key: str, kind: Kind, where: str) -> Any:
    value = data.get(key)
    return None if value is None else typed(value, kind, f"{where}.{key}")


def number(value: Any, where: str, *, low: float = -math.inf, high: float = math.inf) -> float:
    typed(value, (int, float), where)
    if not low <= value <= high:
        raise PackageError(f"manifest: '{where}' is {value!r:.40}; accepted: a number from {low} to {high}")
    return float(value)


def names(value: Any, where: str, limits: PackageLimits, *, distinct: bool = True) -> tuple[str, ...]:
    """A list of short non-empty strings (distinct unless told otherwise)."""
    items = typed(value, list, where)
    for k, item in enumerate(items):
        if not is_kind(item, str) or not 0 < len(item) <= limits.name_chars:
            raise PackageError(f"manifest: '{where}[{k}]' must be a non-empty string of at most "
                               f"{limits.name_chars} characters, got {item!r:.60}")
    if distinct and len(set(items)) != len(items):
        raise PackageError(f"manifest: '{where}' lists a name twice: {items!r:.200}")
    return tuple(items)


def emit(known: Mapping[str, Any], given: frozenset[str], extra: Mapping[str, Any]) -> dict[str, Any]:
    """A section as JSON: its known fields (None only where the source wrote null), then the rest."""
    out = {k: v for k, v in known.items() if v is not None or k in given}
    out.update(extra)
    return out


def split(data: Mapping[str, Any], known: tuple[str, ...]) -> tuple[frozenset[str], dict[str, Any]]:
    """(the known keys present, the other fields kept as written)."""
    return frozenset(k for k in known if k in data), {k: v for k, v in data.items() if k not in known}
