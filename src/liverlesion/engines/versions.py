"""TensorRT versions and GPUs: parsing them, and what each combination supports.

The facts come from NVIDIA's release notes and Python bindings (see docs/jetson.md):
8.5/8.6 build precision with builder flags and calibrators, 10.x and 11.x build
strongly typed networks from the precision stored in the ONNX, and DLA exists only
on some Jetson modules with some TensorRT releases.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..engine_tags import TENSORRT_RTX, TrtVersion, format_compute_capability, sm_tag
from ..errors import EngineError, MissingDependencyError, install_hint, require
from ..machine.runtimes import tensorrt_rtx_version, tensorrt_version

#: Code paths, by TensorRT generation: 8.x sets precision with builder flags, 10.x/11.x build strongly typed
#: networks, and TensorRT-RTX (1.x) builds strongly typed ahead of time, without a GPU, for named GPU families.
BUILDER_FLAGS = "builder-flags"
STRONGLY_TYPED = "strongly-typed"
RTX_AHEAD_OF_TIME = "rtx-ahead-of-time"

#: Compute capabilities of the GPUs that carry DLA cores (Orin Nano has none; Thor has none).
DLA_GPUS = {(7, 2): "Jetson AGX/NX Xavier", (8, 7): "Jetson AGX/NX Orin"}
#: Integrated Jetson GPUs with 8-64 GB shared with the CPU, where the build workspace must stay small.
SMALL_JETSONS = {(7, 2), (8, 7)}
#: The TensorRT releases these engines were checked against (tests plan each one).
CHECKED_RELEASES = ("8.5.2", "10.3", "10.13", "11.4.1")


#: The TensorRT-RTX releases these engines were checked against (CPU-only AOT builds in CI).
RTX_CHECKED_RELEASES = ("1.7.1",)
#: Compute capabilities TensorRT-RTX 1.7 builds for (its ComputeCapability enum), with an example GPU each.
RTX_COMPUTE_CAPABILITIES: dict[tuple[int, int], str] = {
    (7, 5): "Turing (RTX 20xx, Quadro RTX)", (8, 0): "Ampere A100", (8, 6): "Ampere (RTX 30xx, RTX A-series)",
    (8, 9): "Ada (RTX 40xx, RTX Ada)", (12, 0): "Blackwell (RTX 50xx, RTX PRO Blackwell)",
    (12, 1): "Blackwell GB10 (DGX Spark)"}
#: What TensorRT-RTX targets when no compute capability is named: its portable set (NVIDIA's "CPU-only AOT"
#: documentation: 8.0, 8.6, 8.9 and 12.0; Turing only when named, since a portable Turing build costs speed).
RTX_DEFAULT_TARGETS: tuple[tuple[int, int], ...] = ((8, 0), (8, 6), (8, 9), (12, 0))


def rtx_target_refusal(cc: tuple[int, int]) -> str | None:
    """Why TensorRT-RTX cannot build for this compute capability, or None when it can."""
    if cc in RTX_COMPUTE_CAPABILITIES:
        return None
    known = ", ".join(format_compute_capability(c) for c in RTX_COMPUTE_CAPABILITIES)
    other = ("Jetson (sm72, sm87, sm110) runs JetPack's TensorRT" if cc in {(7, 2), (8, 7), (11, 0)}
             else "data-centre GPUs such as H100/H200 (sm90) and B200 (sm100) run TensorRT")
    return (f"TensorRT-RTX builds for compute capabilities {known}, not {format_compute_capability(cc)}: "
            f"{other} (--runtime tensorrt)")


def code_path(version: TrtVersion) -> str:
    """Which build flow a TensorRT version needs, or EngineError for versions that cannot be used."""
    if version.release < (8, 5, 0):
        raise EngineError(f"TensorRT {version} is too old: liverlesion builds engines with TensorRT 8.5 or "
                          "newer (JetPack 5.1 has 8.5.2; JetPack 6 has 10.3; PyPI has 10.x and 11.x)")
    if version.major == 8:
        return BUILDER_FLAGS
    if version.major == 9:
        raise EngineError(f"TensorRT {version} was a limited release for large language models; use TensorRT "
                          "8.5/8.6 (JetPack 5), 10.x or 11.x")
    return STRONGLY_TYPED


def dla_refusal(version: TrtVersion, cc: tuple[int, int]) -> str | None:
    """Why DLA cannot be used with this TensorRT on this GPU, or None when it can."""
    if cc not in DLA_GPUS:
        return (f"this GPU ({sm_tag(cc)}) has no DLA: DLA cores exist on Jetson AGX/NX Xavier (sm72) and "
                "AGX/NX Orin (sm87), not on Jetson Thor, Orin Nano or discrete GPUs")
    if version.major == 10 and version.minor > 7:
        return f"TensorRT {version.short()} has no DLA support: 10.7 was the last 10.x release with DLA"
    if version.major == 11 and version.release < (11, 4, 1):
        return (f"TensorRT {version.short()} has no DLA support on Jetson: DLA returned in 11.4.1 "
                "(JetPack 7.2.2+)")
    if version.major == 11 and cc != (8, 7):
        return f"TensorRT {version.short()} supports DLA on Jetson AGX Orin only"
    return None


def version_compatible_refusal(version: TrtVersion) -> str | None:
    """Why a version-compatible engine cannot be built, or None when it can (TensorRT 8.6+)."""
    if version.release < (8, 6, 0):
        return f"TensorRT {version.short()} cannot build version-compatible engines (8.6 or newer can)"
    return None


def runtime_can_run(built: TrtVersion, runtime: TrtVersion, version_compatible: bool) -> str | None:
    """Why a runtime cannot deserialise an engine built by another TensorRT, or None when it can.

    Plain engines need the exact same TensorRT (build number too, when both are known).
    Version-compatible engines run on the same or a later release of the same major
    version, and across the two pairs NVIDIA supports: 8 -> 10 and 10 -> 11.
    """
    if not version_compatible:
        same = built.release == runtime.release and (
            built.build is None or runtime.build is None or built.build == runtime.build)
        return None if same else f"it was built with TensorRT {built} and this is TensorRT {runtime}"
    if runtime.release < built.release:
        return f"it was built with TensorRT {built}, newer than this TensorRT {runtime}"
    if runtime.major != built.major and (built.major, runtime.major) not in {(8, 10), (10, 11)}:
        return (f"a version-compatible TensorRT {built.major}.x engine does not run on TensorRT "
                f"{runtime.major}.x (NVIDIA supports 8 -> 10 and 10 -> 11)")
    return None


def import_tensorrt() -> ModuleType:
    """The tensorrt module, or MissingDependencyError naming the extra to install."""
    module = require("tensorrt", "tensorrt", "Building or running TensorRT engines")
    if not isinstance(getattr(module, "__version__", None), str) or not hasattr(module, "Builder"):
        where = ", ".join(getattr(module, "__path__", [])) or getattr(module, "__file__", "?")
        raise MissingDependencyError(
            f"the 'tensorrt' module found at {where} is not NVIDIA's TensorRT Python package (type stubs "
            f"alone?): {install_hint('tensorrt')}, or on Jetson install JetPack's python3-libnvinfer")
    return module


def import_tensorrt_rtx() -> ModuleType:
    """The tensorrt_rtx module (TensorRT for RTX), or MissingDependencyError naming the extra to install."""
    module = require("tensorrt_rtx", "tensorrt-rtx", "Building or running TensorRT-RTX engines")
    if not isinstance(getattr(module, "__version__", None), str) or not hasattr(module, "Builder"):
        raise MissingDependencyError(f"the 'tensorrt_rtx' module found is not NVIDIA's TensorRT-RTX package: "
                                     f"{install_hint('tensorrt-rtx')}")
    return module


def installed_tensorrt_rtx_version() -> TrtVersion | None:
    """The installed TensorRT-RTX's version (its own 1.x numbering), or None when it is absent."""
    version = tensorrt_rtx_version()
    return None if version is None else TrtVersion.parse(version)


def installed_tensorrt_version() -> TrtVersion | None:
    """The installed TensorRT's version (``machine.runtimes`` finds it), or None when TensorRT is absent."""
    version = tensorrt_version()
    return None if version is None else TrtVersion.parse(version)


def import_runtime(runtime: str) -> ModuleType:
    """The module of an engine runtime ("tensorrt" or "tensorrt-rtx"), or MissingDependencyError naming its extra."""
    return import_tensorrt_rtx() if runtime == TENSORRT_RTX else import_tensorrt()


def installed_runtime_version(runtime: str) -> TrtVersion | None:
    """The installed version of an engine runtime ("tensorrt" or "tensorrt-rtx"), None when it is absent."""
    return installed_tensorrt_rtx_version() if runtime == TENSORRT_RTX else installed_tensorrt_version()


def capturing_logger(trt: ModuleType, echo: Callable[[str], None] | None = None) -> Any:
    """A TensorRT logger keeping every INFO-or-worse line as (severity, text); ``echo`` gets warnings and errors.

    ``lines`` feed the DLA placement report, ``errors`` carry NVIDIA's own words into a refusal.
    """
    base: Any = trt.ILogger

    class CapturingLogger(base):
        def __init__(self) -> None:
            base.__init__(self)
            self.records: list[tuple[int, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(base.Severity.INFO):
                self.records.append((int(severity), msg))
            if echo is not None and int(severity) <= int(base.Severity.WARNING):
                echo(f"TensorRT: {msg}")

        @property
        def lines(self) -> list[str]:
            return [msg for _, msg in self.records]

        @property
        def errors(self) -> list[str]:
            return [msg for severity, msg in self.records if severity <= int(base.Severity.ERROR)]

    return CapturingLogger()
