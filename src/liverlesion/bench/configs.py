"""What can be benchmarked: backends by name, precisions, and their combinations (no heavy imports).

The CLI's argument parser reads these names, so this module imports nothing beyond the
error types and the backend registry's rows; the runner loads the configurations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..backends.choice import PRECISIONS
from ..backends.registry import BACKENDS, ROWS
from ..errors import InputError

DEFAULT_BATCH_SIZES = (1, 8)
#: The reference rows users compare against.
REFERENCES = {"torch": "PyTorch eager FP32"}
#: The order of the default run and its table, as before the registry (backends not named here follow, as
#: registered): a presentation order, not a rule.
ORDER = ("tensorrt", "tensorrt-rtx", "onnxruntime", "torch", "openvino")


def _specs() -> dict[str, tuple[str, str | None]]:
    """One name per registry row and variant: a row's first variant takes the row's name, the others
    ``<row>-<variant>`` (``onnxruntime-cuda``), in :data:`ORDER`."""
    specs: dict[str, tuple[str, str | None]] = {}
    for entry in sorted(ROWS, key=lambda r: ORDER.index(r.name) if r.name in ORDER else len(ORDER)):
        variants = list(entry.variants) or [None]
        for i, variant in enumerate(variants):
            specs[entry.name if i == 0 else f"{entry.name}-{variant}"] = (entry.name, variant)
    return specs


#: Backends by the name the benchmark gives them: (liverlesion backend, onnxruntime provider).
BACKEND_SPECS: dict[str, tuple[str, str | None]] = _specs()


@dataclass(frozen=True)
class BenchConfig:
    """One way to run the package: a backend (as :data:`BACKEND_SPECS` names it) and a precision."""

    name: str
    precision: str

    @property
    def backend(self) -> str:
        return BACKEND_SPECS[self.name][0]

    @property
    def provider(self) -> str | None:
        return BACKEND_SPECS[self.name][1]

    @property
    def label(self) -> str:
        return f"{self.name} {self.precision}"

    @property
    def reference(self) -> str | None:
        return REFERENCES.get(self.name)


def configurations(backends: Sequence[str] = tuple(BACKEND_SPECS),
                   precisions: Sequence[str] = PRECISIONS) -> list[BenchConfig]:
    """Every requested backend x precision its registry row runs (torch, the reference, only FP32;
    bf16, an execution precision of the FP32 graph, only on OpenVINO)."""
    unknown = [b for b in backends if b not in BACKEND_SPECS]
    if unknown:
        raise InputError(f"unknown backend(s) {', '.join(unknown)}; accepted: {', '.join(BACKEND_SPECS)}")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise InputError(f"unknown precision(s) {', '.join(bad)}; accepted: {', '.join(PRECISIONS)}")
    return [BenchConfig(b, p) for b in backends for p in precisions if BACKENDS[BACKEND_SPECS[b][0]].runs(p)]
