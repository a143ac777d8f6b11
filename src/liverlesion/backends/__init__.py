"""Inference backends: one interface, one module per runtime, imported lazily.

A backend runs the package's fused graph (HU on the model grid in, label map and
probabilities out). Each is one row of ``registry`` (module and class as strings, as
pydicom registers its pixel decoders, the extra, what it takes), so a missing runtime
costs nothing until it is asked for, and then fails with a message naming the extra;
each module's ``candidates`` says what it can run on a given machine (``choice``).
"""

from .base import Backend, TensorSpec
from .registry import BACKENDS, BackendRow, available_backends, backend_class

__all__ = ["BACKENDS", "Backend", "BackendRow", "TensorSpec", "available_backends", "backend_class"]
