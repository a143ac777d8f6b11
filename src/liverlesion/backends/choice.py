"""What selection passes between backends and the SDK, as plain data (no runtime imported).

Each backend module has a ``candidates(manifest, machine, request)`` function that says
which precisions and files it can run on that machine, in its own order, and why not;
``sdk.selection.select`` only orders backends and explains.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, NamedTuple

from ..machine.probe import Machine

#: The precisions of the SDK.
PRECISIONS = ("fp32", "fp16", "int8", "bf16")


@dataclass(frozen=True)
class Request:
    """What the load asked for, as every backend's ``candidates`` reads it."""

    #: The precision asked for (one), or None for auto.
    precisions: tuple[str, ...] | None = None
    #: onnxruntime's execution provider asked for, None for its own choice.
    provider: str | None = None
    build_engine: bool = False
    #: The package was loaded against an expected digest (``expect_digest``).
    pinned: bool = False
    trust_device_builds: bool = False

    @property
    def untrusted(self) -> bool:
        """Whether what devices built after export must be left out (a pin, not trusted)."""
        return self.pinned and not self.trust_device_builds


@dataclass(frozen=True)
class Choice:
    """One way to run the package: a backend, a precision, its options, and why it was picked."""

    backend: str
    precision: str
    #: Keyword options for the backend (``provider`` for onnxruntime; ``engine`` or ``build`` for TensorRT).
    options: dict[str, Any] = field(default_factory=dict)
    device: str = "CPU"
    reason: str = ""

    def label(self) -> str:
        extra = f" ({self.options['provider']} provider)" if "provider" in self.options else ""
        return f"{self.backend}{extra} {self.precision} on {self.device}"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "options": dict(self.options),
                "device": self.device, "reason": self.reason}


class Candidates(NamedTuple):
    """A backend's answer: the choices it can run here (best first), why (or why not), its precision notes."""

    choices: list[Choice]
    why: str
    #: This backend's verdict on each precision under auto ("the package records no INT8 accuracy"...).
    notes: Mapping[str, str] = MappingProxyType({})
    #: Whether this backend would run on a GPU here (decides the order ``auto`` tries backends in).
    gpu: bool = False


@dataclass(frozen=True)
class Selection:
    """The decision: choices to try in order, why each backend / precision was or was not considered.

    ``chosen`` is set by the loader once a choice loaded; ``failures`` lists the choices
    that were tried before it and why they failed to load.
    """

    requested: dict[str, Any]
    candidates: tuple[Choice, ...]
    backends: dict[str, str]
    precisions: dict[str, str]
    machine: Machine
    chosen: Choice | None = None
    failures: tuple[tuple[Choice, str], ...] = ()

    @property
    def backend(self) -> str | None:
        return None if self.chosen is None else self.chosen.backend

    @property
    def precision(self) -> str | None:
        return None if self.chosen is None else self.chosen.precision

    def loaded(self, chosen: Choice, failures: tuple[tuple[Choice, str], ...] = ()) -> Selection:
        return replace(self, chosen=chosen, failures=failures)

    def summary(self) -> str:
        """One line for logs: what runs, and why."""
        if self.chosen is None:
            return "nothing chosen yet: " + "; ".join(f"{k}: {v}" for k, v in self.backends.items())
        failed = "".join(f"; {c.label()} failed to load: {why}" for c, why in self.failures)
        return f"{self.chosen.label()}: {self.chosen.reason}{failed}"

    def to_dict(self) -> dict[str, Any]:
        return {"requested": dict(self.requested),
                "chosen": None if self.chosen is None else self.chosen.to_dict(),
                "backends": dict(self.backends), "precisions": dict(self.precisions),
                "candidates": [c.to_dict() for c in self.candidates],
                "failures": [{"choice": c.to_dict(), "error": why} for c, why in self.failures],
                "machine": self.machine.to_dict()}
