"""Carry a :class:`~.plan.BuildPlan` out with TensorRT, then record the engine in the package.

Deliberately thin: every decision is in the plan. The calls below exist in all the
TensorRT versions the plan accepts, or are used only where the plan says so.
Checked against NVIDIA/TensorRT's Python bindings (python/src/infer/pyCore.cpp at
8.5.2, 10.3.0, 10.13.3, 11.1) and the 11.4.1 release notes:

| call                                         | 8.5        | 10.x              | 11.x            |
|----------------------------------------------|------------|-------------------|-----------------|
| NetworkDefinitionCreationFlag.EXPLICIT_BATCH | required   | deprecated, no-op | removed         |
| NetworkDefinitionCreationFlag.STRONGLY_TYPED | absent     | yes (value 1)     | no-op (value 0) |
| BuilderFlag.FP16 / INT8                      | yes        | yes (unused here) | removed         |
| IInt8EntropyCalibrator2, int8_calibrator,    | yes        | deprecated (10.1) | removed         |
|   set_calibration_profile                    |            |                   |                 |
| BuilderFlag.VERSION_COMPATIBLE,              | absent     | yes               | yes             |
|   Runtime.engine_host_code_allowed           | (8.6+)     |                   |                 |
| BuilderFlag.GPU_FALLBACK, DLA_core,          | yes        | yes (DLA to 10.7) | DLA: 11.4.1+,   |
|   default_device_type, num_DLA_cores         |            |                   | AGX Orin only   |
| set_memory_pool_limit(WORKSPACE)             | yes        | yes               | yes             |
| create_optimization_profile, set_shape,      | yes        | yes               | yes             |
|   add_optimization_profile                   |            |                   |                 |
| create/set/get_timing_cache                  | yes        | yes               | yes             |
| Builder.build_serialized_network             | yes        | yes               | yes             |
| OnnxParser.parse_from_file, get_error        | yes        | yes               | yes             |
| deserialize_cuda_engine,                     | yes        | yes               | yes             |
|   create_execution_context                   |            |                   |                 |
| num_io_tensors, get_tensor_name/mode/dtype,  | yes (new)  | yes               | yes             |
|   get_tensor_profile_shape                   |            |                   |                 |
| set_input_shape, set_tensor_address,         | yes (new)  | yes               | yes             |
|   execute_async_v3                           |            |                   |                 |
| execute_async_v2, get_binding_index          | deprecated | removed           | removed         |
| ICudaEngine.device_memory_size / _v2         | size only  | both (v2: 10.1+)  | v2 only         |
| Builder.platform_has_fast_fp16               | yes        | yes               | removed         |
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from ..engine_tags import RUNTIME_TITLES, TENSORRT_RTX, TrtVersion, format_compute_capability
from ..errors import EngineError
from ..machine.gpu import detect_gpu
from ..package.store import file_record, sha256_file
from .int8_calibrator import CalibrationBatches, make_entropy_calibrator
from .plan import BuildPlan
from .records import EngineRecord, add_engine_record, make_record
from .versions import capturing_logger, import_runtime


def network_flags(enum: Any, names: Iterable[str]) -> int:
    """The ``create_network`` bit mask: ``1 << int(flag)`` per flag, since their values differ by version."""
    mask = 0
    for name in names:
        flag = getattr(enum, name, None)
        if flag is None:
            raise EngineError(f"this TensorRT has no NetworkDefinitionCreationFlag.{name}; plan it here")
        mask |= 1 << int(flag)
    return mask


def parse_layer_placement(lines: Iterable[str]) -> dict[str, int] | None:
    """How many layers TensorRT's build log lists on DLA and on GPU, or None when it lists none.

    TensorRT logs (INFO) "---------- Layers Running on DLA ----------" and "... on GPU"
    headers, each followed by "[DlaLayer] ..." / "[GpuLayer] ..." lines.
    """
    counts = {"dla": 0, "gpu": 0}
    seen = False
    for line in lines:
        if re.search(r"Layers [Rr]unning on (DLA|GPU)", line):
            seen = True
        tag = re.search(r"\[(Dla|Gpu)Layer\]", line)
        if tag:
            counts[tag.group(1).lower()] += 1
    return counts if seen else None


def _check_target(plan: BuildPlan, installed: TrtVersion) -> tuple[str, tuple[str, ...]]:
    """(GPU name, the compute capabilities it targets), after checking that this machine suits the plan.

    TensorRT builds on the GPU that will run the engine; TensorRT-RTX builds on any machine (ahead of
    time), so its GPU name is the build machine's GPU, or empty when it has none.
    """
    planned = TrtVersion.parse(plan.tensorrt)
    title = RUNTIME_TITLES.get(plan.runtime, plan.runtime)
    if planned.release != installed.release:
        raise EngineError(f"the plan is for {title} {planned}, this is {installed}: plan again here")
    gpu = detect_gpu()
    if plan.runtime == TENSORRT_RTX:
        return ("" if gpu is None else gpu.name), plan.targets
    if gpu is None:
        raise EngineError("building an engine needs the NVIDIA GPU that will run it, and none was found")
    if gpu.cc_text != plan.compute_capability:
        raise EngineError(f"the plan is for compute capability {plan.compute_capability}, this GPU "
                          f"({gpu.name}) is {gpu.cc_text}: build on the GPU model that runs the engine")
    return gpu.name, (gpu.cc_text,)  # what the builder targets: the GPU it builds on


def _rtx_targets(trt: Any, config: Any, plan: BuildPlan) -> tuple[str, ...]:
    """Set TensorRT-RTX's target compute capabilities; returns those the builder config then holds."""
    if plan.default_targets:
        return plan.targets  # left to TensorRT-RTX, which keeps its portable set internal
    config.num_compute_capabilities = len(plan.targets)
    for index, text in enumerate(plan.targets):
        major, minor = text.split(".")
        value = getattr(trt.ComputeCapability, f"SM{major}{minor}", None)
        if value is None or not config.set_compute_capability(value, index):
            raise EngineError(f"TensorRT-RTX {trt.__version__} cannot target compute capability {text}")
    held = []
    for index in range(config.num_compute_capabilities):
        value = int(config.get_compute_capability(index))  # SM86 is 86, SM120 is 120
        held.append(format_compute_capability((value // 10, value % 10)))
    return tuple(held)


def build_engine(root: str | Path, plan: BuildPlan, *, log: Callable[[str], None] = print,
                 memory: str | None = None) -> EngineRecord:
    """Build ``plan`` into ``root/plan.engine_file`` and record it in the manifest."""
    trt: Any = import_runtime(plan.runtime)
    title = RUNTIME_TITLES.get(plan.runtime, plan.runtime)

    root = Path(root)
    installed = TrtVersion.parse(trt.__version__)
    gpu_name, targets = _check_target(plan, installed)
    onnx_path = root / plan.onnx
    if not onnx_path.is_file() or sha256_file(onnx_path) != plan.onnx_sha256:
        raise EngineError(f"{onnx_path} is missing or changed since the plan was made; plan again")
    for line in plan.warnings:
        log(f"warning: {line}")

    logger = capturing_logger(trt, log)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt.NetworkDefinitionCreationFlag, plan.network_flags))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"{title} {installed} could not parse {plan.onnx}: {errors}")
    config = builder.create_builder_config()
    if plan.runtime == TENSORRT_RTX:
        targets = _rtx_targets(trt, config, plan)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    config.profiling_verbosity = getattr(trt.ProfilingVerbosity, plan.profiling_verbosity)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for shapes in plan.profiles:  # the slice graph has four inputs, the fused graph one
        profile.set_shape(shapes.input, trt.Dims(list(shapes.min)), trt.Dims(list(shapes.opt)),
                          trt.Dims(list(shapes.max)))
    config.add_optimization_profile(profile)
    if plan.dla_core is not None:
        if builder.num_DLA_cores <= plan.dla_core:
            raise EngineError(f"DLA core {plan.dla_core} was asked for; this module has "
                              f"{builder.num_DLA_cores} DLA cores (Orin Nano has none)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
    timing_path = Path(plan.timing_cache) if plan.timing_cache else None
    if timing_path is not None:
        cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
        if not config.set_timing_cache(cache, False):
            log(f"warning: timing cache {timing_path} is from another GPU or TensorRT; building without it")

    with contextlib.ExitStack() as stack:
        if plan.calibrator is not None:
            calib = plan.calibrator
            if sha256_file(root / calib.slices) != calib.slices_sha256:
                raise EngineError(f"{calib.slices} changed since the plan was made; plan again")
            batches = CalibrationBatches.from_file(root / calib.slices, calib.batch_size,
                                                   grid_size=(plan.profile.max[2], plan.profile.max[3]))
            from ..machine.cuda_memory import open_cuda_memory

            cuda = open_cuda_memory(memory)
            stack.callback(cuda.close)
            stack.enter_context(cuda.activate())
            cache_file = root / calib.cache
            if not calib.reuse_cache:
                cache_file.unlink(missing_ok=True)  # written by another TensorRT, GPU or slice set
            # Keep a Python reference for the whole build: the config holds only TensorRT's pointer to it.
            calibrator = make_entropy_calibrator(
                trt, batches, cache_file, cuda, input_name=plan.profile.input, reuse_cache=calib.reuse_cache,
                cache_sha256=calib.cache_sha256, log=log, kind=calib.kind)
            config.int8_calibrator = calibrator
            calib_profile = builder.create_optimization_profile()
            shape = trt.Dims(list(calib.profile))  # calibration runs at this one shape
            calib_profile.set_shape(plan.profile.input, shape, shape, shape)
            config.set_calibration_profile(calib_profile)
        log(f"building {plan.engine_file} ({title} {installed}, {plan.code_path}, {plan.precision}, for "
            f"{', '.join(targets)})")
        start = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        seconds = time.perf_counter() - start
    if serialized is None:
        raise EngineError(f"{title} failed to build the engine (see its log above); on an 8 GB Jetson try a "
                          "smaller --workspace-mb, add swap, or close other GPU programs")

    engine_path = root / plan.engine_file
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(engine_path, bytes(memoryview(serialized)))
    if timing_path is not None:
        timing_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(timing_path, bytes(memoryview(config.get_timing_cache().serialize())))
    extra_files = []
    if plan.calibrator is not None and (root / plan.calibrator.cache).is_file():
        extra_files.append(file_record(root, plan.calibrator.cache, "calibration-cache", None,
                                       tensorrt=installed.short(), compute_capability=plan.compute_capability,
                                       slices_sha256=plan.calibrator.slices_sha256))
    placement = parse_layer_placement(logger.lines)
    record = make_record(root, plan.engine_file, plan.to_dict(), gpu_name=gpu_name,
                         build_seconds=round(seconds, 2), placement=placement, targets=targets)
    add_engine_record(root, record, extra_files)
    if placement is not None and plan.dla_core is not None:
        log(f"layer placement: {placement['dla']} on DLA, {placement['gpu']} on GPU")
    return record
