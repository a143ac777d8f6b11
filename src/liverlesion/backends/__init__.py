"""Inference backends: one interface, one module per runtime, imported lazily.

A backend runs the package's fused graph (HU on the model grid in, label map and
probabilities out). Backends are registered as (module, class) strings, as
pydicom registers its pixel decoders, so a missing runtime costs nothing until
it is asked for, and then fails with a message naming the extra to install.
"""

from .base import Backend, TensorSpec
from .registry import BACKENDS, available_backends, backend_class

__all__ = ["BACKENDS", "Backend", "TensorSpec", "available_backends", "backend_class"]
