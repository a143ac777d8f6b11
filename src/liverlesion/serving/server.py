"""``liverlesion serve``: a real Triton Inference Server (PyTriton's bundled ``tritonserver``) running the SDK.

Two models, as ``serving.contract`` defines them, both with Triton's dynamic batching:

- ``liverlesion_pipeline``: :class:`PipelineHandler` runs ``LesionAnalyzer.predict_batch`` on the requests of
  one dynamic batch. A request the SDK refuses (a side above ``contract.MAX_SIDE``, implausible HU, a spacing
  out of range) gets its refusal in-band (``contract.ERROR_KEY``) and the others of its batch their results:
  PyTriton 0.7 turns an exception into an error for every request of the batch. What Triton itself checks
  (data type, a missing input, rank, malformed JSON or binary) comes back as a Triton error.
- ``liverlesion_network``: :class:`NetworkHandler` runs the backend alone on model-grid HU.

The handlers are plain callables (no Triton import), so they are tested in-process as well as served.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import signal
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import MODEL_GRID
from ..errors import InputError, LiverLesionError
from ..errors import require as require_module
from ..package.digest import package_digest
from ..sdk.inputs import SliceInput, load_slice
from . import contract
from .wire import orientation_from, prediction_payload, refusal_payload

log = logging.getLogger("liverlesion.serving")

#: Hosts that mean this machine only; anything else needs ``allow_remote``.
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback name or address (127.0.0.0/8, ::1)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """What ``liverlesion serve`` starts: the package, its backend, where Triton listens, and its batching."""

    package: Path
    backend: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    expect_digest: str | None = None
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    #: Triton's Prometheus metrics port; None: no metrics endpoint.
    metrics_port: int | None = None
    #: Model instances (PyTriton inference handlers) per model, sharing one loaded analyzer.
    instances: int = 1
    max_batch: int = 8
    queue_delay_ms: float = 2.0
    #: Token of Triton's admin endpoints (statistics, model repository, shared memory, trace, logging);
    #: None: PyTriton draws a random one.
    access_token: str | None = None
    allow_remote: bool = False
    log_verbose: int = 0

    def check(self) -> None:
        """Refuse options Triton would misread or that open the server beyond loopback unasked."""
        if not isinstance(self.host, str) or not self.host.strip():
            raise InputError(f"--host {self.host!r} is not a host name or address")
        if not is_loopback(self.host) and not self.allow_remote:
            raise InputError(f"--host {self.host} is not a loopback address: the server would answer other machines. "
                             "Pass --allow-remote to mean it (and put it behind your network's access control), "
                             "or keep the default 127.0.0.1")
        ports = {"--http-port": self.http_port, "--grpc-port": self.grpc_port}
        if self.metrics_port is not None:
            ports["--metrics-port"] = self.metrics_port
        for name, port in ports.items():
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise InputError(f"{name} {port!r} is not accepted: give a TCP port from 1 to 65535")
        if len(set(ports.values())) != len(ports):
            raise InputError(f"the ports must differ; got {ports}")
        for name, value, low in (("--instances", self.instances, 1), ("--max-batch", self.max_batch, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name} {value!r} is not accepted: give a positive integer")
        if not (isinstance(self.queue_delay_ms, (int, float)) and 0 <= self.queue_delay_ms <= 10_000):
            raise InputError(f"--queue-delay-ms {self.queue_delay_ms!r} is not accepted: give 0 to 10000 ms")
        if self.access_token is not None and (len(self.access_token) < 16 or not self.access_token.isprintable()
                                              or any(c in self.access_token for c in ",: ")):
            raise InputError("the access token must be at least 16 printable characters without ',', ':' or spaces "
                             "(Triton's restricted-API setting is 'APIs:header=token')")


# -- the handlers ----------------------------------------------------------------------------------------------
class PipelineHandler:
    """The pipeline model: each request's slices checked, the batch's slices predicted together."""

    def __init__(self, analyzer: Any, max_side: int = contract.MAX_SIDE) -> None:
        self.analyzer = analyzer
        self.max_side = max_side

    def __call__(self, requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        """One response per request, in order (PyTriton's callable for models without ``@batch``)."""
        read: list[list[SliceInput] | LiverLesionError] = []
        for request in requests:
            try:
                read.append(self.read(request))
            except LiverLesionError as exc:
                read.append(exc)
        slices = [s for item in read if isinstance(item, list) for s in item]
        outcomes = iter(self._predict(slices))
        responses = []
        for request, item in zip(requests, read):
            if isinstance(item, LiverLesionError):
                responses.append(_refused(item, _items(request)))
                continue
            done = [_wire_sized(next(outcomes)) for _ in item]
            failed = next((d for d in done if isinstance(d, LiverLesionError)), None)
            responses.append(_refused(failed, len(done)) if failed is not None else _answer(done))
        return responses

    def read(self, request: Any) -> list[SliceInput]:
        """The SliceInputs of one request (batch dimension first), checked as ``load_slice`` checks an array."""
        hu = _hu(request)
        spacing = _input(request, "spacing_mm")
        orientation = _optional_input(request, "orientation")
        if hu.ndim != 3 or spacing.ndim != 2 or spacing.shape != (hu.shape[0], 2):
            raise InputError(f"a request holds hu (N, rows, cols) and spacing_mm (N, 2); got {hu.shape} and "
                             f"{spacing.shape}")
        rows, cols = hu.shape[1:]
        if max(rows, cols) > self.max_side:  # the SDK's limits are the client's; the server's own may be lower
            raise InputError(f"a slice of {rows} x {cols} pixels exceeds this server's limit of {self.max_side} "
                             "pixels per side (serving.contract.MAX_SIDE)")
        if orientation is not None and orientation.shape != (hu.shape[0], 3):
            raise InputError(f"orientation must be (N, 3) for N = {hu.shape[0]} slices; got {orientation.shape}")
        allow = _allow_non_hu(request)
        slices = []
        for i in range(hu.shape[0]):
            slice_ = load_slice(hu[i], spacing=spacing[i], allow_non_hu=allow, max_side=self.max_side)
            turned = orientation_from(orientation[i]) if orientation is not None else slice_.orientation
            slices.append(dataclasses.replace(slice_, orientation=turned, source={"kind": "remote"}))
        return slices

    def _predict(self, slices: list[SliceInput]) -> list[Any]:
        """Each slice's Prediction, or the error that refused it: one batch, or one by one if the batch fails."""
        if not slices:
            return []
        try:
            return list(self.analyzer.predict_batch(slices, batch_size=len(slices)))
        except LiverLesionError:  # find the slice that failed, so that the others are still answered
            outcomes: list[Any] = []
            for slice_ in slices:
                try:
                    outcomes.append(self.analyzer.predict(slice_))
                except LiverLesionError as exc:
                    outcomes.append(exc)
            return outcomes


class NetworkHandler:
    """The network model: model-grid HU in, the backend's labels and probabilities out (no SDK steps)."""

    def __init__(self, analyzer: Any) -> None:
        self.analyzer = analyzer
        self.grid = analyzer.grid.size
        self.labels = len(analyzer.manifest.labels)
        # The loaded backend itself: LesionAnalyzer has no public raw-inference call (yet).
        self._backend = analyzer._backend

    def __call__(self, requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        arrays = [np.asarray(_input(r, "hu"), dtype=np.float32) for r in requests]
        want = (1, *self.grid)
        for a in arrays:
            if a.ndim != 4 or a.shape[1:] != want:  # Triton checks the config's fixed dims; this is for in-process
                raise InputError(f"hu must be (N, {want[0]}, {want[1]}, {want[2]}) on the model grid; got {a.shape}")
        batch = np.concatenate(arrays)
        step = self.analyzer.max_batch or len(batch)
        labels, probabilities = [], []
        for start in range(0, len(batch), step):
            out = self._backend.infer(np.ascontiguousarray(batch[start:start + step]))
            labels.append(np.asarray(out["labels"], dtype=np.int32))
            probabilities.append(np.asarray(out["probabilities"], dtype=np.float32))
        all_labels, all_probabilities = np.concatenate(labels), np.concatenate(probabilities)
        responses, at = [], 0
        for a in arrays:
            n = a.shape[0]
            responses.append({"labels": all_labels[at:at + n], "probabilities": all_probabilities[at:at + n]})
            at += n
        return responses


def _input(request: Any, name: str) -> np.ndarray:
    try:
        value = request[name]
    except KeyError:
        raise InputError(f"the request has no input {name!r}") from None
    return np.asarray(value)


def _hu(request: Any) -> np.ndarray:
    """The request's slices as float32 HU, from whichever of ``contract.HU_INPUTS`` it carries (exactly one)."""
    given = {name: value for name in contract.HU_INPUTS if (value := _optional_input(request, name)) is not None}
    if len(given) != 1:
        raise InputError(f"a request carries exactly one of the inputs {', '.join(contract.HU_INPUTS)}; this one "
                         f"carries {', '.join(given) or 'neither'}")
    return next(iter(given.values())).astype(np.float32, copy=False)


def _wire_sized(outcome: Any) -> Any:
    """``outcome``, or an InputError for a Prediction with more lesions than the wire's uint16 ids can number."""
    if isinstance(outcome, LiverLesionError) or len(outcome.lesions) <= contract.MAX_WIRE_LESIONS:
        return outcome
    return InputError(f"the slice has {len(outcome.lesions)} lesions, more than the {contract.MAX_WIRE_LESIONS} a "
                      "served answer can number (serving.contract.MAX_WIRE_LESIONS); predict it in-process")


def _optional_input(request: Any, name: str) -> np.ndarray | None:
    try:
        return np.asarray(request[name])
    except KeyError:
        return None


def _allow_non_hu(request: Any) -> bool:
    parameters = getattr(request, "parameters", None) or {}
    value = parameters.get("allow_non_hu", False)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if not isinstance(value, bool):
        raise InputError(f"request parameter allow_non_hu must be true or false; got {value!r:.40}")
    return value


def _items(request: Any) -> int:
    """How many slices a request holds (its batch dimension), for a refusal of each."""
    found = (_optional_input(request, name) for name in contract.HU_INPUTS)
    shape: tuple[int, ...] = getattr(next((v for v in found if v is not None), None), "shape", ())
    return int(shape[0]) if len(shape) >= 1 and shape[0] > 0 else 1


def _answer(predictions: Sequence[Any]) -> dict[str, np.ndarray]:
    return {"label_map": np.stack([p.label_map for p in predictions]).astype(np.uint8, copy=False),
            # most slices of a series have no lesion: their all-zero map is sent as 1 x 1 (wire.prediction_from)
            "lesion_components": np.stack([p.lesion_components for p in predictions]).astype(np.uint16, copy=False)
            if any(p.lesions for p in predictions) else np.zeros((len(predictions), 1, 1), np.uint16),
            "prediction_json": np.array([[prediction_payload(p)] for p in predictions], dtype=np.object_)}


def _refused(error: LiverLesionError, items: int) -> dict[str, np.ndarray]:
    log.info("refused a request: %s", error)
    # 1 x 1 maps, not 0 x 0: PyTriton's tensor store cannot copy an empty array (the JSON says it was refused)
    return {"label_map": np.zeros((items, 1, 1), np.uint8), "lesion_components": np.zeros((items, 1, 1), np.uint16),
            "prediction_json": np.array([[refusal_payload(error)]] * items, dtype=np.object_)}


# -- identity ----------------------------------------------------------------------------------------------------
def model_parameters(analyzer: Any) -> dict[str, str]:
    """The model config parameters every served model carries: the package's identity and default spacing."""
    manifest = analyzer.manifest
    name, version, digest = contract.PARAMETER_KEYS
    return {name: str(manifest.model_name), version: str(manifest.model.version), digest: package_digest(manifest),
            contract.DEFAULT_SPACING_KEY: json.dumps(list(analyzer.default_spacing))}


# -- the server ----------------------------------------------------------------------------------------------------
def stub_environment() -> None:
    """Put this interpreter's libpython first on LD_LIBRARY_PATH, for Triton's Python-backend stub.

    The stub links ``libpython3.X.so`` and would take the system's; under another build of the same version
    (pyenv's) it crashed with "'_thread.RLock' object has no attribute '_recursion_count'". PyTriton hands
    this environment to tritonserver.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not os.path.isdir(libdir):
        return
    current = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
    os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *current])


def serve(options: ServeOptions, *, ready: Callable[[Mapping[str, Any]], None] | None = None,
          analyzer: Any = None) -> int:
    """Load the package, start tritonserver with both models, and serve until SIGINT / SIGTERM; returns 0.

    ``ready`` is called once both models are loaded, with the endpoints and the package identity.
    ``analyzer``: an already loaded LesionAnalyzer (then it is not closed here).
    """
    options.check()
    require_module("pytriton", "serve", "liverlesion serve")
    from ..sdk.analyzer import LesionAnalyzer

    owned = analyzer is None
    if analyzer is None:
        analyzer = LesionAnalyzer.load(options.package, options.backend, options.precision,
                                       threads=options.threads, expect_digest=options.expect_digest)
    network_analyzer = analyzer
    try:
        if analyzer.graph != MODEL_GRID:  # the slice graph resamples inside itself; the network model needs the grid
            network_analyzer = LesionAnalyzer.load(options.package, analyzer.backend, analyzer.precision,
                                                   threads=options.threads, expect_digest=options.expect_digest,
                                                   graph=MODEL_GRID)
        return _run_triton(options, analyzer, network_analyzer, ready)
    finally:
        if network_analyzer is not analyzer:
            network_analyzer.close()
        if owned:
            analyzer.close()


def _run_triton(options: ServeOptions, analyzer: Any, network_analyzer: Any,
                ready: Callable[[Mapping[str, Any]], None] | None) -> int:
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    stub_environment()
    config = TritonConfig(http_address=options.host, http_port=options.http_port, grpc_address=options.host,
                          grpc_port=options.grpc_port, allow_metrics=options.metrics_port is not None,
                          allow_gpu_metrics=options.metrics_port is not None,
                          allow_cpu_metrics=options.metrics_port is not None,
                          metrics_port=options.metrics_port, metrics_address=options.host,
                          allow_sagemaker=False, allow_vertex_ai=False, exit_timeout_secs=5,
                          log_verbose=options.log_verbose)
    security = TritonSecurityConfig(access_token=options.access_token)
    batching = ModelConfig(max_batch_size=options.max_batch, batcher=DynamicBatcher(
        max_queue_delay_microseconds=round(options.queue_delay_ms * 1000)))
    parameters = model_parameters(analyzer)

    def tensors(specs: Sequence[contract.Tensor]) -> list[Any]:
        return [Tensor(name=t.name, dtype=np.bytes_ if t.dtype == "bytes" else np.dtype(t.dtype), shape=t.shape,
                       optional=t.optional) for t in specs]

    rows, cols = network_analyzer.grid.size
    net_in, net_out = contract.network_tensors(rows, cols, len(network_analyzer.manifest.labels))
    triton = Triton(config=config, security_config=security)
    stop = _stop_on_sigterm()
    try:
        triton.bind(contract.PIPELINE_MODEL, [PipelineHandler(analyzer) for _ in range(options.instances)],
                    tensors(contract.PIPELINE_INPUTS), tensors(contract.PIPELINE_OUTPUTS), config=batching)
        triton.bind(contract.NETWORK_MODEL, [NetworkHandler(network_analyzer) for _ in range(options.instances)],
                    tensors(net_in), tensors(net_out), config=batching)
        _set_parameters(triton, parameters)
        started = time.perf_counter()
        triton.run()
        if ready is not None:
            ready({"http": f"{options.host}:{options.http_port}", "grpc": f"{options.host}:{options.grpc_port}",
                   "metrics": None if options.metrics_port is None else f"{options.host}:{options.metrics_port}",
                   "models": [contract.PIPELINE_MODEL, contract.NETWORK_MODEL], "parameters": parameters,
                   "backend": analyzer.backend, "precision": analyzer.precision, "device": analyzer.device,
                   "startup_s": time.perf_counter() - started})
        triton.serve()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, stop)
        triton.stop()
    return 0


def _set_parameters(triton: Any, parameters: Mapping[str, str]) -> None:
    """Add the identity parameters to every bound model's config, before Triton loads them.

    PyTriton 0.7's ModelConfig has no parameters field; each model's generated Triton config keeps a
    ``backend_parameters`` dict (written as the config's ``parameters``), which is where they go.
    """
    models = list(getattr(getattr(triton, "_model_manager", None), "models", ()))
    if len(models) != 2:
        raise LiverLesionError(f"PyTriton {_pytriton_version()} does not expose its bound models as 0.7 does; "
                               "liverlesion serve needs nvidia-pytriton 0.7 (constraints/serve.txt)")
    for model in models:
        model._get_triton_model_config().backend_parameters.update(parameters)


def _pytriton_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nvidia-pytriton")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _stop_on_sigterm() -> Any:
    """SIGTERM stops the server as Ctrl-C does (PyTriton's serve loop stops on KeyboardInterrupt)."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if sys.platform == "win32":  # pragma: no cover
        return signal.SIG_DFL
    return signal.signal(signal.SIGTERM, handler)
