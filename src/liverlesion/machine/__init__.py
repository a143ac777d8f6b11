"""The low layer: facts about this machine (CPU, GPU, CUDA memory, installed runtimes), no policy.

Backends, engines, bench and the SDK import it; it imports nothing of theirs. Modules:
``host`` (CPUs, threads, the per-user cache), ``gpu`` (the CUDA device through the driver),
``cuda_memory`` (device and pinned memory for TensorRT), ``runtimes`` (what is installed)
and ``probe`` (:class:`Machine`, the facts selection decides on).
"""

from .probe import Machine, probe_facts

__all__ = ["Machine", "probe_facts"]
