"""``RemoteAnalyzer``: ``LesionAnalyzer``'s ``predict`` / ``predict_batch`` against a served package.

Each slice is read here, as ``LesionAnalyzer`` reads it (``sdk.inputs.load_slice``: DICOM, NIfTI, arrays),
and only its HU, spacing and orientation travel (``serving.contract``); the Prediction that comes back is
rebuilt on the local slice, so its source and DICOM Dataset stay here and ``to_dicom_seg`` / ``to_dicom_sr``
work as in-process. Before the first request, and again after every reconnection, the model's config
parameters are checked against ``expect_name`` / ``expect_digest``: a server running another package is a
:class:`WrongModel`, never a wrong answer.

Failures are typed: :class:`ServerUnavailable` (nothing listening, 503 / UNAVAILABLE, a timeout),
:class:`ModelMissing`, :class:`WrongModel`, :class:`RequestRefused` (the server refused the request: also an
``InputError``, as in-process). Transient failures (connection refused while a server restarts, 503 /
UNAVAILABLE) are retried ``retries`` times with a growing pause; a timeout and a refused request are not.
One RemoteAnalyzer may be shared by threads: each thread gets its own Triton client.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import BackendError, InputError, LiverLesionError, require
from ..grid import Spacing, check_spacing
from ..input_limits import side_limit
from ..package.digest import normalize_digest
from ..sdk.geometry import MAX_TILT_DEG
from ..sdk.inputs import SliceInput
from ..sdk.options import PredictOptions
from ..sdk.prediction import Prediction
from . import contract
from .wire import WireError, parse_payload, prediction_from, refusal, request_tensors

PROTOCOLS = ("http", "grpc")
#: Refusals (error class names from the server) that mean the request itself was bad.
REQUEST_ERRORS = ("InputError", "DataFormatError", "DicomError", "WireError")
#: Pause before the first retry (s); each further retry waits twice as long.
RETRY_WAIT_S = 0.5
#: What a RemoteAnalyzer reads from the package a server runs.
IDENTITY_FIELDS = ("name", "version", "digest")


class RemoteError(BackendError):
    """A served model could not give an answer: the base of every RemoteAnalyzer error."""


class ServerUnavailable(RemoteError):
    """No server answered at the URL (nothing listening, restarting, overloaded, or too slow)."""


class ModelMissing(RemoteError):
    """The server answers but does not serve (or has not loaded) the model asked for."""


class WrongModel(RemoteError):
    """The server runs another package than the one expected (its name or digest differ)."""


class RequestRefused(RemoteError, InputError):
    """The server refused this request: what was wrong with it, as the server said."""


class RemoteAnalyzer:
    """The SDK's ``predict`` / ``predict_batch`` over Triton (HTTP or gRPC), returning the same Predictions."""

    def __init__(self, url: str, *, protocol: str = "http", expect_digest: str | None = None,
                 expect_name: str | None = None, timeout_s: float = 30.0, retries: int = 2,
                 model: str = contract.PIPELINE_MODEL, connect: bool = True) -> None:
        """``url``: host:port of the server's HTTP (default 8000) or gRPC (8001) endpoint. ``timeout_s``
        bounds each call; ``retries`` transient failures are retried per call. ``connect``: check the server
        and the package now (else at the first request)."""
        if protocol not in PROTOCOLS:
            raise InputError(f"protocol={protocol!r:.40} is not accepted: give one of {', '.join(PROTOCOLS)}")
        if not isinstance(url, str) or not url.strip() or "/" in url.split("://", 1)[-1]:
            raise InputError(f"url={url!r:.80} is not accepted: give host:port of the server (e.g. 127.0.0.1:8000)")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= 3600:
            raise InputError(f"timeout_s={timeout_s!r:.40} is not accepted: give seconds, above 0 and at most 3600")
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise InputError(f"retries={retries!r:.40} is not accepted: give an integer from 0 to 10")
        self._module = require(f"tritonclient.{protocol}", "remote", "RemoteAnalyzer")
        #: What a transport failure may raise: tritonclient's and socket errors, and (HTTP: geventhttpclient)
        #: gevent's Timeout, which is a BaseException.
        self._errors: tuple[type[BaseException], ...] = (Exception,)
        if protocol == "http":
            from gevent import Timeout

            self._errors += (Timeout,)
        self.url = url.split("://", 1)[-1].strip()
        self.protocol = protocol
        self.model_name = model
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.expect_digest = None if expect_digest is None else normalize_digest(expect_digest)
        self.expect_name = expect_name
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._identity: dict[str, Any] | None = None
        self._closed = False
        if connect:
            self.identity()

    # -- what the server runs ------------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """The served package (name, version, digest), its default spacing and largest batch; checked once per
        connection against ``expect_name`` / ``expect_digest``."""
        identity = self._identity
        if identity is None:
            identity = self._call(self._read_identity, checked=False)
            self._identity = identity
        return identity

    @property
    def default_spacing(self) -> Spacing:
        return self.identity()["default_spacing"]

    @property
    def max_batch(self) -> int:
        return int(self.identity()["max_batch"])

    def _read_identity(self, client: Any) -> dict[str, Any]:
        if not client.is_model_ready(self.model_name, **self._timeout_kw()):
            raise _NotReady(self.model_name)
        config = client.get_model_config(self.model_name, **self._timeout_kw())
        if self.protocol == "grpc":
            from google.protobuf.json_format import MessageToDict

            config = MessageToDict(config.config, preserving_proto_field_name=True)
        parameters = {k: (v or {}).get("string_value") for k, v in dict(config.get("parameters", {})).items()}
        keys = dict(zip(IDENTITY_FIELDS, contract.PARAMETER_KEYS))
        found = {field: parameters.get(key) for field, key in keys.items()}
        if any(v is None for v in found.values()):
            raise WrongModel(f"model {self.model_name!r} at {self.url} carries no liverlesion package identity "
                             f"(config parameters {', '.join(contract.PARAMETER_KEYS)}): it is not a liverlesion model")
        if self.expect_name is not None and found["name"] != self.expect_name:
            raise WrongModel(f"the server at {self.url} runs package {found['name']!r} (version {found['version']}), "
                             f"not the expected {self.expect_name!r}")
        if self.expect_digest is not None and found["digest"] != self.expect_digest:
            raise WrongModel(f"the server at {self.url} runs package {found['name']!r} with digest {found['digest']}, "
                             f"not the expected {self.expect_digest}: it is another package or another version")
        try:
            spacing = check_spacing(json.loads(parameters.get(contract.DEFAULT_SPACING_KEY) or "null"))
        except (ValueError, LiverLesionError) as exc:
            raise WrongModel(f"model {self.model_name!r} at {self.url}: its default spacing parameter is not "
                             f"usable ({exc})") from None
        return {**found, "default_spacing": spacing, "max_batch": max(1, int(config.get("max_batch_size") or 1))}

    # -- predicting ------------------------------------------------------------------------------------------------
    def predict(self, slice: Any, *, spacing: Sequence[float] | None = None, index: int | None = None,
                frame: int | None = None, max_tilt_deg: float = MAX_TILT_DEG, allow_non_hu: bool = False,
                max_side: int | None = None) -> Prediction:
        """The Prediction for one slice, made by the server: what ``LesionAnalyzer.predict`` accepts."""
        options = PredictOptions(spacing, index, frame, max_tilt_deg, allow_non_hu, max_side)
        slice_ = self._read(options, slice)
        return self._send([slice_], allow_non_hu)[0]

    def predict_batch(self, slices: Iterable[Any], *, spacing: Sequence[float] | None = None,
                      index: int | None = None, frame: int | None = None, batch_size: int | None = None,
                      max_tilt_deg: float = MAX_TILT_DEG, allow_non_hu: bool = False,
                      max_side: int | None = None) -> list[Prediction]:
        """Predictions for several slices: consecutive slices of one shape go in one request of at most
        ``batch_size`` (and the server's largest batch). A bad slice raises, naming its position."""
        from ..sdk.analyzer import _is_single

        if _is_single(slices):
            raise InputError("predict_batch takes a sequence of slices (or an N x rows x cols array); for one slice "
                             "use predict()")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise InputError(f"batch_size={batch_size!r} is not accepted: give a positive integer")
        options = PredictOptions(spacing, index, frame, max_tilt_deg, allow_non_hu, max_side)
        read = []
        for position, item in enumerate(slices):
            try:
                read.append(self._read(options, item))
            except LiverLesionError as exc:
                raise type(exc)(f"slice {position} of the batch: {exc}") from None
        size = min(batch_size or self.max_batch, self.max_batch)
        results: list[Prediction] = []
        for group in _groups(read, size):
            results.extend(self._send(group, allow_non_hu))
        return results

    def predict_series(self, source: Any, *, series_uid: str | None = None, spacing: Sequence[float] | None = None,
                       batch_size: int | None = None, progress: Any = None, readers: int | None = None,
                       max_tilt_deg: float = MAX_TILT_DEG, allow_non_hu: bool = False,
                       max_side: int | None = None) -> Any:
        """``LesionAnalyzer.predict_series`` with the slices predicted by the server: the series is opened, read,
        joined into 3D lesions and measured here (``sdk.series.pipeline``, the same code), one request per batch
        in flight while the next batch is read. ``source`` as in-process, a series already opened (``open_series``)
        included. Returns the same SeriesPrediction (SEG, SR, JSON, NIfTI)."""
        from ..sdk.series.pipeline import predict_series
        from ..sdk.series.source import SeriesSlices

        self._check_open()
        options: dict[str, Any] = {"series_uid": series_uid, "spacing": spacing, "batch_size": batch_size,
                                   "progress": progress, "readers": readers, "max_tilt_deg": max_tilt_deg,
                                   "allow_non_hu": allow_non_hu}
        if isinstance(source, SeriesSlices):
            # opened by the caller with its own reading options (the pipeline refuses others, as in-process); the
            # server checks HU again, so it is told what the series was read with
            if max(source.shape) > contract.MAX_SIDE:
                raise InputError(f"the series' slices of {source.shape[0]} x {source.shape[1]} pixels exceed the "
                                 f"served limit of {contract.MAX_SIDE} pixels per side (serving.contract.MAX_SIDE); "
                                 "predict it in-process")
            stages = _SeriesStages(self, source.options.allow_non_hu)
            return predict_series(stages, source, max_side=max_side, **options)
        # opened (and closed) by the pipeline, as in-process, with the side bounded to what the server takes
        limit = min(side_limit(max_side), contract.MAX_SIDE)
        return predict_series(_SeriesStages(self, allow_non_hu), source, max_side=limit, **options)

    def _read(self, options: PredictOptions, item: Any) -> SliceInput:
        """The slice read here; one larger than the server takes is refused from its header or shape, before its
        pixels are read or copied (``input_limits``), and so before anything is sent."""
        self._check_open()
        spacing = self.identity()["default_spacing"] if options.spacing is None else None
        limit = min(side_limit(options.max_side), contract.MAX_SIDE)
        slice_ = dataclasses.replace(options, max_side=limit).load(item, spacing)
        if max(slice_.shape) > contract.MAX_SIDE:  # a SliceInput given as such was not read here
            raise InputError(f"a slice of {slice_.shape[0]} x {slice_.shape[1]} pixels exceeds the served limit of "
                             f"{contract.MAX_SIDE} pixels per side (serving.contract.MAX_SIDE); predict it in-process")
        return slice_

    def _send(self, slices: list[SliceInput], allow_non_hu: bool) -> list[Prediction]:
        tensors = request_tensors(slices)
        started = time.perf_counter()
        result = self._call(lambda client: self._infer(client, tensors, allow_non_hu))
        round_trip_ms = (time.perf_counter() - started) * 1000.0
        label_maps, components = result.as_numpy("label_map"), result.as_numpy("lesion_components")
        payloads = result.as_numpy("prediction_json")
        if label_maps is None or components is None or payloads is None or len(payloads) != len(slices):
            raise RemoteError(f"the server at {self.url} answered without the outputs of serving.contract for "
                              f"{len(slices)} slice(s)")
        predictions = []
        for i, slice_ in enumerate(slices):
            data = parse_payload(payloads[i])
            refused = refusal(data)
            if refused is not None:
                kind, message = refused
                if kind in REQUEST_ERRORS:
                    raise RequestRefused(f"the server refused the slice ({kind}): {message}")
                raise RemoteError(f"the server could not predict the slice ({kind}): {message}")
            try:
                prediction = prediction_from(data, label_maps[i], components[i], slice_)
            except WireError as exc:
                raise RemoteError(f"the server at {self.url} answered outside the wire contract: {exc}") from None
            prediction.timings["round_trip_ms"] = round_trip_ms / len(slices)
            predictions.append(prediction)
        return predictions

    def _infer(self, client: Any, tensors: dict[str, np.ndarray], allow_non_hu: bool) -> Any:
        module = self._module
        inputs = []
        for spec in contract.PIPELINE_INPUTS:
            if spec.name not in tensors:  # the HU input not taken (wire.request_tensors)
                continue
            array = tensors[spec.name]
            tensor = module.InferInput(spec.name, list(array.shape), _triton_type(spec.dtype))
            if self.protocol == "http":
                tensor.set_data_from_numpy(array, binary_data=True)
            else:
                tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [module.InferRequestedOutput(spec.name, **({"binary_data": True} if self.protocol == "http"
                                                                 else {})) for spec in contract.PIPELINE_OUTPUTS]
        parameters = {"allow_non_hu": True} if allow_non_hu else None
        return client.infer(self.model_name, inputs, outputs=outputs, parameters=parameters, **self._timeout_kw())

    # -- transport -------------------------------------------------------------------------------------------------
    def _call(self, action: Any, *, checked: bool = True) -> Any:
        """``action(client)`` with the bounded retry on transient failures; every failure a typed error.

        ``checked``: the served package is checked first whenever it has not been on this connection.
        """
        attempt = 0
        while True:
            self._check_open()
            try:
                client = self._client()
                if checked and self._identity is None:
                    self._identity = self._read_identity(client)
                return action(client)
            except LiverLesionError:
                raise
            except self._errors as exc:  # tritonclient, gevent and socket errors: classified here
                error, transient = self._classify(exc)
                self._drop_client()
                if isinstance(error, ServerUnavailable):
                    self._identity = None  # whatever answers next is checked again before it is used
                if not transient or attempt >= self.retries:
                    raise error from None
                time.sleep(RETRY_WAIT_S * 2 ** attempt)
                attempt += 1

    def _classify(self, exc: BaseException) -> tuple[RemoteError, bool]:
        """The typed error for a transport failure, and whether retrying it may help."""
        status = str(getattr(exc, "status", lambda: None)() or "")
        message = str(exc).strip() or type(exc).__name__
        where = f"{self.protocol}://{self.url}"
        timeout = isinstance(exc, TimeoutError) or type(exc).__name__ == "Timeout" or "DEADLINE_EXCEEDED" in status
        if timeout:
            return ServerUnavailable(f"{where} did not answer within {self.timeout_s:g} s ({message:.200})"), False
        if isinstance(exc, _NotReady):  # loading or unloading (a restart): worth the retries, then missing
            return ModelMissing(f"the server at {where} has no ready model {self.model_name!r}: is it liverlesion "
                                "serve, and has it finished loading?"), True
        if isinstance(exc, OSError) or type(exc).__name__ == "HTTPConnectionClosed" or "UNAVAILABLE" in status \
                or status == "503":
            return ServerUnavailable(f"no liverlesion server answered at {where} ({message:.200}); is "
                                     "liverlesion serve running there?"), True
        if (status == "500" or "INTERNAL" in status) and any(m in message for m in _STOPPING):
            return ServerUnavailable(f"the server at {where} is stopping: its model process went away during the "
                                     "request"), True
        if "NOT_FOUND" in status or status == "404":
            return ModelMissing(f"{where} does not serve model {self.model_name!r} ({message:.200})"), False
        if "INVALID_ARGUMENT" in status or status == "400":
            return RequestRefused(f"{where} refused the request: {message:.400}"), False
        return RemoteError(f"{where} failed the request ({status or type(exc).__name__}): {message:.400}"), False

    def _timeout_kw(self) -> dict[str, float]:
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "http":
                client = self._module.InferenceServerClient(self.url, connection_timeout=self.timeout_s,
                                                            network_timeout=self.timeout_s)
            else:
                client = self._module.InferenceServerClient(self.url)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _drop_client(self) -> None:
        """Forget this thread's client after a failure: a new one reconnects (a restarted server, a new channel)."""
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            _close_quietly(client)

    def _check_open(self) -> None:
        if self._closed:
            raise RemoteError("this RemoteAnalyzer was closed; make a new one")

    # -- lifetime ----------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close every thread's connection. Idempotent."""
        self._closed = True
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            _close_quietly(client)

    def __enter__(self) -> RemoteAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        package = self._identity["name"] if self._identity else "?"
        return (f"RemoteAnalyzer(url={self.url!r}, protocol={self.protocol!r}, model={self.model_name!r}, "
                f"package={package!r})")


#: What the Python backend reports when the server process behind it is stopping (PyTriton's IPC torn down).
_STOPPING = ("BrokenPipeError", "EOFError", "ConnectionResetError", "ConnectionRefusedError",
             "inference handler is stopped", "Cancelled responses handler", "server is stopping")


class _SeriesStages:
    """The three stages ``sdk.series.pipeline`` runs an analyzer through, with the server as the backend."""

    def __init__(self, remote: RemoteAnalyzer, allow_non_hu: bool) -> None:
        self.remote, self.allow_non_hu = remote, allow_non_hu
        identity = remote.identity()
        #: what the served Predictions say ran them (set from the first answer)
        self.backend, self.precision = "remote", "?"
        self.model = {"name": str(identity["name"]), "version": str(identity["version"]),
                      "digest": str(identity["digest"])}

    def _batch_size(self, asked: int | None) -> int:
        if asked is not None and (isinstance(asked, bool) or not isinstance(asked, int) or asked < 1):
            raise InputError(f"batch_size={asked!r} is not accepted: give a positive integer")
        return min(asked or self.remote.max_batch, self.remote.max_batch)

    def _prepare(self, items: Sequence[tuple[int | None, Any]], options: PredictOptions) -> Any:
        from ..sdk.analyzer import Prepared

        return Prepared([(slice_, 0.0) for _, slice_ in items], None)  # the series reader decoded them

    def _infer(self, prepared: Any) -> list[Any]:
        from ..sdk.analyzer import Inferred

        ran = []
        for group in _groups([slice_ for slice_, _ in prepared.slices], self.remote.max_batch):
            started = time.perf_counter()
            predictions = self.remote._send(group, self.allow_non_hu)
            # what the server's analyzer says ran it, as the in-process SeriesPrediction (and its SEG) records it
            first = predictions[0]
            self.backend, self.precision, self.model = first.backend, first.precision, dict(first.model)
            ran.append(Inferred({"predictions": predictions}, [(s, 0.0) for s in group],  # type: ignore[dict-item]
                                (time.perf_counter() - started) * 1000.0))
        return ran

    def _decode(self, ran: Any) -> list[Prediction]:
        return list(ran.outputs["predictions"])


class _NotReady(Exception):
    """The server answers but the model is not ready (loading or unloading): retried, then ModelMissing."""


def _groups(slices: list[SliceInput], size: int) -> Iterator[list[SliceInput]]:
    """Runs of consecutive slices of one shape, each at most ``size`` long (one request each)."""
    group: list[SliceInput] = []
    for slice_ in slices:
        if group and (len(group) == size or slice_.shape != group[0].shape):
            yield group
            group = []
        group.append(slice_)
    if group:
        yield group


def _triton_type(dtype: str) -> str:
    return {"float32": "FP32", "float64": "FP64", "uint8": "UINT8", "uint16": "UINT16", "int16": "INT16",
            "int32": "INT32", "bytes": "BYTES"}[dtype]


def _close_quietly(client: Any) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001 - a client whose connection already failed may fail closing it too
        pass
