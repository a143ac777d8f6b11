"""OpenVINO backend: the package's ONNX graphs compiled by OpenVINO's CPU plugin.

- Precisions: ``fp32`` (the FP32 graph, f32 execution forced), ``bf16`` (the FP32 graph
  run with bf16 inference precision: needs a CPU with BF16, e.g. AVX512-BF16 or AMX),
  ``fp16`` (the same with f16: needs a CPU with FP16), ``int8`` (the CPU-form Q/DQ graph,
  ``qdq-u8s8``; OpenVINO refuses to compile the TensorRT-form s8s8 graph with its defaults).
  :attr:`OpenVinoBackend.executed_precision` reads back what the convolutions ran in.
- Two compiled models per package file, both at batch 1 (static shapes run fastest): a
  LATENCY-hinted one for single slices, and a THROUGHPUT-hinted one, compiled on the first
  batch, whose parallel streams take a batch's slices as asynchronous infer requests.
- Compiled models are cached in a per-user folder keyed by the file's checksum and the
  OpenVINO version (:func:`cache_folder`), so a second load imports instead of compiling.
  The cache is managed here, not by OpenVINO's CACHE_DIR: a blob is imported only after its
  record and sha256 are verified (:mod:`.openvino_cache`), and what it executes is checked
  against the precision asked for (:func:`execution_problem`); anything else is compiled anew.

Thread safety: one lock per compiled model, around its requests (an InferRequest and an
AsyncInferQueue are not re-entrant), so single slices keep running while a batch runs
or while the throughput model compiles; OpenVINO's own streams use the CPUs meanwhile.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import BackendError, require
from ..machine.host import cache_disabled, cache_root, threads_or_all
from ..machine.probe import Machine
from ..openvino_execution import (
    INFERENCE_PRECISION,
    OUTPUTS,
    cpu_capabilities,
    executed_precision,
    execution_problem,
    kernel_isas,
    output_names,
)
from ..package import FileRecord, Manifest, ModelPackage
from ..package.accuracy import CPU_INT8_FORM, auto_precisions, int8_file, precision_files
from .base import Backend
from .choice import Candidates, Choice, Request
from .openvino_cache import CacheKey, prepare_folder, read_entry, write_entry
from .registry import BACKENDS

#: This backend's registry row (its extra names the install hint).
ROW = BACKENDS["openvino"]

log = logging.getLogger("liverlesion.backends.openvino")

#: The package file each precision runs (bf16 and fp16 are execution precisions of the FP32 graph).
FILE_PRECISION = {"fp32": "fp32", **BACKENDS["openvino"].execution_precisions, "int8": "int8"}
#: Fastest first on OpenVINO CPU (docs/benchmarks.md); fp16 only where asked for.
PRECISION_ORDER = ("int8", "bf16", "fp32")
def candidates(manifest: Manifest, machine: Machine, request: Request) -> Candidates:
    """The precisions OpenVINO runs here (the CPU's capabilities, the CPU-form INT8), fastest first."""
    if machine.openvino_error is not None:
        return Candidates([], f"OpenVINO is installed but its CPU plugin did not start: {machine.openvino_error}")
    if machine.openvino_version is None:
        return Candidates([], f"OpenVINO is not installed: {ROW.install}")
    have = precision_files(manifest)
    cpu_form = int8_file(manifest, CPU_INT8_FORM) is not None
    usable, refused = [], []
    for precision in request.precisions if request.precisions is not None else PRECISION_ORDER:
        capability = INFERENCE_PRECISION[precision][1]
        if capability not in machine.openvino_capabilities:
            refused.append(f"{precision}: this CPU lacks {capability}")
        elif precision == "int8" and not cpu_form:
            refused.append("int8: the package has no CPU-form INT8 model (qdq-u8s8), and OpenVINO cannot "
                           "compile the TensorRT form")
        elif FILE_PRECISION[precision] in have:
            usable.append(precision)
    notes: dict[str, str] = {}
    if request.precisions is None:
        # INT8 on OpenVINO is vouched for by a measurement on OpenVINO (its kernels are not onnxruntime's)
        usable = auto_precisions(manifest, tuple(usable), notes, CPU_INT8_FORM, "openvino")
    if not usable:
        return Candidates([], "no precision runs on OpenVINO here: " + ("; ".join(refused) or "none qualifies"),
                          notes)
    runtime = f"OpenVINO {machine.openvino_version} on CPU"
    options: dict[str, Any] = {}
    if request.untrusted:  # a compiled-model cache is device-built: compile from the pinned file instead
        options["cache_dir"] = False
        runtime += ", compiled without the compiled-model cache (pinned package)"
    choices = [Choice("openvino", p, dict(options), "CPU", f"{runtime}; {notes.get(p, 'precision asked for')}")
               for p in usable]
    return Candidates(choices, choices[0].reason, notes)


def cache_folder(record: FileRecord, openvino_version: str, root: Path | None = None) -> Path:
    """Where the compiled models of one package file live: changes with the file and with OpenVINO."""
    safe_version = "".join(c if c.isalnum() or c in ".-" else "_" for c in openvino_version)
    return (root or cache_root()) / "openvino" / safe_version / record.sha256


def select_file(package: ModelPackage, precision: str) -> FileRecord:
    """The ONNX file OpenVINO runs for ``precision``."""
    if precision not in FILE_PRECISION:
        raise BackendError(f"the openvino backend runs {', '.join(FILE_PRECISION)}, not {precision!r}")
    onnx_files = package.manifest.onnx_files()
    if precision == "int8":
        for record in onnx_files:
            if record.precision == "int8" and record.extra.get("form") == CPU_INT8_FORM:
                return record
        forms = [str(r.extra.get("form")) for r in onnx_files if r.precision == "int8"]
        raise BackendError(
            "the openvino backend runs INT8 from the CPU-form model (qdq-u8s8), and this package has "
            + (f"only {', '.join(forms)} (OpenVINO cannot compile the TensorRT form)" if forms else "no INT8 model")
            + "; run liverlesion quantize again to add it")
    for record in onnx_files:
        if record.precision == FILE_PRECISION[precision]:
            return record
    raise BackendError(f"the package has no {FILE_PRECISION[precision]} ONNX model for openvino {precision}")


class OpenVinoBackend(Backend):
    """Runs the package's ONNX graphs with OpenVINO on CPU (see the module docstring)."""

    name: ClassVar[str] = "openvino"

    def __init__(self, package: ModelPackage, precision: str = "fp32", *, threads: int | None = None,
                 cache_dir: str | os.PathLike[str] | bool | None = None) -> None:
        """``threads``: CPU threads OpenVINO uses (default, and at most: every CPU this process may use);
        ``cache_dir``: root of the compiled-model cache (default :func:`cache_root`; False: no cache)."""
        super().__init__(package, precision)
        ov = require("openvino", ROW.extra, "the openvino backend")
        threads = threads_or_all(threads)
        self.record = select_file(package, precision)
        self.threads = threads
        try:
            self._core = ov.Core()
        except Exception as exc:
            raise BackendError(f"OpenVINO is installed but did not start: {exc}") from exc
        self.version = str(ov.get_version())
        hint, capability = INFERENCE_PRECISION[precision]
        have = cpu_capabilities(self._core)
        if capability not in have:
            raise BackendError(f"this CPU cannot run OpenVINO {precision}: its CPU plugin lists "
                               f"{', '.join(have)} and {precision} needs {capability}; use precision='fp32'")
        self._hint = hint
        self._capabilities = have
        self.cache = self._usable_cache(cache_dir)
        self._model = self._read_model()
        #: Whether each compiled model was imported from the verified cache (no compilation), by hint.
        self.loaded_from_cache: dict[str, bool] = {}
        self._latency = self._compile("LATENCY")
        self._throughput: Any = None
        self._queue: Any = None
        self._results: list[list[np.ndarray] | None] = []
        self._latency_lock = threading.Lock()
        self._throughput_lock = threading.Lock()
        self._request = self._latency.create_infer_request()
        self._outputs = output_names(self._latency, tuple(package.manifest.outputs) or OUTPUTS)
        #: What most convolutions run in ("fp32", "bf16", "fp16", "int8"), and OpenVINO's count of each.
        self.executed_precision, self.runtime_precisions = executed_precision(self._latency)
        #: The convolutions' kernels by instruction-set family, e.g. {"amx": 25, "avx512": 14}.
        self.kernels = kernel_isas(self._latency)

    # -- loading ------------------------------------------------------------------------------
    def _usable_cache(self, cache_dir: str | os.PathLike[str] | bool | None) -> Path | None:
        """This file's cache folder (created 0700, checked), or None: off, or unusable (logged)."""
        if cache_dir is False or (cache_dir is None and cache_disabled()):
            return None
        if (cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike))) or cache_dir == "":
            raise BackendError(f"cache_dir={cache_dir!r} is not accepted: give a folder, None (the default "
                               "cache) or False (no cache)")
        root = Path(cache_dir) if cache_dir is not None else cache_root()
        return prepare_folder(root, cache_folder(self.record, self.version, root))

    def _key(self, hint: str) -> CacheKey:
        rows, cols = self.package.manifest.grid.size
        return CacheKey(source_path=self.record.path, source_sha256=self.record.sha256,
                        input_shape=(1, 1, rows, cols), openvino=self.version, device="CPU",
                        cpu=self._cpu_name(), capabilities=self._capabilities, precision=self.precision,
                        config=self._config(hint))

    def _cpu_name(self) -> str:
        try:
            return str(self._core.get_property("CPU", "FULL_DEVICE_NAME"))
        except Exception:  # noqa: BLE001 - informational; the capabilities are in the key as well
            return "unknown"

    def _read_model(self) -> Any:
        path = self.package.path(self.record)
        try:
            model = self._core.read_model(str(path))
            name = model.inputs[0].get_any_name()
            if name != self.package.manifest.input_name:
                raise BackendError(f"{self.record.path} takes input {name!r}, the manifest says "
                                   f"{self.package.manifest.input_name!r}")
            rows, cols = self.package.manifest.grid.size
            model.reshape({name: [1, 1, rows, cols]})  # static shapes: OpenVINO's fastest kernels
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"OpenVINO could not read {self.record.path}: {exc}") from exc
        return model

    def _config(self, hint: str) -> dict[str, Any]:
        # No CACHE_DIR: OpenVINO would import whatever blob it finds there, unverified.
        return {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": self.threads,
                "INFERENCE_PRECISION_HINT": self._hint}

    def _compile(self, hint: str) -> Any:
        """The compiled model for ``hint``: imported from the verified cache, else compiled (and cached)."""
        folder = self.cache
        key = self._key(hint) if folder is not None else None
        if folder is not None and key is not None:
            imported = self._import(folder, key)
            if imported is not None:
                self.loaded_from_cache[hint] = True
                return imported
        try:
            compiled = self._core.compile_model(self._model, "CPU", self._config(hint))
        except Exception as exc:
            raise BackendError(f"OpenVINO could not compile {self.record.path} for {self.precision} "
                               f"({hint.lower()} hint): {exc}") from exc
        executed, runtime = executed_precision(compiled)
        problem = execution_problem(compiled, self.precision, self._hint, executed, runtime)
        if problem is not None:
            raise BackendError(f"OpenVINO compiled {self.record.path} for {self.precision}, but {problem}; "
                               "use another precision or backend")
        self.loaded_from_cache[hint] = False
        if folder is not None and key is not None and executed != "unknown":  # cache only what is checkable
            try:
                blob = _exported(compiled)
            except Exception as exc:  # noqa: BLE001 - a model OpenVINO cannot export still runs, uncached
                log.warning("liverlesion: OpenVINO could not export the compiled %s (%s); it is not cached",
                            self.record.path, exc)
            else:
                write_entry(folder, key, blob, executed, runtime)
        return compiled

    def _import(self, folder: Path, key: CacheKey) -> Any:
        """The cached model for ``key`` once its files verify and it runs what its record says, else None."""
        entry = read_entry(folder, key)
        if entry is None:
            return None
        try:
            compiled = self._core.import_model(entry.blob, "CPU", dict(key.config))
        except Exception as exc:  # noqa: BLE001 - a blob OpenVINO refuses is rebuilt like a corrupt one
            log.warning("liverlesion: OpenVINO could not import the cached %s (%s); compiling it anew",
                        self.record.path, exc)
            return None
        executed, runtime = executed_precision(compiled)
        problem = execution_problem(compiled, self.precision, self._hint, executed, runtime)
        if problem is None and (executed, runtime) != (entry.executed_precision, entry.runtime_precisions):
            problem = (f"it executes {executed} {runtime}, its record says "
                       f"{entry.executed_precision} {entry.runtime_precisions}")
        if problem is None and executed == "unknown":
            problem = "what it executes cannot be read back"
        if problem is not None:
            log.warning("liverlesion: the cached %s for %s is not used: %s; compiling it anew",
                        self.record.path, self.precision, problem)
            return None
        return compiled

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import openvino as ov
        except ImportError:
            return False, f"OpenVINO is not installed: {ROW.install}"
        return True, f"OpenVINO {ov.get_version()} (CPU plugin)"

    # -- running ----------------------------------------------------------------------------------
    def model_file(self) -> tuple[str, int]:
        return self.record.path, int(self.record.size)

    def _run(self, hu: np.ndarray) -> dict[str, np.ndarray]:
        try:
            if len(hu) == 1:
                with self._latency_lock:
                    request = self._request
                    if request is None:
                        raise BackendError("the openvino backend was closed; load the model again")
                    request.infer({0: hu})
                    return {name: np.array(request.get_output_tensor(i).data, copy=True)
                            for i, name in enumerate(self._outputs)}
            with self._throughput_lock:
                return self._run_throughput(hu)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"OpenVINO failed running {self.record.path}: {exc}") from exc

    def _collect(self, request: Any, index: int) -> None:
        """AsyncInferQueue callback: copy a finished request's outputs out of its reused buffers."""
        self._results[index] = [np.array(request.get_output_tensor(i).data, copy=True)
                                for i in range(len(self._outputs))]

    def _run_throughput(self, hu: np.ndarray) -> dict[str, np.ndarray]:
        """A batch as asynchronous batch-1 requests on the throughput-hinted model's streams (lock held)."""
        if self._model is None:
            raise BackendError("the openvino backend was closed; load the model again")
        if self._queue is None:
            import openvino as ov

            self._throughput = self._compile("THROUGHPUT")
            self._queue = ov.AsyncInferQueue(self._throughput)  # one request per stream, reused
            self._queue.set_callback(self._collect)
        self._results = [None] * len(hu)
        try:
            for index in range(len(hu)):
                self._queue.start_async({0: hu[index:index + 1]}, index)
        finally:
            self._queue.wait_all()  # never leave requests in flight, even when starting one failed
        results = self._results
        if any(r is None for r in results):
            raise BackendError(f"OpenVINO lost {sum(r is None for r in results)} of {len(hu)} requests")
        return {name: np.concatenate([r[i] for r in results if r is not None])
                for i, name in enumerate(self._outputs)}

    @property
    def streams(self) -> dict[str, int]:
        """Parallel streams of each compiled model (the throughput one once a batch compiled it)."""
        models = {"LATENCY": self._latency, "THROUGHPUT": self._throughput}
        return {hint: int(m.get_property("NUM_STREAMS")) for hint, m in models.items() if m is not None}

    def _release(self) -> None:
        with self._latency_lock, self._throughput_lock:
            self._request = self._queue = None
            self._latency = self._throughput = self._model = None


def _exported(compiled: Any) -> bytes:
    """The compiled model's blob (``export_model`` gives bytes or a BytesIO, by OpenVINO version)."""
    blob = compiled.export_model()
    return bytes(blob.getvalue() if hasattr(blob, "getvalue") else blob)
