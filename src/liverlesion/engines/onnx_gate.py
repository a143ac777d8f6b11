"""NVIDIA's ONNX parser and builder as a gate: does TensorRT (or TensorRT-RTX) accept this ONNX file?

:func:`check_onnx_for_tensorrt` parses a file into a strongly typed network, walks its
layers (convolutions, and those fed by a DequantizeLinear, which TensorRT fuses into an
INT8 convolution) and builds it once for the package's input profile. Only the parser and
the builder run: no ``Runtime``, no deserialisation, so TensorRT-RTX does it on a CPU.
Full TensorRT 10.x/11.x is used when installed (it is what Jetson and data-centre GPUs run),
else TensorRT-RTX; TensorRT 8.x builds no strongly typed networks, and is not used here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine_tags import TENSORRT, TENSORRT_RTX, TrtVersion
from ..errors import EngineError, InputError, install_hint
from ..grid import ModelGrid
from ..machine.runtimes import tensorrt_rtx_version, tensorrt_version
from .plan import DEFAULT_MAX_BATCH
from .versions import capturing_logger, import_runtime, installed_runtime_version

#: min, opt and max shapes of one input in an optimisation profile.
Profile = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
#: Errors kept in a verdict (a refused Q/DQ graph can report one per node).
MAX_ERRORS = 5
#: Characters kept of each error: NVIDIA's messages repeat the node and the source location.
ERROR_CHARS = 600
#: Lines TensorRT-RTX adds to a parser error on a machine without a CUDA driver: about the machine, not the file.
_DRIVER_NOISE = ("CUDA driver version is insufficient", "cudaError 35", "catchCudaError")


@dataclass(frozen=True)
class ParserVerdict:
    """What NVIDIA's parser and builder made of one ONNX file."""

    runtime: str  # "tensorrt-rtx" or "tensorrt"
    version: str  # of that runtime (TensorRT-RTX has its own 1.x numbering)
    parser_version: int  # trt.get_nv_onnx_parser_version(), as NVIDIA encodes it
    accepted: bool  # the parser made a network of the whole file
    errors: tuple[str, ...]
    layers: int
    convolutions: int  # convolution and deconvolution layers
    int8_convolutions: int  # of those, the ones whose input 0 a DequantizeLinear produces
    built: bool  # the builder made an engine of the network
    build_seconds: float | None
    engine_bytes: int | None

    @property
    def passed(self) -> bool:
        """Whether the file is fit for TensorRT: parsed and built."""
        return self.accepted and self.built

    def to_record(self) -> dict[str, Any]:
        """The JSON-safe record a package file carries (``nvidia_parser``; see docs/model-package.md)."""
        return {"runtime": self.runtime, "version": self.version, "parser_version": self.parser_version,
                "layers": self.layers, "convolutions": self.convolutions,
                "int8_convolutions": self.int8_convolutions, "built": self.built,
                "build_seconds": self.build_seconds}


def _full_tensorrt() -> TrtVersion | None:
    """The installed full TensorRT's version, or None."""
    version = tensorrt_version()
    return None if version is None else TrtVersion.parse(version)


def nvidia_parser_available() -> str | None:
    """Which NVIDIA runtime the gate would use here ("tensorrt" or "tensorrt-rtx"), or None."""
    full = _full_tensorrt()
    if full is not None and full.major >= 10:
        return TENSORRT
    return TENSORRT_RTX if tensorrt_rtx_version() is not None else None


def nvidia_parser_missing_reason() -> str:
    """Why :func:`nvidia_parser_available` finds none, as one sentence with the install hint."""
    full = _full_tensorrt()
    if full is not None and full.major < 10:
        return (f"TensorRT {full} is installed, but it builds no strongly typed networks (10.x and newer do), "
                f"and TensorRT-RTX is not installed ({install_hint('tensorrt-rtx')})")
    return f"neither TensorRT nor TensorRT-RTX is installed ({install_hint('tensorrt-rtx')})"


def _clean(message: str) -> str:
    """An error without the no-driver lines, cut to :data:`ERROR_CHARS`."""
    kept = [line for line in message.splitlines() if line.strip() and not any(n in line for n in _DRIVER_NOISE)]
    text = "\n".join(kept) or message.strip()
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS - 3] + "..."


def _errors(messages: list[str]) -> tuple[str, ...]:
    cleaned = [_clean(m) for m in messages]
    return tuple(dict.fromkeys(m for m in cleaned if m))[:MAX_ERRORS]


def count_convolutions(trt: Any, network: Any) -> tuple[int, int, int]:
    """(layers, convolutions, convolutions whose input 0 a DEQUANTIZE layer produces) of a parsed network."""
    kinds = {trt.LayerType.CONVOLUTION, trt.LayerType.DECONVOLUTION}
    producer: dict[str, Any] = {}
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    for layer in layers:
        for j in range(layer.num_outputs):
            producer[layer.get_output(j).name] = layer.type
    convolutions = [layer for layer in layers if layer.type in kinds]
    int8 = sum(1 for layer in convolutions
               if layer.get_input(0) is not None and producer.get(layer.get_input(0).name) == trt.LayerType.DEQUANTIZE)
    return len(layers), len(convolutions), int8


def _grid_size(grid: ModelGrid | tuple[int, int]) -> tuple[int, int]:
    size = grid.size if isinstance(grid, ModelGrid) else tuple(grid)
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise InputError(f"grid must be a ModelGrid or (rows, cols) of positive integers, got {grid!r}")
    return int(size[0]), int(size[1])


def check_onnx_for_tensorrt(path: str | Path, input_name: str, grid: ModelGrid | tuple[int, int],
                            max_batch: int = DEFAULT_MAX_BATCH, *, runtime: str | None = None,
                            profiles: Mapping[str, Profile] | None = None) -> ParserVerdict:
    """Parse ``path`` with NVIDIA's ONNX parser and build it for batches 1..``max_batch`` of ``grid``.

    ``profiles``: input name -> (min, opt, max) shapes, for a graph of several inputs (the slice graph:
    ``engines.plan.slice_graph_profiles``); ``input_name`` and ``grid`` then name nothing but the model.
    ``runtime`` None: :func:`nvidia_parser_available`'s choice. A file the parser or builder
    refuses gives a verdict that did not pass; EngineError when no NVIDIA runtime can run here.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} is not a file; give the ONNX file to check")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise InputError(f"max_batch must be a positive integer, got {max_batch!r}")
    rows, cols = _grid_size(grid)
    runtime = runtime or nvidia_parser_available()
    if runtime is None:
        raise EngineError(f"NVIDIA's ONNX parser cannot run here: {nvidia_parser_missing_reason()}")
    if runtime not in (TENSORRT, TENSORRT_RTX):
        raise InputError(f"unknown NVIDIA runtime {runtime!r}; accepted: {TENSORRT}, {TENSORRT_RTX}")
    trt = import_runtime(runtime)
    version = str(installed_runtime_version(runtime))
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise EngineError(f"{runtime} {version} has no strongly typed networks; the gate needs TensorRT 10.x or "
                          "newer, or TensorRT-RTX")
    logger = capturing_logger(trt)
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # noqa: BLE001 - pybind11 raises TypeError when the builder cannot start
        raise EngineError(f"{runtime} {version} could not start its builder here ({exc}); full TensorRT needs a "
                          "GPU and its driver, TensorRT-RTX parses and builds without one") from None
    # One parser and builder per call, released on return: TensorRT keeps the first live builder's logger.
    network = builder.create_network(1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    accepted = bool(parser.parse_from_file(str(path)))
    parser_errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    common: dict[str, Any] = {"runtime": runtime, "version": version,
                              "parser_version": int(trt.get_nv_onnx_parser_version())}
    if not accepted:
        return ParserVerdict(**common, accepted=False, errors=_errors(parser_errors or logger.errors), layers=0,
                             convolutions=0, int8_convolutions=0, built=False, build_seconds=None,
                             engine_bytes=None)
    layers, convolutions, int8 = count_convolutions(trt, network)
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    shapes = dict(profiles) if profiles is not None else \
        {input_name: ((1, 1, rows, cols), (1, 1, rows, cols), (max_batch, 1, rows, cols))}
    missing = [name for name in inputs if name not in shapes] + [name for name in shapes if name not in inputs]
    if missing:
        return ParserVerdict(**common, accepted=True, layers=layers, convolutions=convolutions,
                             int8_convolutions=int8, built=False, build_seconds=None, engine_bytes=None,
                             errors=(f"the graph's inputs {inputs} are not the ones it is built for: "
                                     f"{list(shapes)}",))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, tuple(low), tuple(opt), tuple(high))
    config.add_optimization_profile(profile)
    start = time.perf_counter()
    blob = builder.build_serialized_network(network, config)
    seconds = round(time.perf_counter() - start, 2)
    built = blob is not None
    errors = () if built else (_errors(logger.errors) or ("the builder returned no engine and logged no error",))
    return ParserVerdict(**common, accepted=True, errors=errors, layers=layers, convolutions=convolutions,
                         int8_convolutions=int8, built=built, build_seconds=seconds if built else None,
                         engine_bytes=int(blob.nbytes) if built else None)
