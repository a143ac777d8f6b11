"""Engine records: what each TensorRT plan of a package was built with, for which TensorRT and GPU.

A record names its runtime (``runtime``: "tensorrt", the default for records written before there was a
choice, or "tensorrt-rtx") and that runtime's version (``tensorrt``), and every compute capability the
builder targeted (``gpu.compute_capabilities``: TensorRT's one GPU, or TensorRT-RTX's targets).

An engine appears twice in ``manifest.json``: as a file (role ``engine``, so that the
loader checks its sha256 and archives carry it) and as a record under ``engines``,
parsed here; whether a record runs on this machine is ``engines.records``' question.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..engine_tags import (
    ENGINE_RUNTIMES,
    RUNTIME_TITLES,
    TENSORRT,
    TrtVersion,
    format_compute_capability,
    parse_compute_capability,
    sm_tags,
)
from ..errors import EngineError, PackageError
from .manifest import GRAPHS, MODEL_GRID_GRAPH, FileRecord

_KNOWN = {"file", "sha256", "size", "precision", "tensorrt", "gpu", "profile", "dla_core",
          "version_compatible", "built", "build_seconds", "onnx", "calibration_cache", "placement", "plan", "runtime",
          "graph"}


@dataclass(frozen=True)
class EngineRecord:
    """One TensorRT plan in a package and how it was built."""

    file: str
    sha256: str
    size: int
    precision: str
    tensorrt: str
    gpu_name: str
    compute_capability: str
    profile: dict[str, Any]
    dla_core: int | None = None
    version_compatible: bool = False
    built: str = ""
    build_seconds: float | None = None
    onnx: str = ""
    calibration_cache: str | None = None
    placement: dict[str, Any] | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    runtime: str = TENSORRT
    #: Every compute capability targeted ("8.6", ...); ``compute_capability`` is the first.
    compute_capabilities: tuple[str, ...] = ()
    #: Which graph the engine was built from: "model-grid" (the fused graph; records without the field) or
    #: "slice" (its slice graph, resampling inside).
    graph: str = MODEL_GRID_GRAPH

    def __post_init__(self) -> None:
        if not self.compute_capabilities:  # a record of one GPU
            object.__setattr__(self, "compute_capabilities", (self.compute_capability,))

    @property
    def runtime_title(self) -> str:
        """"TensorRT" or "TensorRT-RTX", for messages."""
        return RUNTIME_TITLES.get(self.runtime, self.runtime)

    @property
    def max_batch(self) -> int:
        return int(self.profile["max"][0])

    @property
    def min_batch(self) -> int:
        return int(self.profile["min"][0])

    @property
    def sm(self) -> str:
        """'sm87', or 'sm86-sm120' for an engine built for several."""
        return sm_tags(tuple(parse_compute_capability(c) for c in self.compute_capabilities))

    def file_record(self) -> FileRecord:
        """The record the package loader verifies (path, size, sha256)."""
        return FileRecord.from_dict({"path": self.file, "role": "engine", "precision": self.precision,
                                     "sha256": self.sha256, "size": self.size, "tensorrt": self.tensorrt,
                                     "compute_capability": self.compute_capability, "runtime": self.runtime})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineRecord:
        where = f"engines[{data.get('file', '?') if isinstance(data, Mapping) else '?'}]"
        if not isinstance(data, Mapping):
            raise PackageError(f"manifest: {where} must be an object")
        try:
            gpu = data["gpu"]
            runtime = str(data.get("runtime", TENSORRT))
            if runtime not in ENGINE_RUNTIMES:
                raise ValueError(f"runtime {runtime!r} is none of {', '.join(ENGINE_RUNTIMES)}")
            graph = str(data.get("graph", MODEL_GRID_GRAPH))
            if graph not in GRAPHS:
                raise ValueError(f"graph {graph!r} is none of {', '.join(GRAPHS)}")
            targets = tuple(format_compute_capability(parse_compute_capability(str(c)))
                            for c in gpu.get("compute_capabilities") or [gpu["compute_capability"]])
            profile = dict(data["profile"])
            for key in ("min", "opt", "max"):
                profile[key] = [int(v) for v in profile[key]]
            record = cls(
                file=str(data["file"]), sha256=str(data["sha256"]), size=int(data["size"]),
                precision=str(data["precision"]), tensorrt=str(data["tensorrt"]),
                gpu_name=str(gpu.get("name", "")),
                compute_capability=format_compute_capability(parse_compute_capability(str(gpu["compute_capability"]))),
                profile=profile, dla_core=None if data.get("dla_core") is None else int(data["dla_core"]),
                version_compatible=bool(data.get("version_compatible", False)),
                built=str(data.get("built", "")),
                build_seconds=None if data.get("build_seconds") is None else float(data["build_seconds"]),
                onnx=str(data.get("onnx", "")), calibration_cache=data.get("calibration_cache"),
                placement=data.get("placement"), plan=dict(data.get("plan") or {}),
                extra={k: v for k, v in data.items() if k not in _KNOWN},
                runtime=runtime, compute_capabilities=targets, graph=graph,
            )
            if record.compute_capability != targets[0]:
                raise ValueError(f"gpu.compute_capability {record.compute_capability} is not the first of "
                                 f"gpu.compute_capabilities {list(targets)}")
            TrtVersion.parse(record.tensorrt)
            record.file_record()  # path and checksum well formed
        except (KeyError, TypeError, ValueError, AttributeError, EngineError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise PackageError(f"manifest: {where} is not a valid engine record ({reason})") from None
        return record

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": self.file, "sha256": self.sha256, "size": self.size, "precision": self.precision,
            "runtime": self.runtime, "graph": self.graph, "tensorrt": self.tensorrt,
            "gpu": {"name": self.gpu_name, "compute_capability": self.compute_capability,
                    "compute_capabilities": list(self.compute_capabilities)},
            "profile": self.profile, "dla_core": self.dla_core, "version_compatible": self.version_compatible,
            "built": self.built, "build_seconds": self.build_seconds, "onnx": self.onnx,
            "calibration_cache": self.calibration_cache, "placement": self.placement, "plan": self.plan,
        }
        out.update(self.extra)
        return out
