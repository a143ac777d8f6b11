"""Inference backends: one interface, one module per runtime, imported lazily.

A backend runs the package's fused graph (HU on the model grid in, label map and
probabilities out). Each is one row of ``registry`` (module and class as strings, as
pydicom registers its pixel decoders, the extra, what it takes), so a missing runtime
costs nothing until it is asked for, and then fails with a message naming the extra;
each module's ``candidates`` says what it can run on a given machine (``choice``).
The names below are imported on first use (PEP 562): the CLI's parser reads the rows
without numpy or the package code.
"""

from __future__ import annotations

from ..lazy import lazy_exports

#: Names importable from here, and the module each lives in.
_LAZY = {
    "Backend": "liverlesion.backends.base",
    "TensorSpec": "liverlesion.backends.base",
    "BACKENDS": "liverlesion.backends.registry",
    "BackendRow": "liverlesion.backends.registry",
    "available_backends": "liverlesion.backends.registry",
    "backend_class": "liverlesion.backends.registry",
}
__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
