"""Fixtures of the pytest-benchmark suite: the package, the slices, and each backend x precision loaded once.

``pytest benchmarks/ --benchmark-only`` times everything; ``--package PATH`` benchmarks a
real model package (folder or .zip), otherwise a tiny one is built from phantoms once
per session (a few seconds of training, then the export's own functions) under pytest's
temporary folder. ``--bench-data DIR`` takes slices from a lesion-slice dataset or a LiTS
folder instead of generated phantoms. ``pytest benchmarks/ --benchmark-disable`` runs
each benchmark once as a plain test (the smoke run).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from liverlesion.bench.configs import BenchConfig
from liverlesion.bench.data import BenchData, load_bench_data
from liverlesion.bench.runner import Opened, open_config
from liverlesion.errors import LiverLesionError
from liverlesion.package import ModelPackage, load_package

#: Slices the suite cycles through (512 x 512 phantoms unless --bench-data is given).
SLICES = 8


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("liverlesion benchmarks")
    group.addoption("--package", default=None, metavar="PATH",
                    help="model package to benchmark (default: a tiny one built from phantoms)")
    group.addoption("--bench-data", default=None, metavar="DIR",
                    help="lesion-slice dataset or LiTS folder to take slices from (default: phantoms)")
    group.addoption("--bench-threads", type=int, default=None, metavar="N",
                    help="CPU threads for onnxruntime / torch (default: all)")


def build_tiny_package(root: Path) -> Path:
    """Phantoms -> 2 epochs of a tiny joint network -> export (FP32, FP16) -> INT8 (min-max calibration)."""
    import torch

    from liverlesion.data.phantom import generate_phantoms
    from liverlesion.export import export_package, quantize_package
    from liverlesion.training import TrainConfig, train

    threads = torch.get_num_threads()  # train() sets torch's threads process-wide: restore them after
    generate_phantoms(root / "phantoms", seed=3, lits_volumes=1, lits_slices=6, lesion_slices=16, size=64)
    # One torch thread: on a busy 2-core machine two threads wait on each other for every small op.
    train(TrainConfig(data=root / "phantoms", out=root / "checkpoint", epochs=2, lr=1e-2, base_width=8,
                      depth=2, threads=1, batch_size=8, grid_size=32, grid_spacing=8.0))
    torch.set_num_threads(threads)
    export_package(root / "checkpoint", root / "package", eval_data=root / "phantoms")
    # Min-max calibration takes a second where entropy takes ~30 s; the miss (if any) is recorded, not fatal.
    quantize_package(root / "package", root / "phantoms", root / "phantoms", slices=8, method="minmax",
                     max_fix_rounds=0, allow_miss=True)
    return root / "package"


@pytest.fixture(scope="session")
def package_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = request.config.getoption("--package")
    if given:
        return Path(given)
    return build_tiny_package(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="session")
def package(package_path: Path) -> Iterator[ModelPackage]:
    with load_package(package_path) as opened:
        yield opened


@pytest.fixture(scope="session")
def bench_data(request: pytest.FixtureRequest) -> BenchData:
    return load_bench_data(request.config.getoption("--bench-data"), SLICES)


@pytest.fixture(scope="session")
def runtime(request: pytest.FixtureRequest,
            package: ModelPackage) -> Iterator[Callable[[BenchConfig], Opened]]:
    """``runtime(config)``: the configuration loaded once per session, or the test skipped saying why."""
    threads = request.config.getoption("--bench-threads")
    loaded: dict[BenchConfig, Opened | str] = {}

    def get(config: BenchConfig) -> Opened:
        if config not in loaded:
            try:
                loaded[config] = open_config(package, config, threads=threads)
            except LiverLesionError as exc:
                loaded[config] = str(exc)
        value = loaded[config]
        if isinstance(value, str):
            pytest.skip(f"{config.label} cannot run here: {value}")
        return value

    yield get
    for value in loaded.values():
        if not isinstance(value, str):
            value.close()
