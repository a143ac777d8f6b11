"""Serving the SDK past one machine: NVIDIA Triton Inference Server, its model repository, a remote client."""
