"""The torch backend: the PyTorch FP32 reference, rebuilt from the package's weights.

This is the one backend that imports training code (``liverlesion.model`` to build
the network, ``liverlesion.model.fused`` for the same preprocessing and softmax/argmax
the ONNX graph has), all inside ``__init__``: it *is* the reference the exported
graphs are checked against, so it must run the very modules training ran. It needs
the ``train`` extra (torch, safetensors) and is never imported by the runtime.

Thread safety: one lock around the forward pass. A torch module is not guaranteed
re-entrant (modules may keep state on ``self`` and share buffers), and torch's own
intra-op threads already use the CPUs, so serialising calls costs little.
"""

from __future__ import annotations

import json
import threading
from typing import Any, ClassVar

import numpy as np

from ..errors import BackendError, PackageError, require
from ..machine import runtimes
from ..machine.host import threads_or_all
from ..machine.probe import Machine
from ..package import FileRecord, Manifest, ModelPackage
from .base import Backend
from .choice import Candidates, Choice, Request
from .registry import BACKENDS

#: This backend's registry row (its extra names the install hint).
ROW = BACKENDS["torch"]


def candidates(manifest: Manifest, machine: Machine, request: Request) -> Candidates:
    """The FP32 reference, where torch is installed and the package has its weights."""
    if not machine.torch:
        return Candidates([], f"torch (or safetensors) is not installed: {ROW.install}")
    if manifest.find(role="weights", format="safetensors") is None:
        return Candidates([], "the package has no weights (role 'weights', model.safetensors) for the torch "
                              "reference")
    if request.precisions is not None and not set(request.precisions) & set(ROW.precisions):
        return Candidates([], "the torch backend is the FP32 reference; it runs fp32 only")
    return Candidates([Choice("torch", "fp32", {}, "CPU", "the PyTorch FP32 reference on CPU")],
                      "the PyTorch FP32 reference")

#: The weights' description format this backend reads (see export.package_writer.write_weights).
WEIGHTS_FORMAT = "liverlesion-weights"


def weights_description(package: ModelPackage, record: FileRecord) -> dict[str, Any]:
    """The model config (and grid, windows, labels) stored with the weights, from the safetensors header."""
    safetensors = require("safetensors", ROW.extra, "the torch backend")
    try:
        with safetensors.safe_open(str(package.path(record)), framework="np") as handle:
            text = (handle.metadata() or {}).get("liverlesion")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for damaged headers
        raise PackageError(f"{record.path}: not a readable safetensors file ({exc})") from None
    if text is None and record.extra.get("config"):  # older packages: the JSON file beside the weights
        text = package.path(str(record.extra["config"])).read_text(encoding="utf-8")
    try:
        description = json.loads(text) if text else None
    except json.JSONDecodeError as exc:
        raise PackageError(f"{record.path}: the weights' description is not JSON ({exc})") from None
    if not isinstance(description, dict) or description.get("format") != WEIGHTS_FORMAT:
        raise PackageError(f"{record.path} carries no '{WEIGHTS_FORMAT}' description of its model; re-export "
                           "the package with liverlesion export")
    return description


class TorchBackend(Backend):
    """Runs the trained network with PyTorch on CPU, FP32 only (see the module docstring)."""

    name: ClassVar[str] = "torch"

    def __init__(self, package: ModelPackage, precision: str = "fp32", *, threads: int | None = None) -> None:
        """``threads`` sets torch's intra-op threads, which are process-wide (``torch.set_num_threads``);
        more than the usable CPUs is clamped to them (:func:`~liverlesion.machine.host.threads_or_all`)."""
        super().__init__(package, precision)
        if precision != "fp32":
            raise BackendError(f"the torch backend is the FP32 reference and runs fp32 only, not "
                               f"{precision!r}; use the onnxruntime or tensorrt backend for fp16 and int8")
        # None keeps torch's own default (its physical cores); checked before any loading
        threads = None if threads is None else threads_or_all(threads)
        torch = require("torch", ROW.extra, "the torch backend")
        self._torch = torch
        record = package.manifest.find(role="weights", format="safetensors")
        if record is None:
            raise BackendError(f"package {package.root} has no weights (role 'weights', format "
                               "'safetensors') for the torch backend; re-export it with liverlesion export, "
                               "or use onnxruntime")
        self._weights = record
        description = weights_description(package, record)
        self._check(description)
        from safetensors.torch import load_file

        from ..model import ModelConfig, build_model
        from ..model.fused import fuse

        config = ModelConfig.from_dict(dict(description["model"]))
        network = build_model(config)
        try:
            network.load_state_dict(load_file(str(package.path(record))), strict=True)
        except (RuntimeError, KeyError) as exc:
            raise PackageError(f"{record.path} does not fit the model its description names: {exc}") from None
        if threads is not None:
            torch.set_num_threads(threads)
        self._model: Any = fuse(network, package.manifest.preprocessing, config.arch)
        self._names = self._model.output_names
        self._lock = threading.Lock()

    def _check(self, description: dict[str, Any]) -> None:
        """The weights must describe the model the manifest describes (same arch, windows, grid, labels)."""
        manifest = self.package.manifest
        model = description.get("model") or {}
        mismatches = []
        if model.get("arch") != manifest.arch:
            mismatches.append(f"arch {model.get('arch')!r} vs {manifest.arch!r}")
        if "preprocessing" in description and \
                [list(map(float, w)) for w in description["preprocessing"].get("windows", [])] != \
                [list(w) for w in manifest.preprocessing.windows]:
            mismatches.append("HU windows")
        if "grid" in description and list(description["grid"].get("size", [])) != list(manifest.grid.size):
            mismatches.append(f"grid {description['grid'].get('size')} vs {list(manifest.grid.size)}")
        if "labels" in description and tuple(description["labels"]) != manifest.labels:
            mismatches.append("labels")
        if mismatches:
            raise PackageError(f"the package's weights do not match its manifest ({'; '.join(mismatches)}); "
                               "re-export the package")

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        missing = runtimes.torch_missing()  # looked up when called: tests stand a machine in
        if missing is not None:
            return False, f"{missing} is not installed: {ROW.install}"
        return True, "PyTorch (the FP32 reference, CPU)"

    def model_file(self) -> tuple[str, int]:
        return self._weights.path, int(self._weights.size)

    def _run(self, hu: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with self._lock:
            model = self._model
            if model is None:
                raise BackendError("the torch backend was closed; load the model again")
            with torch.inference_mode():
                values = model(torch.from_numpy(hu))
            # .numpy() shares memory with tensors torch may reuse; copies belong to the caller.
            return {name: value.numpy().copy() for name, value in zip(self._names, values, strict=True)}

    def _release(self) -> None:
        with self._lock:
            self._model = None
