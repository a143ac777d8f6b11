"""One row per backend, read by the CLI, the SDK and bench; install hints made from the row; every backend's
``candidates`` has one shape; the runtime's layers import downwards only."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from liverlesion.backends.choice import Candidates, Request
from liverlesion.backends.registry import BACKEND_NAMES, BACKENDS, ROWS, backend_class, backend_module, row
from liverlesion.errors import BackendError, install_hint
from liverlesion.machine.probe import Machine

SRC = Path(__file__).resolve().parents[2] / "src" / "liverlesion"


def test_every_row_names_a_class_of_its_module_and_the_extra_that_installs_it():
    assert BACKEND_NAMES == tuple(r.name for r in ROWS) == ("tensorrt", "tensorrt-rtx", "onnxruntime", "openvino",
                                                           "torch")
    for entry in ROWS:
        cls = backend_class(entry.name)
        assert cls.__module__ == entry.module and cls.__name__ == entry.cls and cls.name == entry.name
        assert entry.install == f"pip install 'liverlesion[{entry.extra}]'" == install_hint(entry.extra)
        assert callable(backend_module(entry.name).candidates)
    assert {r.name for r in ROWS if r.threads} == {"onnxruntime", "openvino", "torch"}
    with pytest.raises(BackendError, match="unknown backend .onnx.; accepted: tensorrt, tensorrt-rtx, onnxruntime"):
        row("onnx")


def test_the_cli_and_bench_list_the_registry_rows():
    from liverlesion.backends.onnxruntime import PROVIDERS
    from liverlesion.bench.configs import BACKEND_SPECS
    from liverlesion.cli import predict

    assert predict.BACKENDS == ("auto", *BACKEND_NAMES)
    parser = argparse.ArgumentParser()
    predict.register(parser.add_subparsers(dest="command"))
    provider = next(a for a in parser._subparsers._group_actions[0].choices["predict"]._actions
                    if a.dest == "provider")
    assert tuple(provider.choices) == tuple(PROVIDERS) == tuple(BACKENDS["onnxruntime"].variants)
    assert {backend for backend, _ in BACKEND_SPECS.values()} == set(BACKEND_NAMES)
    assert {p for b, p in BACKEND_SPECS.values() if b == "onnxruntime"} == set(PROVIDERS)
    assert BACKEND_SPECS["onnxruntime"] == ("onnxruntime", "cpu")
    assert BACKEND_SPECS["onnxruntime-cuda"] == ("onnxruntime", "cuda")


def test_bench_keeps_its_default_order_and_tries_what_each_row_runs():
    from liverlesion.bench.configs import BACKEND_SPECS, configurations

    # the default run and its table, as before the registry (commit 1a09bd7)
    assert list(BACKEND_SPECS) == ["tensorrt", "tensorrt-rtx", "onnxruntime", "onnxruntime-cuda",
                                   "onnxruntime-tensorrt", "torch", "openvino"]
    tried = [c.label for c in configurations()]
    assert tried[-5:] == ["torch fp32", "openvino fp32", "openvino fp16", "openvino int8", "openvino bf16"]
    assert not any(t.startswith("torch ") and t != "torch fp32" for t in tried)
    assert [t for t in tried if t.endswith(" bf16")] == ["openvino bf16"]


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_on_a_bare_machine_each_backend_says_what_to_install(name, sdk_world):
    from liverlesion.package import load_package

    with load_package(sdk_world.package) as package:
        answer = backend_module(name).candidates(package.manifest, Machine(), Request())
    assert isinstance(answer, Candidates) and answer.choices == [] and not answer.gpu
    assert BACKENDS[name].install in answer.why


def test_install_hints_are_made_from_the_extra_not_written_by_hand():
    written = re.compile(r"pip install 'liverlesion\[")
    found = [f"{path.relative_to(SRC)}:{n}" for path in sorted(SRC.rglob("*.py")) if path != SRC / "errors.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if written.search(line)]
    assert found == []


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_backend_modules_name_their_extra_through_their_row(name):
    """A literal extra in install_hint/require would go stale when the row's extra changes."""
    path = SRC.parent / Path(*BACKENDS[name].module.split(".")).with_suffix(".py")
    where = {"install_hint": 0, "require": 1}  # the argument that names the extra
    literal = [f"{path.name}:{node.lineno}" for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Call) and getattr(node.func, "id", None) in where
               and len(node.args) > where[node.func.id] and isinstance(node.args[where[node.func.id]], ast.Constant)
               and node.args[where[node.func.id]].value == BACKENDS[name].extra]
    assert literal == []


def _imports(path: Path) -> set[str]:
    """The liverlesion modules ``path`` imports, as dotted names (relative imports resolved)."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
    return {n for n in names if n.startswith("liverlesion")}


@pytest.mark.parametrize("layer, forbidden", [
    ("machine", ("liverlesion.backends", "liverlesion.engines", "liverlesion.sdk", "liverlesion.bench",
                 "liverlesion.export", "liverlesion.cli", "liverlesion.package")),
    ("engines", ("liverlesion.backends", "liverlesion.sdk", "liverlesion.bench", "liverlesion.cli",
                 "liverlesion.export")),
    # export -> engines (NVIDIA's ONNX parser gate), never the way back
    ("export", ("liverlesion.backends", "liverlesion.sdk", "liverlesion.bench", "liverlesion.cli")),
    ("backends", ("liverlesion.sdk", "liverlesion.bench", "liverlesion.cli", "liverlesion.export")),
    ("package", ("liverlesion.backends", "liverlesion.engines", "liverlesion.sdk", "liverlesion.machine")),
    # serving sits on the SDK (server and client); the SDK never reaches up to it
    ("serving", ("liverlesion.cli", "liverlesion.bench", "liverlesion.export", "liverlesion.training")),
    ("sdk", ("liverlesion.serving", "liverlesion.cli", "liverlesion.bench", "liverlesion.export",
             "liverlesion.training")),
    ("sdk/selection.py", ("liverlesion.engines",)),
    ("sdk/analyzer.py", ("liverlesion.engines",)),
    ("sdk/loader.py", ("liverlesion.engines",)),
])
def test_layers_import_downwards_only(layer, forbidden):
    paths = [SRC / layer] if layer.endswith(".py") else sorted((SRC / layer).rglob("*.py"))
    wrong = {f"{p.relative_to(SRC)} imports {name}" for p in paths for name in _imports(p)
             if name.startswith(forbidden)}
    assert wrong == set()


@pytest.mark.parametrize("name, takes_threads", [("tensorrt", False), ("onnxruntime", True), ("openvino", True),
                                                  ("torch", True)])
def test_the_loader_passes_threads_only_where_the_row_takes_them(name, takes_threads):
    from liverlesion.backends.choice import Choice
    from liverlesion.sdk.loader import backend_options

    choice = Choice(name, "fp32", {"provider": "cpu"} if name == "onnxruntime" else {})
    assert ("threads" in backend_options(choice, 3)) is takes_threads
    assert "threads" not in backend_options(choice, None)
    assert "build" not in backend_options(Choice(name, "fp32", {"build": True, "reuse_calibration_cache": False}), 3)


def test_a_build_choice_builds_then_opens_the_built_engine(monkeypatch):
    from liverlesion.backends import tensorrt
    from liverlesion.backends.choice import Choice, Selection
    from liverlesion.sdk import loader

    built, opened = [], []
    monkeypatch.setattr(tensorrt, "build_here", lambda package, precision, *, archive, reuse_calibration_cache:
                        built.append((package, precision, archive, reuse_calibration_cache)) or ("reopened", "e.plan"))

    class Recorder:
        def __init__(self, package, precision, **options):
            opened.append((package, precision, options))

    monkeypatch.setattr(loader, "backend_class", lambda name: Recorder)
    choice = Choice("tensorrt", "int8", {"build": True, "reuse_calibration_cache": False}, "GPU Orin", "build")
    selection = Selection({}, (choice,), {}, {}, Machine())
    package, _, loaded = loader.load_first("pkg", selection, threads=4, explicit=True, archive=False)
    assert built == [("pkg", "int8", False, False)]  # a pinned build calibrates anew
    assert opened == [("reopened", "int8", {"engine": "e.plan"})] and package == "reopened"
    assert loaded.chosen.options == {"engine": "e.plan"} and "built here" in loaded.chosen.reason


def test_bench_opens_backends_through_the_sdk_loader(monkeypatch, sdk_world):
    from liverlesion.bench import runner
    from liverlesion.bench.configs import BenchConfig
    from liverlesion.package import load_package

    seen = []
    real = runner.open_choice
    monkeypatch.setattr(runner, "open_choice", lambda *a, **k: seen.append((a[1].backend, k)) or real(*a, **k))
    with load_package(sdk_world.package) as package:
        with runner.open_config(package, BenchConfig("onnxruntime", "fp32"), threads=1) as opened:
            assert opened.backend.threads == 1 and opened.choice.options == {"provider": "cpu"}
    assert seen == [("onnxruntime", {"threads": 1})]


def _register(monkeypatch, *rows):
    """Stand extra rows into the registry, as a new backend module would add its row."""
    from liverlesion.backends import registry
    from liverlesion.sdk import selection

    table = (*registry.ROWS, *rows)
    by_name = {r.name: r for r in table}
    for module in (registry, selection):
        monkeypatch.setattr(module, "ROWS", table, raising=False)
        monkeypatch.setattr(module, "BACKENDS", by_name, raising=False)
        monkeypatch.setattr(module, "BACKEND_NAMES", tuple(by_name), raising=False)


def _fake_module(monkeypatch, name, choices_for):
    import sys
    import types

    from liverlesion.backends.choice import Choice

    module = types.ModuleType(name)

    def candidates(manifest, machine, request):
        precisions = choices_for(request)
        if not precisions:
            return Candidates([], f"{name} cannot run it")
        return Candidates([Choice(name, p, {}, "CPU", f"{name} {p}") for p in precisions], f"{name} runs it")

    module.candidates = candidates
    monkeypatch.setitem(sys.modules, name, module)


def test_a_new_cpu_backend_needs_only_its_row_and_module(monkeypatch, sdk_world):
    """select orders and explains from the rows: a new CPU backend sorts before the torch reference,
    runs its own execution precisions, and refuses with its row's error type."""
    from liverlesion.backends.registry import BackendRow
    from liverlesion.errors import EngineError
    from liverlesion.package import load_package
    from liverlesion.sdk.selection import select

    _fake_module(monkeypatch, "fake_cpu", lambda request: list(request.precisions or ("fp32",)))
    _fake_module(monkeypatch, "fake_refuser", lambda request: [])
    _register(monkeypatch,
              BackendRow("fake_cpu", "fake_cpu", "FakeCpu", "fake", title="FakeRT",
                         execution_precisions={"bf16": "fp32"}, cpu_rank=5),
              BackendRow("fake_refuser", "fake_refuser", "FakeRefuser", "fake", refusal=EngineError))
    machine = Machine(onnxruntime_version="1.32.0", ort_providers=("CPUExecutionProvider",), torch=True)
    with load_package(sdk_world.package) as package:
        manifest = package.manifest
        order = [c.backend for c in select(manifest, machine).candidates]
        assert order.index("onnxruntime") < order.index("fake_cpu") < order.index("torch")
        assert [c.precision for c in select(manifest, machine, "fake_cpu", "bf16").candidates] == ["bf16"]
        with pytest.raises(BackendError, match=r"bf16 runs on OpenVINO or FakeRT only .*"
                                               r"backend='openvino' or backend='fake_cpu' or 'auto'"):
            select(manifest, machine, "onnxruntime", "bf16")
        with pytest.raises(EngineError, match="the fake_refuser backend cannot be used: fake_refuser: fake_refuser "
                                              "cannot run it"):
            select(manifest, machine, "fake_refuser")
        with pytest.raises(BackendError, match="provider='cpu' applies to the onnxruntime backend, not 'fake_cpu'"):
            select(manifest, machine, "fake_cpu", provider="cpu")
