"""The Python-backend models of ``liverlesion triton-repo``'s repository: the SDK inside NVIDIA Triton.

- :class:`PipelineModel` (``liverlesion_pipeline``): ``serving.server.PipelineHandler`` on the requests of one
  dynamic batch, so a slice is read, checked, resampled and postprocessed by ``LesionAnalyzer``'s own code; only
  the network runs elsewhere: :class:`BlsNetwork` is a backend whose ``infer`` is a BLS request to
  ``liverlesion_network`` (whatever serves it: onnxruntime, TensorRT, or :class:`NetworkModel`).
- :class:`NetworkModel` (``liverlesion_network`` as a Python model): ``serving.server.NetworkHandler`` on the
  SDK's onnxruntime or OpenVINO backend, for servers without those backends (PyTriton's bundled tritonserver).

Each model checks the package it finds in its folder against the digest its config carries before it serves.
``triton_python_backend_utils`` exists only inside Triton's Python-backend stub: it is imported in ``initialize``.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import __version__
from ..backends.base import MODEL_GRID, Backend
from ..backends.choice import Choice, Selection
from ..errors import BackendError, LiverLesionError, PackageError
from ..machine.probe import Machine
from ..package import ModelPackage
from ..package.digest import check_digest
from ..package.manifest import DEVICE_BUILT_ROLES
from ..package.store import read_manifest
from ..sdk.analyzer import LesionAnalyzer
from . import contract
from .repository import (
    MAX_SIDE_KEY,
    NETWORK_MODEL_KEY,
    NETWORK_PRECISION_KEY,
    NETWORK_RUNTIME_KEY,
    PACKAGE_FOLDER,
    SDK_BACKEND_KEY,
    SDK_THREADS_KEY,
    SDK_VERSION_KEY,
)

log = logging.getLogger("liverlesion.serving")


def _pb_utils() -> Any:
    """The Python backend's utilities: a module the stub provides, found only inside Triton."""
    return importlib.import_module("triton_python_backend_utils")


class TritonRequest:
    """A Python-backend request as ``serving.server``'s handlers read one: inputs by name, and its parameters."""

    def __init__(self, request: Any, pb_utils: Any) -> None:
        self._request = request
        self._pb = pb_utils
        raw = request.parameters()
        self.parameters: dict[str, Any] = json.loads(raw) if raw else {}

    def __getitem__(self, name: str) -> np.ndarray:
        tensor = self._pb.get_input_tensor_by_name(self._request, name)
        if tensor is None:
            raise KeyError(name)
        return tensor.as_numpy()


def model_parameters(args: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The model's config (``args["model_config"]``) and its string parameters."""
    config = json.loads(args["model_config"])
    parameters = {str(k): str((v or {}).get("string_value", "")) for k, v in dict(config.get("parameters", {})).items()}
    return config, parameters


def _parameter(parameters: Mapping[str, str], key: str) -> str:
    value = parameters.get(key)
    if not value:
        raise PackageError(f"the model config has no parameter {key!r}: write the repository with "
                           "liverlesion triton-repo")
    return value


def _checked_package(folder: Path, parameters: Mapping[str, str]) -> ModelPackage:
    """The package copy in ``folder`` (its manifest, and whichever of its files were copied), checked against
    the digest of the config: files by size and sha256, the manifest by the digest."""
    manifest = read_manifest(folder)
    check_digest(manifest, _parameter(parameters, contract.PARAMETER_KEYS[2]), str(folder))
    package = ModelPackage(folder, manifest)
    package.verify([r for r in manifest.files if r.role not in DEVICE_BUILT_ROLES and package.path(r).is_file()])
    return package


def _responses(pb_utils: Any, answers: Sequence[Mapping[str, np.ndarray]]) -> list[Any]:
    return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, np.ascontiguousarray(value))
                                                      for name, value in answer.items()]) for answer in answers]


def _errors(pb_utils: Any, count: int, error: BaseException) -> list[Any]:
    message = f"{type(error).__name__}: {error}"
    return [pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message)) for _ in range(count)]


# -- the network through BLS ---------------------------------------------------------------------------------------
class BlsNetwork(Backend):
    """The fused network as an SDK backend whose ``infer`` is a BLS request to the network model."""

    name: ClassVar[str] = "triton"

    def __init__(self, package: ModelPackage, precision: str, *, runtime: str, model: str, max_batch: int,
                 request: Callable[[str, np.ndarray, Sequence[str]], dict[str, np.ndarray]]) -> None:
        """``runtime``: what runs the network there (Predictions say it as their backend, as in-process);
        ``request(model, hu, outputs)``: one BLS call."""
        super().__init__(package, precision)
        self.runtime = runtime
        self.model = model
        self._max_batch = max_batch
        self._request = request
        self._outputs = tuple(package.manifest.outputs) or ("labels", "probabilities")

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return True, "inside Triton's Python backend (BLS)"

    @property
    def device(self) -> str:
        return f"Triton model {self.model} ({self.runtime})"

    @property
    def max_batch(self) -> int | None:
        return self._max_batch

    def model_file(self) -> tuple[str, int]:
        return f"triton:{self.model}", 0

    def _run(self, hu: np.ndarray) -> dict[str, np.ndarray]:
        return self._request(self.model, hu, self._outputs)


class RuntimeAnalyzer(LesionAnalyzer):
    """LesionAnalyzer whose Predictions name the runtime serving the network, as in-process they name theirs."""

    def __init__(self, *args: Any, runtime: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._runtime = runtime

    @property
    def backend(self) -> str:
        return self._runtime


def bls_request(pb_utils: Any, input_name: str) -> Callable[[str, np.ndarray, Sequence[str]], dict[str, np.ndarray]]:
    """A BLS call of ``model`` on a batch of model-grid HU; outputs asked for in host memory."""
    def request(model: str, hu: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        call = pb_utils.InferenceRequest(
            model_name=model, requested_output_names=list(outputs), inputs=[pb_utils.Tensor(input_name, hu)],
            # a GPU network answers in device memory otherwise, which as_numpy cannot read
            preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0))
        response = call.exec()
        if response.has_error():
            raise BackendError(f"the network model {model!r} failed: {response.error().message()}")
        found = {}
        for name in outputs:
            tensor = pb_utils.get_output_tensor_by_name(response, name)
            if tensor is None:
                raise BackendError(f"the network model {model!r} answered without output {name!r}")
            if not tensor.is_cpu():
                raise BackendError(f"the network model {model!r} answered {name!r} in GPU memory; the pipeline "
                                   "reads host memory")
            found[name] = tensor.as_numpy()
        return found

    return request


class PipelineModel:
    """``liverlesion_pipeline``: the SDK's pipeline on each dynamic batch, the network through BLS."""

    def initialize(self, args: Mapping[str, Any]) -> None:
        from .server import PipelineHandler

        pb_utils = _pb_utils()
        self._pb = pb_utils
        config, parameters = model_parameters(args)
        package = _checked_package(Path(args["model_repository"]) / str(args["model_version"]), parameters)
        runtime, precision = _parameter(parameters, NETWORK_RUNTIME_KEY), _parameter(parameters, NETWORK_PRECISION_KEY)
        network = BlsNetwork(package, precision, runtime=runtime, model=_parameter(parameters, NETWORK_MODEL_KEY),
                             max_batch=max(1, int(config.get("max_batch_size") or 1)),
                             request=bls_request(pb_utils, package.manifest.input_name))
        choice = Choice(runtime, precision, {}, network.device, "served by Triton, reached through BLS")
        selection = Selection(requested={"backend": runtime, "precision": precision}, candidates=(choice,),
                              backends={runtime: choice.reason}, precisions={precision: "the repository's"},
                              machine=Machine(), chosen=choice)
        self.analyzer = RuntimeAnalyzer(package, network, selection, owns_package=False, runtime=runtime)
        self.handler = PipelineHandler(self.analyzer, max_side=int(parameters.get(MAX_SIDE_KEY) or contract.MAX_SIDE))
        written_by = parameters.get(SDK_VERSION_KEY)
        if written_by and written_by != __version__:  # the wire contract is the SDK's: say so, serve anyway
            pb_utils.Logger.log_warn(f"{contract.PIPELINE_MODEL}: the repository was written by liverlesion "
                                     f"{written_by}, this server runs liverlesion {__version__}")

    def execute(self, requests: Sequence[Any]) -> list[Any]:
        try:
            answers = self.handler([TritonRequest(r, self._pb) for r in requests])
        except (LiverLesionError, ValueError) as exc:  # a request the handler could not even read
            return _errors(self._pb, len(requests), exc)
        return _responses(self._pb, answers)

    def finalize(self) -> None:
        analyzer = getattr(self, "analyzer", None)
        if analyzer is not None:
            analyzer.close()


class NetworkModel:
    """``liverlesion_network`` as a Python model: the SDK's onnxruntime or OpenVINO backend on the package copy."""

    def initialize(self, args: Mapping[str, Any]) -> None:
        from .server import NetworkHandler

        self._pb = _pb_utils()
        _, parameters = model_parameters(args)
        package = _checked_package(Path(args["model_repository"]) / str(args["model_version"]) / PACKAGE_FOLDER,
                                   parameters)
        threads = parameters.get(SDK_THREADS_KEY)
        self.analyzer = LesionAnalyzer.load(package, _parameter(parameters, SDK_BACKEND_KEY),
                                            _parameter(parameters, NETWORK_PRECISION_KEY),
                                            threads=int(threads) if threads else None, graph=MODEL_GRID)
        self.handler = NetworkHandler(self.analyzer)

    def execute(self, requests: Sequence[Any]) -> list[Any]:
        try:
            answers = self.handler([TritonRequest(r, self._pb) for r in requests])
        except (LiverLesionError, ValueError) as exc:
            return _errors(self._pb, len(requests), exc)
        return _responses(self._pb, answers)

    def finalize(self) -> None:
        analyzer = getattr(self, "analyzer", None)
        if analyzer is not None:
            analyzer.close()
