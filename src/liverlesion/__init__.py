"""liverlesion: joint liver-lesion segmentation and classification on CT, for the edge."""

from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

#: Names importable from the top level, and the module each lives in. Imported on first use
#: (PEP 562), so that ``import liverlesion`` stays light: no numpy-heavy runtime, torch or onnxruntime.
_LAZY = {
    "LesionAnalyzer": "liverlesion.sdk.analyzer",
    "RemoteAnalyzer": "liverlesion.serving.remote",
    "Prediction": "liverlesion.sdk.prediction",
    "LiverLesionError": "liverlesion.errors",
}
__all__ = ["__version__", *_LAZY]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
