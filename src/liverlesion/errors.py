"""One exception hierarchy for everything the package refuses.

Every error a user can trigger is a subclass of :class:`LiverLesionError`, and its
message says what was wrong and what is accepted.
"""

from __future__ import annotations


class LiverLesionError(Exception):
    """Base class of every error raised on purpose by liverlesion."""


class InputError(LiverLesionError, ValueError):
    """An input array, slice, spacing or argument is not acceptable."""


class DataFormatError(LiverLesionError, ValueError):
    """A data file (NIfTI, DICOM, lesion-slice dataset) is unreadable or inconsistent."""


class DicomError(DataFormatError):
    """A DICOM object cannot be used: wrong modality, orientation, no pixels..."""


class MissingDependencyError(LiverLesionError, ImportError):
    """An optional dependency is absent; the message names the extra to install."""


class PackageError(LiverLesionError):
    """A model package is incomplete, tampered with, or of an unknown schema."""


class ChecksumError(PackageError):
    """A file in a model package does not match the sha256 in its manifest."""


class CheckpointError(LiverLesionError):
    """A training checkpoint is missing, unreadable or does not fit the model."""


class BackendError(LiverLesionError):
    """An inference backend is unavailable or failed."""


class EngineError(BackendError):
    """A TensorRT engine cannot be built or does not fit this machine."""


class ExportError(LiverLesionError):
    """Export or quantization failed a check (parity, accuracy, graph constraints)."""


def install_hint(extra: str) -> str:
    """The command that installs an extra, as every message naming one writes it."""
    return f"pip install 'liverlesion[{extra}]'"


def require(module: str, extra: str, purpose: str):
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module.split('.')[0]}', which is not "
            f"installed: {install_hint(extra)}"
        ) from exc
