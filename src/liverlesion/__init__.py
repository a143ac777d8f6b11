"""liverlesion: joint liver-lesion segmentation and classification on CT, for the edge."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

#: Names importable from the top level, and the module each lives in. Imported on first use
#: (PEP 562), so that ``import liverlesion`` stays light: no numpy-heavy runtime, torch or onnxruntime.
_LAZY = {
    "LesionAnalyzer": "liverlesion.sdk.analyzer",
    "Prediction": "liverlesion.sdk.prediction",
    "LiverLesionError": "liverlesion.errors",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'liverlesion' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
