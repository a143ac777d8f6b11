"""``liverlesion triton-repo``: the repository plan, its configs against Triton's schema and the ONNX files, the
files copied in, and the whole repository (pipeline -> BLS -> network) under the bundled tritonserver.

What runs here: the Python-backend repository (``--network-backend python``), served by PyTriton's tritonserver
2.51 started on the repository itself (no PyTriton in between). What cannot (no onnxruntime or TensorRT backend in
that server): the ``onnxruntime_onnx`` and ``tensorrt_plan`` configs, parsed with tritonclient's ``ModelConfig``
protobuf (the server's own schema) and compared with the ONNX graph they serve.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from liverlesion.errors import ChecksumError, EngineError, InputError, PackageError
from liverlesion.package import load_package
from liverlesion.package.engines import EngineRecord
from liverlesion.serving import contract, repository
from liverlesion.serving.repository import RepositoryOptions, plan_repository, write_repository
from sdk_fixtures import RECORDS, THRESHOLD_GRID, drawn_slice, make_threshold_package, threshold_graph
from serving_process import (
    START_TIMEOUT_S,
    _die_with_parent,
    assert_same,
    free_ports,
    require_client,
    serve_python,
    stop_group,
    wait_until,
)

ROWS, COLS = THRESHOLD_GRID.size
ENGINE = "engines/model_fp32_sm90_trt10.5.plan"


def model_config(text: str):
    """A config.pbtxt parsed as Triton's ModelConfig protobuf: unknown fields or bad values fail here."""
    pytest.importorskip("tritonclient.grpc")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def type_name(config_type: int) -> str:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.DataType.Name(config_type)


@pytest.fixture(scope="module")
def full_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The threshold package with every ONNX form (FP32, FP16, both INT8 forms) and a TensorRT engine record."""
    from liverlesion.engines.records import add_engine_record
    from liverlesion.package import write_manifest
    from liverlesion.package.store import file_record, read_manifest

    root = make_threshold_package(tmp_path_factory.mktemp("repo") / "full")
    data = read_manifest(root).to_dict()
    for name, fields in RECORDS.items():
        if name != "model_fp32.onnx":
            threshold_graph(root / name)
            data["files"].append(file_record(root, name, **fields, opset=17).to_dict())
    write_manifest(root, data)
    (root / "engines").mkdir()
    (root / ENGINE).write_bytes(b"not a real plan: the repository copies it, Triton would deserialize it")
    plan = root / ENGINE
    shape = [1, ROWS, COLS]
    add_engine_record(root, EngineRecord(
        file=ENGINE, sha256=hashlib.sha256(plan.read_bytes()).hexdigest(), size=plan.stat().st_size,
        precision="fp32", tensorrt="10.5.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
        profile={"min": [1, *shape], "opt": [4, *shape], "max": [16, *shape]}, onnx="model_fp32.onnx"))
    return root


@pytest.fixture(scope="module")
def package(full_package: Path):
    with load_package(full_package) as opened:
        yield opened


def onnx_tensors(path: Path) -> dict[str, tuple[str, list[int]]]:
    """Each input and output of an ONNX graph: its Triton type and its dims past the batch (-1: symbolic)."""
    onnx = pytest.importorskip("onnx")
    types = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT32: "TYPE_INT32",
             onnx.TensorProto.FLOAT16: "TYPE_FP16", onnx.TensorProto.INT64: "TYPE_INT64"}
    graph = onnx.load(str(path), load_external_data=False).graph
    out = {}
    for value in [*graph.input, *graph.output]:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        out[value.name] = (types[tensor.elem_type], dims[1:])
    return out


def config_tensors(config) -> dict[str, tuple[str, list[int]]]:
    return {t.name: (type_name(t.data_type), list(t.dims)) for t in [*config.input, *config.output]}


def written(package, tmp_path: Path, **options) -> tuple[Path, repository.RepositoryPlan]:
    plan = plan_repository(package, RepositoryOptions(**options))
    return write_repository(plan, package, tmp_path / "repo"), plan


# -- options ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, words", [
    ({"network_backend": "torch"}, "onnxruntime, tensorrt, python"),
    ({"precision": "bf16"}, "fp32, fp16, int8"),
    ({"device": "tpu"}, "gpu, cpu"),
    ({"sdk_backend": "tensorrt"}, "onnxruntime, openvino"),
    ({"max_batch": 0}, "1 to 1024"),
    ({"network_instances": True}, "1 to 64"),
    ({"queue_delay_ms": -1}, "0 to 10000"),
    ({"threads": 0}, "positive"),
    ({"network_backend": "tensorrt"}, "--tensorrt VERSION and --compute-capability"),
    ({"network_backend": "tensorrt", "tensorrt": "ten", "compute_capability": "9.0"}, "MAJOR.MINOR"),
    ({"network_backend": "tensorrt", "tensorrt": "10.5", "compute_capability": "nine"}, "8.7 or sm87"),
    ({"tensorrt": "10.5"}, "with --network-backend tensorrt only"),
])
def test_options_no_repository_fits_are_refused(changes, words):
    with pytest.raises(InputError, match=words):
        RepositoryOptions(**changes).check()


def test_the_command_line_offers_what_the_repository_writes():
    from liverlesion.cli import triton_repo

    assert triton_repo.NETWORK_BACKENDS == repository.NETWORK_BACKENDS
    assert triton_repo.PYTHON_SDK_BACKENDS == repository.PYTHON_SDK_BACKENDS
    assert triton_repo.PRECISIONS == repository.PRECISIONS


# -- configs against Triton's schema and the ONNX they serve ----------------------------------------------------------
@pytest.mark.parametrize("device, kind, form", [("gpu", "KIND_GPU", "qdq-s8s8"), ("cpu", "KIND_CPU", "qdq-u8s8")])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_the_onnxruntime_network_config_is_triton_s_and_matches_its_onnx(package, tmp_path, precision, device, kind,
                                                                          form):
    repo, _ = written(package, tmp_path, precision=precision, device=device, max_batch=6, queue_delay_ms=1.5,
                      network_instances=2)
    config = model_config((repo / contract.NETWORK_MODEL / "config.pbtxt").read_text())
    assert (config.name, config.platform, config.backend) == (contract.NETWORK_MODEL, "onnxruntime_onnx", "")
    assert config.max_batch_size == 6 and config.dynamic_batching.max_queue_delay_microseconds == 1500
    assert [(g.count, model_config_kind(g.kind)) for g in config.instance_group] == [(2, kind)]
    served = repo / contract.NETWORK_MODEL / "1" / config.default_model_filename
    assert config_tensors(config) == onnx_tensors(served)  # names, element types and dims past the batch
    # the file served is the package's file of that precision (and INT8 form), byte for byte
    record = next(f for f in package.manifest.onnx_files() if f.precision == precision
                  and (precision != "int8" or f.extra.get("form") == form))
    assert hashlib.sha256(served.read_bytes()).hexdigest() == record.sha256
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    assert parameters[contract.PARAMETER_KEYS[2]] == package.digest
    assert parameters[contract.PARAMETER_KEYS[0]] == package.manifest.model_name


def model_config_kind(kind: int) -> str:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.ModelInstanceGroup.Kind.Name(kind)


def test_the_pipeline_config_is_the_contract_s(package, tmp_path):
    repo, _ = written(package, tmp_path, max_batch=4, pipeline_instances=3)
    config = model_config((repo / contract.PIPELINE_MODEL / "config.pbtxt").read_text())
    assert (config.backend, config.platform, config.max_batch_size) == ("python", "", 4)
    assert config.HasField("dynamic_batching")
    assert [(g.count, model_config_kind(g.kind)) for g in config.instance_group] == [(3, "KIND_CPU")]
    want = {t.name: (contract.TRITON_TYPES[t.dtype], list(t.shape), t.optional)
            for t in (*contract.PIPELINE_INPUTS, *contract.PIPELINE_OUTPUTS)}
    got = {t.name: (type_name(t.data_type), list(t.dims), getattr(t, "optional", False))
           for t in [*config.input, *config.output]}
    assert got == want
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    assert parameters[repository.NETWORK_MODEL_KEY] == contract.NETWORK_MODEL
    assert parameters[repository.NETWORK_RUNTIME_KEY] == "onnxruntime"
    assert json.loads(parameters[contract.DEFAULT_SPACING_KEY]) == list(THRESHOLD_GRID.spacing_mm)
    model_py = (repo / contract.PIPELINE_MODEL / "1" / "model.py").read_text()
    compile(model_py, "model.py", "exec")
    assert "PipelineModel as TritonPythonModel" in model_py and "pip install" in model_py


def test_the_tensorrt_config_names_the_matching_engine(package, tmp_path):
    repo, _ = written(package, tmp_path, network_backend="tensorrt", tensorrt="10.5.0", compute_capability="9.0",
                      max_batch=16)
    config = model_config((repo / contract.NETWORK_MODEL / "config.pbtxt").read_text())
    filename = Path(ENGINE).name
    assert (config.platform, config.default_model_filename) == ("tensorrt_plan", filename)
    assert dict(config.cc_model_filenames) == {"9.0": filename}
    assert [model_config_kind(g.kind) for g in config.instance_group] == ["KIND_GPU"]
    assert config_tensors(config) == onnx_tensors(package.path("model_fp32.onnx"))  # the engine's own ONNX
    copied = repo / contract.NETWORK_MODEL / "1" / filename
    assert copied.read_bytes() == package.path(ENGINE).read_bytes()
    assert "TensorRT 10.5.0" in (repo / contract.NETWORK_MODEL / "config.pbtxt").read_text()


@pytest.mark.parametrize("changes, error, words", [
    ({"tensorrt": "10.3.0", "compute_capability": "9.0"}, EngineError, "10.5"),  # another TensorRT
    ({"tensorrt": "10.5.0", "compute_capability": "8.6"}, EngineError, "do not move between GPU models"),
    ({"tensorrt": "10.5.0", "compute_capability": "9.0", "precision": "fp16"}, EngineError, "no fp16"),
    ({"tensorrt": "10.5.0", "compute_capability": "9.0", "max_batch": 32}, InputError, "at most 16"),
])
def test_a_tensorrt_repository_needs_an_engine_for_that_server(package, changes, error, words):
    with pytest.raises(error, match=words):
        plan_repository(package, RepositoryOptions(network_backend="tensorrt", **changes))


def test_the_python_network_carries_its_package_copy(package, tmp_path):
    repo, _ = written(package, tmp_path, network_backend="python", sdk_backend="openvino", precision="int8")
    config = model_config((repo / contract.NETWORK_MODEL / "config.pbtxt").read_text())
    assert config.backend == "python" and [model_config_kind(g.kind) for g in config.instance_group] == ["KIND_CPU"]
    assert config_tensors(config) == onnx_tensors(package.path("model_fp32.onnx"))
    copy = repo / contract.NETWORK_MODEL / "1" / repository.PACKAGE_FOLDER
    assert sorted(p.name for p in copy.iterdir()) == ["manifest.json", "model_int8_qdq_s8s8.onnx",
                                                      "model_int8_qdq_u8s8.onnx"]
    for name in ("model_int8_qdq_s8s8.onnx", "model_int8_qdq_u8s8.onnx"):
        assert (copy / name).read_bytes() == package.path(name).read_bytes()
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    assert parameters[repository.SDK_BACKEND_KEY] == "openvino"
    assert "liverlesion[openvino]" in (repo / contract.NETWORK_MODEL / "1" / "model.py").read_text()


def test_a_package_without_the_precision_is_refused(tmp_path):
    with load_package(make_threshold_package(tmp_path / "fp32-only")) as fp32_only:
        with pytest.raises(PackageError, match="no fp16 ONNX model; it has: fp32"):
            plan_repository(fp32_only, RepositoryOptions(precision="fp16"))


def test_strings_reach_triton_as_written():
    plan = repository.ModelPlan(name="m", platform=None, backend="python", max_batch_size=1, inputs=(), outputs=(),
                                queue_delay_us=0, instance_kind="KIND_CPU", instance_count=1,
                                parameters=(("k", 'a "quoted" \\ name, é, \n'),),
                                notes=('a name with a line break\nmax_batch_size: 99',))
    config = model_config(plan.pbtxt())
    assert config.max_batch_size == 1
    assert config.parameters["k"].string_value == 'a "quoted" \\ name, é, \n'


# -- writing ----------------------------------------------------------------------------------------------------------
def test_an_existing_repository_is_kept_unless_forced(package, tmp_path):
    out = tmp_path / "repo"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    plan = plan_repository(package, RepositoryOptions())
    with pytest.raises(InputError, match="not empty"):
        write_repository(plan, package, out)
    assert (out / "mine.txt").read_text() == "keep"
    write_repository(plan, package, out, force=True)
    assert sorted(p.name for p in out.iterdir()) == sorted([contract.PIPELINE_MODEL, contract.NETWORK_MODEL])
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no temporary or old folder left beside it


def test_a_file_that_no_longer_matches_the_manifest_leaves_nothing(full_package, tmp_path):
    copy = tmp_path / "package"
    shutil.copytree(full_package, copy)
    with load_package(copy) as opened:
        plan = plan_repository(opened, RepositoryOptions())
        with open(copy / "model_fp32.onnx", "ab") as handle:  # changed after it was verified
            handle.write(b"\0")
        with pytest.raises(ChecksumError, match="model_fp32.onnx"):
            write_repository(plan, opened, tmp_path / "repo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["package"]


@pytest.mark.parametrize("target", ["../outside", "/etc/passwd", "1/../../x", "a\\b", ""])
def test_names_never_lead_outside_the_repository(package, tmp_path, target):
    plan = plan_repository(package, RepositoryOptions())
    bad = repository.FileCopy("model_fp32.onnx", target, "0" * 64, 1)
    network = plan.models[1]
    broken = repository.RepositoryPlan((plan.models[0], dataclasses.replace(network, files=(bad,))))
    with pytest.raises(PackageError, match="plain relative name"):
        write_repository(broken, package, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() and not (tmp_path.parent / "outside").exists()


@pytest.mark.parametrize("where", ["package", "package/inside", "."])
def test_the_repository_never_replaces_its_own_package(tmp_path, where):
    root = make_threshold_package(tmp_path / "package")
    with load_package(root) as opened:
        plan = plan_repository(opened, RepositoryOptions())
        with pytest.raises(InputError, match="package folder"):
            write_repository(plan, opened, root.parent / where if where != "." else root.parent, force=True)
    assert load_package(root).manifest.model_name == "threshold"  # untouched, and still verifies


def test_a_ynet_network_is_not_offered_as_a_python_model(package, monkeypatch):
    outputs = {**package.manifest.outputs, "class_probabilities": {"dtype": "float32", "shape": ["N", 3]}}
    monkeypatch.setattr(type(package.manifest), "outputs", property(lambda self: outputs))
    with pytest.raises(PackageError, match="Y-Net"):
        plan_repository(package, RepositoryOptions(network_backend="python"))
    plan = plan_repository(package, RepositoryOptions())  # its ONNX on Triton's onnxruntime: the head served too
    assert "class_probabilities" in [t.name for t in plan.model(contract.NETWORK_MODEL).outputs]


# -- the pipeline's BLS glue, in-process ------------------------------------------------------------------------------
def bls_pipeline(package, request):
    """What PipelineModel.initialize builds, around a stand-in for the BLS call."""
    from liverlesion.backends.choice import Choice, Selection
    from liverlesion.machine.probe import Machine
    from liverlesion.serving.server import PipelineHandler
    from liverlesion.serving.triton_python import BlsNetwork, RuntimeAnalyzer

    network = BlsNetwork(package, "fp32", runtime="onnxruntime", model=contract.NETWORK_MODEL, max_batch=2,
                         request=request)
    choice = Choice("onnxruntime", "fp32")
    selection = Selection({}, (choice,), {}, {}, Machine(), chosen=choice)
    analyzer = RuntimeAnalyzer(package, network, selection, owns_package=False, runtime="onnxruntime")
    return PipelineHandler(analyzer), analyzer


def test_the_pipeline_sends_model_grid_batches_no_larger_than_the_network_takes(package):
    from liverlesion.sdk import LesionAnalyzer
    from liverlesion.serving.wire import parse_payload

    sent = []
    with LesionAnalyzer.load(package, backend="onnxruntime", warmup=False) as local:
        def request(model, hu, outputs):
            sent.append((model, hu.shape, tuple(outputs)))
            return local._backend.infer(hu)

        handler, analyzer = bls_pipeline(package, request)
        hu = np.stack([drawn_slice(1.0)] * 3).astype(np.float32)
        answers = handler([{"hu": hu, "spacing_mm": np.ones((3, 2))}])
        expected = local.predict(drawn_slice(1.0), spacing=(1.0, 1.0))
    assert [shape for _, shape, _ in sent] == [(2, 1, ROWS, COLS), (1, 1, ROWS, COLS)]
    assert {model for model, _, _ in sent} == {contract.NETWORK_MODEL}
    assert sent[0][2] == ("labels", "probabilities")
    assert np.array_equal(answers[0]["label_map"][2], expected.label_map)
    data = parse_payload(answers[0]["prediction_json"][1])
    assert data["backend"] == "onnxruntime" and len(data["lesions"]) == len(expected.lesions)
    assert analyzer.backend == "onnxruntime"


def test_a_failing_network_is_answered_in_band_as_the_backend_error_it_is(package):
    from liverlesion.errors import BackendError
    from liverlesion.serving.wire import parse_payload, refusal

    def request(model, hu, outputs):
        raise BackendError(f"the network model {model!r} failed: no instance")

    handler, _ = bls_pipeline(package, request)
    answers = handler([{"hu": drawn_slice(1.0)[None].astype(np.float32), "spacing_mm": np.ones((1, 2))}])
    assert refusal(parse_payload(answers[0]["prediction_json"][0])) == (
        "BackendError", f"the network model {contract.NETWORK_MODEL!r} failed: no instance")


def test_the_command_writes_the_repository(full_package, tmp_path, capsys):
    from liverlesion.cli import main

    out = tmp_path / "repo"
    assert main(["triton-repo", str(full_package), "--out", str(out), "--device", "cpu", "--max-batch", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["repository"] == str(out)
    assert [m["name"] for m in summary["models"]] == [contract.PIPELINE_MODEL, contract.NETWORK_MODEL]
    assert main(["triton-repo", str(full_package), "--out", str(out)]) == 2  # not empty now
    assert "--force" in capsys.readouterr().err
    assert main(["triton-repo", str(full_package), "--out", str(tmp_path / "r2"), "--expect-digest", "0" * 64]) == 2
    assert not (tmp_path / "r2").exists()


# -- the whole repository under the bundled tritonserver --------------------------------------------------------------
@dataclass
class TritonRepoServer:
    """tritonserver on a model repository, on loopback ports, in its own process group (stopped by its PID)."""

    repository: Path
    http_port: int
    grpc_port: int
    log: Path
    process: subprocess.Popen | None = None

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, work: Path) -> TritonRepoServer:
        python = serve_python()
        found = subprocess.run([str(python), "-c", _LOCATE], capture_output=True, text=True, timeout=60)
        if found.returncode != 0:
            pytest.skip(f"the serving environment has no PyTriton tritonserver: {found.stderr[-300:]}")
        where = json.loads(found.stdout)
        # The Python backend runs the stub found beside it: PyTriton ships one per Python version.
        backends = work / "backends"
        shutil.copytree(Path(where["server"]) / "backends" / "python", backends / "python")
        shutil.copy(where["stub"], backends / "python" / "triton_python_backend_stub")
        env = {**os.environ,
               # the stub's embedded Python finds its prefix (the serving venv) from the python3 first on PATH
               "PATH": f"{where['bin']}:{os.environ.get('PATH', '')}",
               # and links libpython: this interpreter's first (server.stub_environment), then PyTriton's libraries
               "LD_LIBRARY_PATH": ":".join(p for p in (where["libdir"], where["libs"],
                                                       os.environ.get("LD_LIBRARY_PATH", "")) if p)}
        command = [str(Path(where["server"]) / "bin" / "tritonserver"), "--model-repository", str(self.repository),
                   "--backend-directory", str(backends), "--http-address", "127.0.0.1", "--http-port",
                   str(self.http_port), "--grpc-address", "127.0.0.1", "--grpc-port", str(self.grpc_port),
                   "--allow-metrics", "false", "--allow-gpu-metrics", "false", "--allow-cpu-metrics", "false",
                   "--exit-timeout-secs", "5",
                   "--backend-config", f"python,shm-region-prefix-name=liverlesion-repo-{os.getpid()}-{self.http_port}"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, cwd=work, start_new_session=True, preexec_fn=_die_with_parent)
        if not wait_until(lambda: self.ready() or self.process.poll() is not None, START_TIMEOUT_S, 0.5) \
                or not self.ready():
            self.stop()
            raise AssertionError(f"tritonserver did not get ready within {START_TIMEOUT_S:.0f} s (exit "
                                 f"{self.process.returncode}); log:\n{self.log.read_text(errors='replace')[-4000:]}")
        return self

    def ready(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=2)
        try:
            connection.request("GET", "/v2/health/ready")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def stop(self) -> int | None:
        """SIGTERM to the server's process group (its PID), SIGKILL if it has not ended in time."""
        return None if self.process is None else stop_group(self.process)


#: Run in the serving environment: where its tritonserver, the stub for its Python, its libraries are.
_LOCATE = """
import json, sys, sysconfig
from pathlib import Path
from pytriton.utils.distribution import get_libs_path, get_root_module_path, get_stub_path
print(json.dumps({"server": str(get_root_module_path() / "tritonserver"),
                  "stub": str(get_stub_path(f"{sys.version_info[0]}.{sys.version_info[1]}")),
                  "libs": str(get_libs_path()), "bin": str(Path(sys.executable).parent),
                  "libdir": sysconfig.get_config_var("LIBDIR") or ""}))
"""


@dataclass(frozen=True)
class ServedRepo:
    server: TritonRepoServer
    digest: str
    analyzer: object  # in-process LesionAnalyzer on the SDK backend the network model runs


@pytest.fixture(scope="module")
def served_repo(threshold_package: Path, tmp_path_factory: pytest.TempPathFactory):
    serve_python()
    require_client()
    from liverlesion.sdk import LesionAnalyzer

    work = tmp_path_factory.mktemp("triton-repo")
    with load_package(threshold_package) as opened:
        digest = opened.digest
        plan = plan_repository(opened, RepositoryOptions(network_backend="python", sdk_backend="onnxruntime",
                                                         max_batch=8, queue_delay_ms=5, threads=1))
        repo = write_repository(plan, opened, work / "repo")
    analyzer = LesionAnalyzer.load(threshold_package, backend="onnxruntime")  # first: a failed load leaves no server
    http_port, grpc_port = free_ports(2)
    server = TritonRepoServer(repo, http_port, grpc_port, work / "tritonserver.log").start(work)
    try:
        yield ServedRepo(server, digest, analyzer)
    finally:
        analyzer.close()
        server.stop()


@pytest.mark.serving
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_repository_answers_as_the_sdk_does_in_process(served_repo, protocol):
    from liverlesion.serving.remote import RemoteAnalyzer

    url = served_repo.server.http if protocol == "http" else served_repo.server.grpc
    with RemoteAnalyzer(url, protocol=protocol, expect_digest=served_repo.digest, expect_name="threshold") as remote:
        assert remote.identity()["max_batch"] == 8
        hu = drawn_slice(0.8)
        served = remote.predict(hu, spacing=(0.8, 0.8))
        local = served_repo.analyzer.predict(hu, spacing=(0.8, 0.8))
        assert_same(served, local)
        assert [lesion.label for lesion in served.lesions] == ["cyst", "cyst"]
        # one request of several slices (one BLS batch), then a slice of another shape and spacing
        slices = [drawn_slice(0.8), drawn_slice(0.8)[::-1].copy(), drawn_slice(1.0)]
        spacings = [(0.8, 0.8), (0.8, 0.8), (1.0, 1.0)]
        served_all = [p for s, sp in zip(slices, spacings) for p in remote.predict_batch([s], spacing=sp)]
        served_all += remote.predict_batch(slices[:2], spacing=(0.8, 0.8))
        local_all = [served_repo.analyzer.predict(s, spacing=sp) for s, sp in zip(slices, spacings)]
        local_all += [served_repo.analyzer.predict(s, spacing=(0.8, 0.8)) for s in slices[:2]]
        for a, b in zip(served_all, local_all, strict=True):
            assert_same(a, b)


@pytest.mark.serving
def test_a_client_expecting_another_package_is_refused(served_repo):
    from liverlesion.serving.remote import RemoteAnalyzer, WrongModel

    with pytest.raises(WrongModel, match="not the expected"):
        RemoteAnalyzer(served_repo.server.http, expect_digest="f" * 64)
    with pytest.raises(WrongModel, match="not the expected 'other'"):
        RemoteAnalyzer(served_repo.server.grpc, protocol="grpc", expect_name="other")


@pytest.mark.serving
def test_a_slice_the_sdk_refuses_is_refused_in_band_and_the_server_goes_on(served_repo):
    import tritonclient.http as httpclient

    from liverlesion.serving.remote import RemoteAnalyzer
    from liverlesion.serving.wire import parse_payload, refusal

    # sent by hand: RemoteAnalyzer would refuse it before sending (no air or fat: not a CT slice)
    hu = np.full((1, 64, 64), 50.0, np.float32)
    inputs = [httpclient.InferInput("hu", list(hu.shape), "FP32"), httpclient.InferInput("spacing_mm", [1, 2], "FP64")]
    inputs[0].set_data_from_numpy(hu)
    inputs[1].set_data_from_numpy(np.array([[1.0, 1.0]]))
    client = httpclient.InferenceServerClient(served_repo.server.http)
    try:
        result = client.infer(contract.PIPELINE_MODEL, inputs)
    finally:
        client.close()
    kind, message = refusal(parse_payload(result.as_numpy("prediction_json")[0]))
    assert kind == "InputError" and "air or fat" in message
    with RemoteAnalyzer(served_repo.server.http, expect_digest=served_repo.digest) as remote:
        slice_ = drawn_slice(1.0)
        assert_same(remote.predict(slice_, spacing=(1.0, 1.0)),
                    served_repo.analyzer.predict(slice_, spacing=(1.0, 1.0)))
        # the request parameter reaches the pipeline: the same slice taken as HU anyway
        assert_same(remote.predict(hu[0], spacing=(1.0, 1.0), allow_non_hu=True),
                    served_repo.analyzer.predict(hu[0], spacing=(1.0, 1.0), allow_non_hu=True))


@pytest.mark.serving
def test_the_network_model_labels_model_grid_hu_as_the_backend_does(served_repo):
    import tritonclient.http as httpclient

    rng = np.random.default_rng(3)
    hu = rng.uniform(-1000, 700, size=(3, 1, ROWS, COLS)).astype(np.float32)
    client = httpclient.InferenceServerClient(served_repo.server.http)
    try:
        tensor = httpclient.InferInput("hu", list(hu.shape), "FP32")
        tensor.set_data_from_numpy(hu)
        result = client.infer(contract.NETWORK_MODEL, [tensor])
        config = client.get_model_config(contract.NETWORK_MODEL)
    finally:
        client.close()
    local = served_repo.analyzer._backend.infer(hu)
    assert np.array_equal(result.as_numpy("labels"), local["labels"])
    assert np.allclose(result.as_numpy("probabilities"), local["probabilities"], atol=1e-6)
    assert config["parameters"][contract.PARAMETER_KEYS[2]]["string_value"] == served_repo.digest


@pytest.mark.serving
def test_concurrent_clients_each_get_their_own_answer(served_repo):
    from concurrent.futures import ThreadPoolExecutor

    from liverlesion.serving.remote import RemoteAnalyzer

    spacings = [0.7, 0.8, 0.9, 1.0, 0.8, 0.7]
    with RemoteAnalyzer(served_repo.server.grpc, protocol="grpc", expect_digest=served_repo.digest) as remote:
        with ThreadPoolExecutor(len(spacings)) as pool:
            served = list(pool.map(lambda s: remote.predict(drawn_slice(s), spacing=(s, s)), spacings))
    for spacing, prediction in zip(spacings, served):
        assert_same(prediction, served_repo.analyzer.predict(drawn_slice(spacing), spacing=(spacing, spacing)))
