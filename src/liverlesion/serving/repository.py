"""``liverlesion triton-repo``: a model repository for NVIDIA's full Triton Inference Server (its NGC containers).

Two models, as ``serving.contract`` names them:

- ``liverlesion_network``: the fused network. ``onnxruntime_onnx`` (the package's ONNX of the precision asked),
  ``tensorrt_plan`` (only where the package has an engine built for the target TensorRT and GPU:
  ``engines.records.select_engine``), or a Python-backend model running the SDK's own onnxruntime / OpenVINO
  backend (``python``: what the tritonserver PyTriton bundles, which has the Python backend only, can run).
- ``liverlesion_pipeline``: a Python-backend model running the SDK's reading, resampling and postprocessing
  (``serving.triton_python.PipelineModel``), calling the network model through BLS.

The repository is planned as plain data (:class:`RepositoryPlan`: models, platform or backend, tensors,
batching, instance groups, parameters, files), each model's ``config.pbtxt`` is written from it by
:meth:`ModelPlan.pbtxt`, and :func:`write_repository` copies the package's files in (each checked against the
manifest's sha256, which the package digest covers) into a temporary folder renamed onto ``--out``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .. import __version__
from ..engine_tags import TENSORRT, TrtVersion, format_compute_capability, parse_compute_capability
from ..errors import ChecksumError, EngineError, InputError, PackageError
from ..package import ModelPackage
from ..package.digest import package_digest
from ..package.limits import CHUNK_BYTES
from ..package.manifest import MANIFEST_NAME, MODEL_GRID_GRAPH, FileRecord
from . import contract

#: How the fused network is served: Triton's onnxruntime backend, its TensorRT backend, or a Python model.
NETWORK_BACKENDS = ("onnxruntime", "tensorrt", "python")
#: The SDK backends a Python-backend network model may run.
PYTHON_SDK_BACKENDS = ("onnxruntime", "openvino")
#: Precisions with an ONNX file of their own (bf16 is an execution mode of the FP32 graph, not a file).
PRECISIONS = ("fp32", "fp16", "int8")
DEVICES = ("gpu", "cpu")
#: Triton's config fields for each way of serving the network: (platform, backend).
PLATFORMS = {"onnxruntime": ("onnxruntime_onnx", None), "tensorrt": ("tensorrt_plan", None),
             "python": (None, "python")}
#: Model config parameters the repository adds past the package identity (``contract.PARAMETER_KEYS``).
NETWORK_MODEL_KEY = "liverlesion.network.model"
NETWORK_RUNTIME_KEY = "liverlesion.network.runtime"
NETWORK_PRECISION_KEY = "liverlesion.network.precision"
SDK_BACKEND_KEY = "liverlesion.sdk.backend"
SDK_THREADS_KEY = "liverlesion.sdk.threads"
SDK_VERSION_KEY = "liverlesion.sdk.version"
MAX_SIDE_KEY = "liverlesion.input.max_side"
#: Where a Python network model keeps its copy of the package (inside its version folder).
PACKAGE_FOLDER = "package"
VERSION = "1"

_MODEL_PY = '''"""{model} for NVIDIA Triton's Python backend (``liverlesion triton-repo``, liverlesion {version}).

The SDK runs here as it does in-process ({what}), so the server's Python needs it
(docs/serving.md, "A model repository for NGC Triton"):
    pip install 'liverlesion{extra}=={version}'
"""

from liverlesion.serving.triton_python import {cls} as TritonPythonModel  # noqa: F401
'''


@dataclass(frozen=True)
class RepositoryOptions:
    """What ``liverlesion triton-repo`` writes: how the network is served, batching and instances."""

    network_backend: str = "onnxruntime"
    precision: str = "fp32"
    #: Where the onnxruntime network runs (KIND_GPU or KIND_CPU); TensorRT plans run on a GPU, Python models on CPUs.
    device: str = "gpu"
    #: The SDK backend inside a Python network model.
    sdk_backend: str = "onnxruntime"
    #: The target server's TensorRT version and GPU compute capability (``tensorrt``): which engine matches.
    tensorrt: str | None = None
    compute_capability: str | None = None
    max_batch: int = 8
    queue_delay_ms: float = 2.0
    pipeline_instances: int = 1
    network_instances: int = 1
    #: CPU threads of a Python network model's backend (None: the SDK's default).
    threads: int | None = None

    def check(self) -> None:
        """Refuse options no repository can be written for, saying what is accepted."""
        for name, value, accepted in (("--network-backend", self.network_backend, NETWORK_BACKENDS),
                                      ("--precision", self.precision, PRECISIONS),
                                      ("--device", self.device, DEVICES),
                                      ("--sdk-backend", self.sdk_backend, PYTHON_SDK_BACKENDS)):
            if value not in accepted:
                raise InputError(f"{name} {value!r:.40} is not accepted: give one of {', '.join(accepted)}")
        for name, count, high in (("--max-batch", self.max_batch, 1024), ("--pipeline-instances",
                                  self.pipeline_instances, 64), ("--network-instances", self.network_instances, 64)):
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= high:
                raise InputError(f"{name} {count!r:.40} is not accepted: give an integer from 1 to {high}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise InputError(f"--threads {self.threads!r:.40} is not accepted: give a positive integer")
        if isinstance(self.queue_delay_ms, bool) or not isinstance(self.queue_delay_ms, (int, float)) \
                or not 0 <= self.queue_delay_ms <= 10_000:
            raise InputError(f"--queue-delay-ms {self.queue_delay_ms!r:.40} is not accepted: give 0 to 10000 ms")
        if self.network_backend == "tensorrt":
            if not self.tensorrt or not self.compute_capability:
                raise InputError("--network-backend tensorrt needs --tensorrt VERSION and --compute-capability CC "
                                 "of the server that will run it (e.g. NGC Triton 24.10: TensorRT 10.5; an H100: 9.0): "
                                 "a plan runs only with the TensorRT and the GPU model it was built for")
            for name, value, parse in (("--tensorrt", self.tensorrt, TrtVersion.parse),
                                       ("--compute-capability", self.compute_capability, parse_compute_capability)):
                try:
                    parse(value)
                except (EngineError, ValueError) as exc:
                    raise InputError(f"{name} {value!r:.20}: {exc}") from None
        elif self.tensorrt or self.compute_capability:
            raise InputError("--tensorrt and --compute-capability choose an engine: they go with "
                             "--network-backend tensorrt only")


@dataclass(frozen=True)
class FileCopy:
    """One package file copied into a model folder, checked against the manifest's size and sha256."""

    source: str  # path in the package
    target: str  # path under the model's folder
    sha256: str
    size: int


@dataclass(frozen=True)
class ModelPlan:
    """One model of the repository: what its ``config.pbtxt`` says and which files its folder holds."""

    name: str
    platform: str | None
    backend: str | None
    max_batch_size: int
    inputs: tuple[contract.Tensor, ...]
    outputs: tuple[contract.Tensor, ...]
    queue_delay_us: int
    instance_kind: str
    instance_count: int
    parameters: tuple[tuple[str, str], ...]
    default_model_filename: str | None = None
    #: compute capability ("9.0") -> file: Triton's choice of plan per GPU model.
    cc_model_filenames: tuple[tuple[str, str], ...] = ()
    files: tuple[FileCopy, ...] = ()
    #: Generated text files (path under the model's folder, text): a Python model's ``model.py``.
    texts: tuple[tuple[str, str], ...] = ()
    #: What the config says about itself, as comment lines at its top.
    notes: tuple[str, ...] = ()

    def pbtxt(self) -> str:
        """The model's ``config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``)."""
        # a comment ends at a line break: anything unprintable in a note (a package name) becomes a space
        lines = ["# " + "".join(c if c.isprintable() else " " for c in note) for note in self.notes]
        lines.append(f"name: {_quote(self.name)}")
        if self.platform:
            lines.append(f"platform: {_quote(self.platform)}")
        if self.backend:
            lines.append(f"backend: {_quote(self.backend)}")
        lines.append(f"max_batch_size: {self.max_batch_size}")
        for key, tensors in (("input", self.inputs), ("output", self.outputs)):
            lines.append(f"{key} [")
            entries = []
            for tensor in tensors:
                entry = [f"    name: {_quote(tensor.name)}", f"    data_type: {contract.TRITON_TYPES[tensor.dtype]}",
                         f"    dims: [ {', '.join(str(d) for d in tensor.shape)} ]"]
                if tensor.optional:
                    entry.append("    optional: true")
                entries.append("  {\n" + "\n".join(entry) + "\n  }")
            lines.append(",\n".join(entries))
            lines.append("]")
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {self.queue_delay_us}", "}",
                  "instance_group [", "  {", f"    count: {self.instance_count}", f"    kind: {self.instance_kind}",
                  "  }", "]"]
        if self.default_model_filename:
            lines.append(f"default_model_filename: {_quote(self.default_model_filename)}")
        for cc, name in self.cc_model_filenames:
            lines.append(f"cc_model_filenames {{ key: {_quote(cc)} value: {_quote(name)} }}")
        for key, value in self.parameters:
            lines.append(f"parameters {{ key: {_quote(key)} value: {{ string_value: {_quote(value)} }} }}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RepositoryPlan:
    """The whole repository: its models (pipeline first), the package identity, and what each can run on."""

    models: tuple[ModelPlan, ...]
    identity: dict[str, str] = field(default_factory=dict)
    options: RepositoryOptions = RepositoryOptions()

    def model(self, name: str) -> ModelPlan:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

    def summary(self) -> dict[str, Any]:
        """What was written, as JSON-ready data (the CLI prints it)."""
        return {"models": [{"name": m.name, "platform": m.platform, "backend": m.backend, "kind": m.instance_kind,
                            "instances": m.instance_count, "max_batch_size": m.max_batch_size,
                            "files": [f.target for f in m.files]} for m in self.models],
                "package": dict(self.identity)}


def _quote(text: str) -> str:
    """A protobuf text-format string literal: printable ASCII as is, quotes and backslashes escaped, other
    bytes of the UTF-8 as octal escapes (what ``text_format`` reads back as the same string)."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


# -- planning -----------------------------------------------------------------------------------------------------
def plan_repository(package: ModelPackage, options: RepositoryOptions) -> RepositoryPlan:
    """The repository for a (verified) package: both models, their configs' contents and their files."""
    options.check()
    manifest = package.manifest
    rows, cols = manifest.grid.size
    net_in, net_out = contract.network_tensors(rows, cols, len(manifest.labels))
    if manifest.input_name != net_in[0].name:
        raise PackageError(f"the package's network input is named {manifest.input_name!r}; the served network "
                           f"takes {net_in[0].name!r} (serving.contract): re-export the package")
    extra = [name for name in manifest.outputs if name not in {t.name for t in net_out}]
    if extra == ["class_probabilities"]:  # Y-Net: the lesion class comes from its head, which the pipeline needs
        net_out = (*net_out, contract.Tensor("class_probabilities", "float32", (3,), "the Y-Net head's softmax"))
    elif extra:
        raise PackageError(f"the package's network has outputs {sorted(manifest.outputs)}; a served network has "
                           "labels and probabilities (and a Y-Net's class_probabilities)")
    for tensor in net_out:
        declared = str((manifest.outputs.get(tensor.name) or {}).get("dtype", tensor.dtype))
        if declared != tensor.dtype:
            raise PackageError(f"the package's output {tensor.name} is {declared}; served it must be {tensor.dtype}")

    name, version, digest = contract.PARAMETER_KEYS
    identity = {name: str(manifest.model_name), version: str(manifest.model.version), digest: package_digest(manifest)}
    default_spacing = manifest.input.default_spacing_mm or manifest.grid.spacing_mm
    common = {**identity, contract.DEFAULT_SPACING_KEY: json.dumps([float(v) for v in default_spacing])}
    delay_us = round(options.queue_delay_ms * 1000)

    network = _network_plan(package, options, net_in, net_out, common, delay_us)
    runtime = {"onnxruntime": "onnxruntime", "tensorrt": "tensorrt", "python": options.sdk_backend}
    pipeline = ModelPlan(
        name=contract.PIPELINE_MODEL, platform=None, backend="python", max_batch_size=options.max_batch,
        inputs=contract.PIPELINE_INPUTS, outputs=contract.PIPELINE_OUTPUTS, queue_delay_us=delay_us,
        instance_kind="KIND_CPU", instance_count=options.pipeline_instances,
        parameters=tuple({**common, NETWORK_MODEL_KEY: contract.NETWORK_MODEL,
                          NETWORK_RUNTIME_KEY: runtime[options.network_backend],
                          NETWORK_PRECISION_KEY: options.precision, MAX_SIDE_KEY: str(contract.MAX_SIDE),
                          SDK_VERSION_KEY: __version__}.items()),
        files=(_copy(manifest_record(package), f"{VERSION}/{MANIFEST_NAME}"),),
        texts=(("1/model.py", _model_py(contract.PIPELINE_MODEL, "PipelineModel", "", "reading, resampling onto "
                                        "the model grid, postprocessing; the network through BLS")),),
        notes=(f"liverlesion {__version__}: the SDK pipeline of package {manifest.model_name} "
               f"{manifest.model.version}; calls {contract.NETWORK_MODEL} through BLS",))
    return RepositoryPlan((pipeline, network), identity, options)


def _network_plan(package: ModelPackage, options: RepositoryOptions, inputs: tuple[contract.Tensor, ...],
                  outputs: tuple[contract.Tensor, ...], common: dict[str, str], delay_us: int) -> ModelPlan:
    platform, backend = PLATFORMS[options.network_backend]
    parameters = dict(common)
    base: dict[str, Any] = dict(name=contract.NETWORK_MODEL, platform=platform, backend=backend,
                                max_batch_size=options.max_batch, inputs=inputs, outputs=outputs,
                                queue_delay_us=delay_us, instance_count=options.network_instances)
    manifest = package.manifest
    if options.network_backend == "onnxruntime":
        record = onnx_record(package, options.precision, on_cpu=options.device == "cpu")
        filename = "model.onnx"
        return ModelPlan(**base, instance_kind="KIND_GPU" if options.device == "gpu" else "KIND_CPU",
                         parameters=tuple({**parameters, NETWORK_PRECISION_KEY: options.precision}.items()),
                         default_model_filename=filename, files=(_copy(record, f"{VERSION}/{filename}"),),
                         notes=(f"{record.path} of package {manifest.model_name} (sha256 {record.sha256}), "
                                "on Triton's onnxruntime backend",))
    if options.network_backend == "tensorrt":
        engine = tensorrt_engine(package, options)
        filename = PurePosixPath(engine.file).name
        cc = format_compute_capability(parse_compute_capability(str(options.compute_capability)))
        copy = FileCopy(engine.file, f"{VERSION}/{filename}", engine.sha256, engine.size)
        return ModelPlan(**base, instance_kind="KIND_GPU",
                         parameters=tuple({**parameters, NETWORK_PRECISION_KEY: options.precision}.items()),
                         default_model_filename=filename, cc_model_filenames=((cc, filename),), files=(copy,),
                         notes=(f"{engine.file}: TensorRT {engine.tensorrt} plan built on {engine.gpu_name or 'a GPU'} "
                                f"({engine.sm}), batch {engine.min_batch}..{engine.max_batch}, "
                                f"sha256 {engine.sha256}",
                                "it runs only under that TensorRT and on GPUs of that compute capability"))
    # A Python model running the SDK's backend on its own copy of the package (manifest and ONNX files).
    if any(t.name == "class_probabilities" for t in outputs):
        raise PackageError("a Y-Net package's network (with its class head) is not served as a Python model yet: "
                           "use --network-backend onnxruntime or tensorrt")
    records = [manifest_record(package), *python_network_records(package, options.precision)]
    files = tuple(_copy(r, f"{VERSION}/{PACKAGE_FOLDER}/{r.path}") for r in records)
    sdk = {SDK_BACKEND_KEY: options.sdk_backend, NETWORK_PRECISION_KEY: options.precision, SDK_VERSION_KEY: __version__}
    if options.threads is not None:
        sdk[SDK_THREADS_KEY] = str(options.threads)
    return ModelPlan(**base, instance_kind="KIND_CPU", parameters=tuple({**parameters, **sdk}.items()), files=files,
                     texts=((f"{VERSION}/model.py", _model_py(contract.NETWORK_MODEL, "NetworkModel",
                                                              f"[{options.sdk_backend}]",
                                                              f"its {options.sdk_backend} backend")),),
                     notes=(f"the fused network of package {manifest.model_name} on the SDK's {options.sdk_backend} "
                            "backend in a Python model (the bundled tritonserver has the Python backend only)",))


def manifest_record(package: ModelPackage) -> FileRecord:
    """The package's manifest as a file to copy (checked against itself: it is read once, here)."""
    path = package.path(MANIFEST_NAME)
    return FileRecord(MANIFEST_NAME, "other", _sha256(path), path.stat().st_size)


def onnx_record(package: ModelPackage, precision: str, *, on_cpu: bool) -> FileRecord:
    """The package's model-grid ONNX file of ``precision``; for INT8, the form that runs best where it runs."""
    from ..package.accuracy import int8_form

    candidates = [f for f in package.manifest.onnx_files("onnx") if f.precision == precision]
    if not candidates:
        have = sorted({f.precision for f in package.manifest.onnx_files("onnx") if f.precision})
        raise PackageError(f"the package has no {precision} ONNX model; it has: {', '.join(have) or 'none'}")
    preferred = int8_form(on_cpu=on_cpu)
    return next((f for f in candidates if f.extra.get("form") == preferred), candidates[0])


def python_network_records(package: ModelPackage, precision: str) -> list[FileRecord]:
    """The ONNX files a Python network model may run for ``precision`` (both INT8 forms where there are two)."""
    records = [f for f in package.manifest.onnx_files("onnx") if f.precision == precision]
    if not records:
        onnx_record(package, precision, on_cpu=True)  # raises, naming what the package has
    return records


def tensorrt_engine(package: ModelPackage, options: RepositoryOptions) -> Any:
    """The package's engine that runs under the target TensorRT on the target GPU, or why none does."""
    from ..engines.records import select_engine

    records = [r for r in package.manifest.engines if r.runtime == TENSORRT]
    chosen, refused = select_engine(records, options.precision, options.tensorrt, options.compute_capability,
                                    dla=False, runtime=TENSORRT, graph=MODEL_GRID_GRAPH)
    if chosen is None:
        why = "; ".join(f"{r.file}: {reason}" for r, reason in refused) or (
            f"it has no {options.precision} model-grid TensorRT engine (it has "
            f"{', '.join(f'{r.file} ({r.precision}, {r.graph})' for r in records) or 'none'})")
        raise EngineError(f"no engine of the package runs under TensorRT {options.tensorrt} on compute capability "
                          f"{options.compute_capability}: {why}. Build one on such a machine (liverlesion "
                          "build-engine) or serve the ONNX (--network-backend onnxruntime)")
    if chosen.min_batch > 1:
        raise EngineError(f"{chosen.file} takes batches of {chosen.min_batch}..{chosen.max_batch}; Triton sends "
                          "batches from 1: build it with a profile starting at batch 1")
    if options.max_batch > chosen.max_batch:
        raise InputError(f"--max-batch {options.max_batch} exceeds the batches {chosen.file} takes "
                         f"(at most {chosen.max_batch}); give --max-batch {chosen.max_batch} or less")
    if not _fixed_grid(chosen, package):
        raise EngineError(f"{chosen.file} was not built for the package's model grid {package.manifest.grid.size}")
    return chosen


def _fixed_grid(engine: Any, package: ModelPackage) -> bool:
    """Whether the engine's profile is the model grid (N x 1 x rows x cols at min, opt and max)."""
    rows, cols = package.manifest.grid.size
    return all(list(engine.profile[k])[1:] == [1, rows, cols] for k in ("min", "opt", "max"))


def _copy(record: FileRecord, target: str) -> FileCopy:
    return FileCopy(record.path, target, record.sha256, record.size)


def _model_py(model: str, cls: str, extra: str, what: str) -> str:
    return _MODEL_PY.format(model=model, cls=cls, extra=extra, version=__version__, what=what)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- writing ------------------------------------------------------------------------------------------------------
def write_repository(plan: RepositoryPlan, package: ModelPackage, out: str | os.PathLike[str], *,
                     force: bool = False) -> Path:
    """Write the repository into a temporary folder beside ``out``, then rename it onto ``out``.

    An existing non-empty ``out`` is refused unless ``force`` (then it is replaced whole, after the new one is
    complete). Every copied file is checked against the manifest's size and sha256 as it is copied.
    """
    out = Path(os.fspath(out))
    root, target = package.root.resolve(), out.resolve()
    if target == root or target.is_relative_to(root) or root.is_relative_to(target):
        raise InputError(f"--out {out} is the package folder, inside it or around it; write the repository "
                         "elsewhere (--force would replace the package)")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"--out {out} exists and is not empty; give an empty or new folder, or --force to "
                         "replace it")
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        for model in plan.models:
            folder = _inside(temp, model.name)
            folder.mkdir()
            (folder / VERSION).mkdir()
            (folder / "config.pbtxt").write_text(model.pbtxt(), encoding="utf-8")
            for relative, text in model.texts:
                target = _inside(folder, relative)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
            for copy in model.files:
                _copy_checked(package, copy, _inside(folder, copy.target))
        temp.chmod(0o755)  # mkdtemp's 0700 would keep a server running as another user out
        _replace(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return out


def _inside(root: Path, relative: str) -> Path:
    """``root / relative`` for a plain relative name that stays inside ``root`` (no '..', no absolute path)."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or not pure.parts or any(p in ("..", ".", "") for p in pure.parts) or "\\" in relative:
        raise PackageError(f"{relative!r:.80} is not a plain relative name inside the repository")
    return root.joinpath(*pure.parts)


def _copy_checked(package: ModelPackage, copy: FileCopy, target: Path) -> None:
    """Copy a package file, hashing what is written: the copy is the file the manifest (and digest) names."""
    source = package.path(copy.source)
    if not source.is_file():
        raise PackageError(f"package {package.root}: {copy.source} is missing")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as read, open(target, "xb") as write:
        for chunk in iter(lambda: read.read(CHUNK_BYTES), b""):
            digest.update(chunk)
            size += len(chunk)
            write.write(chunk)
    if size != copy.size or digest.hexdigest() != copy.sha256:
        raise ChecksumError(f"package {package.root}: {copy.source} is {size} bytes with sha256 {digest.hexdigest()}; "
                            f"the manifest says {copy.size} bytes, {copy.sha256}: the package was modified")


def _replace(temp: Path, out: Path) -> None:
    """Rename the finished repository onto ``out`` (an old one moved aside first, removed after)."""
    if not out.exists():
        os.replace(temp, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
    os.rmdir(old)
    os.replace(out, old)
    try:
        os.replace(temp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
