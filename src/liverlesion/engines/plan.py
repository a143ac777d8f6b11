"""What to build: every TensorRT decision as plain data, from (TensorRT version, options, manifest).

:func:`plan_build` decides the code path, the ONNX file, the network and builder
flags, the optimisation profile, memory limits, DLA, calibration and the engine
file name; :mod:`.build` only carries the plan out. Refusals are EngineErrors that
say what to change. Flag names are the attribute names of TensorRT's enums; the
builder turns network flags into a bit mask with ``1 << int(flag)`` because
``STRONGLY_TYPED`` is 1 in TensorRT 10 and 0 in TensorRT 11.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..engine_tags import (
    ENGINE_RUNTIMES,
    TENSORRT,
    TENSORRT_RTX,
    TrtVersion,
    format_compute_capability,
    parse_compute_capability,
    sm_tag,
    sm_tags,
)
from ..errors import EngineError, InputError
from ..package import FileRecord, Manifest
from ..package.accuracy import GPU_INT8_FORM
from ..package.manifest import MODEL_GRID_GRAPH, SLICE_GRAPH, SLICE_ROLE
from .versions import (
    BUILDER_FLAGS,
    CHECKED_RELEASES,
    RTX_AHEAD_OF_TIME,
    RTX_CHECKED_RELEASES,
    RTX_DEFAULT_TARGETS,
    SMALL_JETSONS,
    STRONGLY_TYPED,
    code_path,
    dla_refusal,
    rtx_target_refusal,
    version_compatible_refusal,
)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_MAX_BATCH = 8
DEFAULT_WORKSPACE_MB = 1024  # an 8 GB Orin NX builds with this; more starves the CPU side of shared memory
DEFAULT_CALIBRATION_BATCH = 8
ENGINES_DIR = "engines"
INT8_FORM = GPU_INT8_FORM  # TensorRT builds from the symmetric Q/DQ form


#: Sides (pixels) of the stored slices a slice graph's engines are built for: min, opt, max (issue 14).
SLICE_SIDES = (256, 512, 1024)


def slice_graph_profiles(max_batch: int = DEFAULT_MAX_BATCH, sides: tuple[int, int, int] = SLICE_SIDES
                         ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """The slice graph's inputs -> (min, opt, max) shapes: square sides from ``sides``, batch 1..``max_batch``."""
    low, opt, high = sides
    if not 2 <= low <= opt <= high:
        raise InputError(f"slice sides {sides!r} are not accepted: give (min, opt, max) with 2 <= min <= opt <= max")
    per_slice: dict[str, tuple[int, ...]] = {"rescale": (2,), "theta": (2, 3), "theta_back": (2, 3)}
    profiles: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
        "pixels": ((1, 1, low, low), (1, 1, opt, opt), (max_batch, 1, high, high))}
    for name, tail in per_slice.items():
        profiles[name] = ((1, *tail), (1, *tail), (max_batch, *tail))
    return profiles


@dataclass(frozen=True)
class BuildOptions:
    """What the user asks for; defaults suit a Jetson building for latency.

    TensorRT builds for one GPU, ``compute_capability``; TensorRT-RTX (``runtime="tensorrt-rtx"``) builds on
    any machine for ``compute_capabilities`` (none: its portable default set).
    """

    precision: str
    compute_capability: tuple[int, int] | str | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    opt_batch: int = 1
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    dla_core: int | None = None
    timing_cache: str | None = None
    version_compatible: bool = False
    calibration_batch: int = DEFAULT_CALIBRATION_BATCH
    #: Reuse a calibration cache recorded for this TensorRT, GPU and slice set (False: calibrate anew; a
    #: pinned load does so, since caches are device-built and outside the package digest).
    reuse_calibration_cache: bool = True
    runtime: str = TENSORRT
    compute_capabilities: tuple[tuple[int, int] | str, ...] = ()
    #: "model-grid" (the fused graph) or "slice" (its slice graph: the stored slice in, resampling inside).
    graph: str = MODEL_GRID_GRAPH
    #: Slice graph only: (min, opt, max) sides of the stored slices the engine runs.
    slice_sides: tuple[int, int, int] = SLICE_SIDES


@dataclass(frozen=True)
class ShapeProfile:
    """One optimisation profile: the input's min / opt / max shapes."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def _input_profiles(manifest: Manifest, options: BuildOptions, batches: tuple[int, int, int]
                    ) -> tuple[ShapeProfile, tuple[ShapeProfile, ...]]:
    """The main input's profile and the others' (the slice graph's rescale and affines) for batches (min, opt, max)."""
    low, opt, high = batches
    if options.graph == SLICE_GRAPH:
        shapes = slice_graph_profiles(high, tuple(options.slice_sides))  # type: ignore[arg-type]
        made = [ShapeProfile(input=name, min=(low, *mins[1:]), opt=(opt, *opts[1:]), max=maxs)
                for name, (mins, opts, maxs) in shapes.items()]
        return made[0], tuple(made[1:])
    rows, cols = manifest.grid.size
    shape = (1, int(rows), int(cols))  # HU in, one channel, on the model grid
    return ShapeProfile(input=manifest.input_name, min=(low, *shape), opt=(opt, *shape), max=(high, *shape)), ()


def _check_graph(options: BuildOptions, path: str) -> None:
    """Refuse a slice-graph build where it cannot be right; EngineError says what to use instead."""
    if options.graph not in (MODEL_GRID_GRAPH, SLICE_GRAPH):
        raise EngineError(f"graph {options.graph!r} is not accepted; give {MODEL_GRID_GRAPH} or {SLICE_GRAPH}")
    if options.graph != SLICE_GRAPH:
        return
    if path == BUILDER_FLAGS:
        raise EngineError("TensorRT 8.x builds from precision flags, which let its layers (the resampling's "
                          "sample coordinates among them) run in FP16: coordinates of a 512-pixel slice lose "
                          "half a pixel there. JetPack 5 keeps the host path: build --graph model-grid")
    if options.dla_core is not None:
        raise EngineError("the DLA runs no GridSample and needs static shapes: build the slice graph for the GPU "
                          "(drop --dla-core), or the model-grid graph for the DLA")


@dataclass(frozen=True)
class CalibratorPlan:
    """TensorRT 8.x implicit INT8: a calibrator over the package's slices.

    ``kind`` follows the method the package's Q/DQ file was calibrated with, so TensorRT
    8.5 and 10+ quantize alike: "minmax" (IInt8MinMaxCalibrator, the export default,
    since entropy clipped lesion activations on our models) or "entropy2"
    (IInt8EntropyCalibrator2).
    """

    batch_size: int
    slices: str
    slices_sha256: str
    cache: str
    reuse_cache: bool
    profile: tuple[int, ...]
    kind: str = "entropy2"
    #: The reused cache's manifest record: its bytes are checked against it before TensorRT reads them.
    cache_sha256: str | None = None


@dataclass(frozen=True)
class BuildPlan:
    """Everything the builder does, as data (``to_dict`` is JSON)."""

    tensorrt: str
    code_path: str
    precision: str
    compute_capability: str
    onnx: str
    onnx_sha256: str
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    profile: ShapeProfile
    workspace_bytes: int
    device: str
    dla_core: int | None
    timing_cache: str | None
    version_compatible: bool
    calibrator: CalibratorPlan | None
    engine_file: str
    profiling_verbosity: str = "DETAILED"
    warnings: tuple[str, ...] = field(default=())
    #: "tensorrt" or "tensorrt-rtx"; ``tensorrt`` above is that runtime's version.
    runtime: str = TENSORRT
    #: Every compute capability the engine is built for (TensorRT: the one GPU; TensorRT-RTX: its targets).
    targets: tuple[str, ...] = ()
    #: TensorRT-RTX only: no target was named, so the builder used its own portable default set.
    default_targets: bool = False
    #: The graph built from ("model-grid" or "slice") and, for the slice graph, its other inputs' profiles.
    graph: str = MODEL_GRID_GRAPH
    extra_profiles: tuple[ShapeProfile, ...] = ()

    @property
    def profiles(self) -> tuple[ShapeProfile, ...]:
        """Every input's profile, the main one (``hu`` or ``pixels``) first."""
        return (self.profile, *self.extra_profiles)

    @property
    def max_batch(self) -> int:
        return self.profile.max[0]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)

        def plain(value: Any) -> Any:  # tuples -> lists, so that the dict equals its JSON round trip
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        return dict(plain(data))


def _positive(name: str, value: Any, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise EngineError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _onnx_for(manifest: Manifest, path: str, precision: str, graph: str = MODEL_GRID_GRAPH) -> FileRecord:
    """The ONNX file the code path needs for this precision and graph, or an EngineError naming what exists."""
    role = SLICE_ROLE if graph == SLICE_GRAPH else "onnx"
    if graph == SLICE_GRAPH and not manifest.onnx_files(SLICE_ROLE):
        raise EngineError("an engine of the slice graph needs the package's slice graphs: run liverlesion "
                          "slice-graphs PACKAGE first (or build the model-grid graph: --graph model-grid)")
    if path == BUILDER_FLAGS:  # TensorRT 8.x sets the precision with flags, on the float32 graph
        record = manifest.find(role=role, precision="fp32")
        wanted = "the float32 ONNX (precision fp32)"
    elif precision == "int8":
        record = manifest.find(role=role, precision="int8", form=INT8_FORM)
        wanted = (f"an INT8 Q/DQ ONNX (precision int8, form {INT8_FORM!r}); run `liverlesion quantize` on "
                  "the package")
    elif precision == "fp16":
        record = manifest.find(role=role, precision="fp16")
        wanted = ("a float16 ONNX (precision fp16, model_fp16.onnx); re-export the package with "
                  "`liverlesion export`")
    else:
        record = manifest.find(role=role, precision="fp32")
        wanted = "the float32 ONNX (precision fp32)"
    if record is None:
        have = ", ".join(f"{f.path} ({f.precision}, form {f.extra.get('form', '?')})"
                         for f in manifest.onnx_files(role)) or "none"
        raise EngineError(f"a {precision} engine on the {path} path needs {wanted}; the package has: {have}")
    return record


def _calibrator(manifest: Manifest, version: TrtVersion, cc: tuple[int, int], options: BuildOptions,
                shape: tuple[int, int, int], arch: str) -> CalibratorPlan:
    slices = manifest.find(role="calibration")
    if slices is None:
        raise EngineError("an int8 engine with TensorRT 8.x calibrates on the package's calibration slices "
                          "(role 'calibration', calibration/slices.npy), and this package has none: "
                          "re-export it with calibration data, or build fp16")
    batch = _positive("calibration batch", options.calibration_batch)
    cache = f"{ENGINES_DIR}/{arch}_{sm_tag(cc)}_trt{version.short()}.calib"
    recorded = next((f for f in manifest.files if f.path == cache and f.role == "calibration-cache"), None)
    # A cache is only valid for the TensorRT and GPU that wrote it (TensorRT#3612) and for these slices.
    reuse = bool(options.reuse_calibration_cache and recorded
                 and recorded.extra.get("tensorrt") == version.short()
                 and recorded.extra.get("compute_capability") == format_compute_capability(cc)
                 and recorded.extra.get("slices_sha256") == slices.sha256)
    calibration = manifest.calibration
    method = calibration.method if calibration is not None and calibration.method is not None else "minmax"
    return CalibratorPlan(batch_size=batch, slices=slices.path, slices_sha256=slices.sha256, cache=cache,
                          reuse_cache=reuse, profile=(batch, *shape),
                          kind="entropy2" if method == "entropy" else "minmax",
                          cache_sha256=recorded.sha256 if reuse and recorded is not None else None)


def engine_file_name(arch: str, precision: str, cc: tuple[int, int], version: TrtVersion,
                     dla_core: int | None = None, version_compatible: bool = False) -> str:
    """e.g. ``engines/joint_int8_sm87_trt10.3.0.engine`` (``_dla0`` / ``_vc`` when used)."""
    safe = re.sub(r"[^A-Za-z0-9-]+", "-", arch).strip("-") or "model"
    suffix = (f"_dla{dla_core}" if dla_core is not None else "") + ("_vc" if version_compatible else "")
    return f"{ENGINES_DIR}/{safe}_{precision}_{sm_tag(cc)}_trt{version.short()}{suffix}.engine"


def rtx_engine_file_name(arch: str, precision: str, targets: tuple[tuple[int, int], ...], version: TrtVersion,
                         default_targets: bool) -> str:
    """e.g. ``engines/joint_fp16_sm86-sm120_rtx1.7.1.engine`` (``portable`` for TensorRT-RTX's default set)."""
    safe = re.sub(r"[^A-Za-z0-9-]+", "-", arch).strip("-") or "model"
    where = "portable" if default_targets else sm_tags(targets)
    return f"{ENGINES_DIR}/{safe}_{precision}_{where}_rtx{version.short()}.engine"


def _plan_rtx(version: TrtVersion, options: BuildOptions, manifest: Manifest) -> BuildPlan:
    """TensorRT-RTX: strongly typed from the precision's own ONNX, ahead of time for named GPU families."""
    if version.major < 1:
        raise EngineError(f"TensorRT-RTX {version} is not a release liverlesion knows; it builds with 1.x")
    refused = {"dla_core": "TensorRT-RTX has no DLA (a Jetson feature); drop --dla-core",
               "version_compatible": "TensorRT-RTX cannot build version-compatible engines (it ships no lean "
                                     "runtime); drop --version-compatible",
               "timing_cache": "TensorRT-RTX builds ahead of time without timing kernels, and a timing cache "
                               "makes it query a GPU; drop --timing-cache"}
    asked = {"dla_core": options.dla_core is not None, "version_compatible": bool(options.version_compatible),
             "timing_cache": options.timing_cache is not None}
    for name, reason in refused.items():
        if asked[name]:
            raise EngineError(reason)
    named = list(options.compute_capabilities)
    if not named and options.compute_capability is not None:
        named = [options.compute_capability]
    targets = tuple(dict.fromkeys(parse_compute_capability(c) for c in named))  # in order, no repeats
    for cc in targets:
        refusal = rtx_target_refusal(cc)
        if refusal:
            raise EngineError(refusal)
    default = not targets
    warnings: list[str] = []
    if version.major > 1 or (version.major == 1 and version.release[:2] > (1, 7)):
        warnings.append(f"TensorRT-RTX {version} is newer than the releases liverlesion was checked against "
                        f"({', '.join(RTX_CHECKED_RELEASES)})")
    if default:
        targets = RTX_DEFAULT_TARGETS
        warnings.append("no --compute-capability given: built for TensorRT-RTX's portable set ("
                        f"{', '.join(format_compute_capability(c) for c in targets)}); name the fleet's GPUs "
                        "(e.g. 8.6 8.9 12.0, or 7.5 for Turing) for a smaller engine")
    if options.precision == "int8":
        warnings.append("TensorRT-RTX lists INT8 as weight-only GEMM: the engine keeps int8 weights, and whether "
                        "its Q/DQ convolutions run as INT8 kernels is decided at JIT time on the GPU")
        if (7, 5) in targets:
            warnings.append("Turing (7.5) has no INT8 in TensorRT-RTX's support matrix: build fp16 for it")
    max_batch = _positive("max batch", options.max_batch)
    opt_batch = _positive("opt batch", options.opt_batch)
    if opt_batch > max_batch:
        raise EngineError(f"opt batch {opt_batch} is larger than max batch {max_batch}")
    workspace_mb = _positive("workspace (MiB)", options.workspace_mb, minimum=16)
    _check_graph(options, RTX_AHEAD_OF_TIME)
    onnx = _onnx_for(manifest, RTX_AHEAD_OF_TIME, options.precision, options.graph)
    profile, extra_profiles = _input_profiles(manifest, options, (1, opt_batch, max_batch))
    arch = manifest.arch if options.graph == MODEL_GRID_GRAPH else f"{manifest.arch}_slice"
    return BuildPlan(
        tensorrt=str(version), code_path=RTX_AHEAD_OF_TIME, precision=options.precision,
        compute_capability=format_compute_capability(targets[0]), onnx=onnx.path, onnx_sha256=onnx.sha256,
        network_flags=("STRONGLY_TYPED",), builder_flags=(),
        profile=profile, extra_profiles=extra_profiles,
        workspace_bytes=workspace_mb * 2**20, device="GPU", dla_core=None, timing_cache=None,
        version_compatible=False, calibrator=None,
        engine_file=rtx_engine_file_name(arch, options.precision, targets, version, default),
        warnings=tuple(warnings), runtime=TENSORRT_RTX,
        targets=tuple(format_compute_capability(c) for c in targets), default_targets=default, graph=options.graph)


def plan_build(trt_version: str, options: BuildOptions, manifest: Manifest) -> BuildPlan:
    """Decide how to build the engine; EngineError when the request cannot be met.

    ``trt_version`` is the version of ``options.runtime``: TensorRT's (8.5 .. 11.x) or TensorRT-RTX's (1.x),
    never compared with the other's table.
    """
    if options.runtime not in ENGINE_RUNTIMES:
        raise EngineError(f"runtime {options.runtime!r} is not an engine runtime; accepted: "
                          f"{', '.join(ENGINE_RUNTIMES)}")
    version = TrtVersion.parse(trt_version)
    if options.precision not in PRECISIONS:
        raise EngineError(f"precision {options.precision!r} is not buildable; accepted: "
                          f"{', '.join(PRECISIONS)}")
    if options.runtime == TENSORRT_RTX:
        return _plan_rtx(version, options, manifest)
    if options.compute_capabilities and options.compute_capability is None and len(options.compute_capabilities) == 1:
        options = replace(options, compute_capability=options.compute_capabilities[0])
    if options.compute_capability is None or len(options.compute_capabilities) > 1:
        raise EngineError("a TensorRT engine is built for one GPU: give its compute capability (e.g. 8.7); "
                          "TensorRT-RTX (--runtime tensorrt-rtx) builds for several at once")
    path = code_path(version)
    cc = parse_compute_capability(options.compute_capability)
    max_batch = _positive("max batch", options.max_batch)
    opt_batch = _positive("opt batch", options.opt_batch)
    if opt_batch > max_batch:
        raise EngineError(f"opt batch {opt_batch} is larger than max batch {max_batch}")
    workspace_mb = _positive("workspace (MiB)", options.workspace_mb, minimum=16)
    warnings: list[str] = []

    _check_graph(options, path)
    onnx = _onnx_for(manifest, path, options.precision, options.graph)
    rows, cols = manifest.grid.size
    shape = (1, int(rows), int(cols))  # HU in, one channel, on the model grid (the calibrator's shape)
    network_flags = ("EXPLICIT_BATCH",) if path == BUILDER_FLAGS else ("STRONGLY_TYPED",)
    builder_flags: list[str] = []
    if path == BUILDER_FLAGS and options.precision == "fp16":
        builder_flags.append("FP16")
    elif path == BUILDER_FLAGS and options.precision == "int8":
        builder_flags += ["INT8", "FP16"]  # layers left unquantised run in FP16, as trtexec --int8 --fp16
    if version.major > 11:
        warnings.append(f"TensorRT {version} is newer than the releases liverlesion was checked against "
                        f"({', '.join(CHECKED_RELEASES)}); building it strongly typed, as for 10.x and 11.x")

    min_batch = 1
    device = "GPU"
    if options.dla_core is not None:
        core = _positive("DLA core", options.dla_core, minimum=0)
        if options.precision == "fp32":
            raise EngineError("DLA runs FP16 and INT8 only: build --precision fp16 or int8 with --dla-core, "
                              "or drop --dla-core for an fp32 GPU engine")
        reason = dla_refusal(version, cc)
        if reason:
            raise EngineError(f"cannot use DLA core {core}: {reason}; drop --dla-core to build for the GPU")
        if options.version_compatible:
            raise EngineError("version-compatible engines (lean runtime) cannot use DLA; drop one of "
                              "--version-compatible or --dla-core")
        builder_flags.append("GPU_FALLBACK")
        device = "DLA"
        # DLA needs static shapes: one batch size for min, opt and max.
        if max_batch != opt_batch:
            warnings.append(f"DLA needs static shapes: the profile is fixed at batch {opt_batch} "
                            f"(--opt-batch), not 1..{max_batch}; more is refused, fewer are padded")
        min_batch = max_batch = opt_batch
        warnings.append("GPU fallback is silent: layers the DLA cannot run move to the GPU without an error; "
                        "build-engine reports the placement TensorRT logs ('Layers Running on DLA/GPU')")
        if path == STRONGLY_TYPED and options.precision == "int8":
            warnings.append("Q/DQ INT8 layers the DLA does not accept fall back to the GPU: check placement")
    if options.version_compatible:
        reason = version_compatible_refusal(version)
        if reason:
            raise EngineError(f"{reason}; drop --version-compatible")
        builder_flags.append("VERSION_COMPATIBLE")
        warnings.append("version-compatible engines embed a lean runtime and may run slower")
    if cc in SMALL_JETSONS and workspace_mb > 2 * DEFAULT_WORKSPACE_MB:
        warnings.append(f"a {workspace_mb} MiB workspace on a Jetson ({sm_tag(cc)}) competes with the CPU "
                        "for shared memory; 8 GB modules need swap or a smaller --workspace-mb")

    calibrator = None
    if path == BUILDER_FLAGS and options.precision == "int8":
        calibrator = _calibrator(manifest, version, cc, options, shape, manifest.arch)

    profile, extra_profiles = _input_profiles(manifest, options, (min_batch, opt_batch, max_batch))
    arch = manifest.arch if options.graph == MODEL_GRID_GRAPH else f"{manifest.arch}_slice"
    return BuildPlan(
        tensorrt=str(version), code_path=path, precision=options.precision,
        compute_capability=format_compute_capability(cc), onnx=onnx.path, onnx_sha256=onnx.sha256,
        network_flags=network_flags, builder_flags=tuple(builder_flags),
        profile=profile, extra_profiles=extra_profiles, graph=options.graph,
        workspace_bytes=workspace_mb * 2**20, device=device, dla_core=options.dla_core,
        timing_cache=options.timing_cache, version_compatible=bool(options.version_compatible),
        calibrator=calibrator,
        engine_file=engine_file_name(arch, options.precision, cc, version, options.dla_core,
                                     bool(options.version_compatible)),
        warnings=tuple(warnings), targets=(format_compute_capability(cc),),
    )
