"""Session fixtures shared by test files. Each block is owned by the module named in its heading."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Compiled-model caches (OpenVINO) go to a session folder, never the user's ~/.cache."""
    import os

    folder = tmp_path_factory.mktemp("cache")
    old = os.environ.get("LIVERLESION_CACHE")
    os.environ["LIVERLESION_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("LIVERLESION_CACHE", None)
    else:
        os.environ["LIVERLESION_CACHE"] = old


# -- export / quantize / inspect (test_export.py, test_fp16.py, test_quantize.py, test_inspect.py) ----------
@dataclass(frozen=True)
class ExportWorld:
    """Phantom data, tiny trained checkpoints and the packages exported (and quantized) from them."""

    data: Path  # phantoms: lits/ and lesion_slices/ (training + calibration)
    eval_data: Path  # held-out phantom lesion slices (another seed)
    checkpoints: dict[str, Path]
    packages: dict[str, Path]  # FP32 + FP16 + INT8; the joint one also has the bare network
    calibration_slices: int


EXPORT_GRID = {"grid_size": 32, "grid_spacing": 12.0}
EXPORT_CALIBRATION_SLICES = 12


@pytest.fixture(scope="session")
def export_world(tmp_path_factory: pytest.TempPathFactory) -> ExportWorld:
    """Train a tiny joint network and Y-Net on phantoms, then export and quantize both via the CLI."""
    from liverlesion.cli import main
    from liverlesion.data.phantom import generate_phantoms
    from liverlesion.training import TrainConfig, train

    root = tmp_path_factory.mktemp("export")
    generate_phantoms(root / "phantoms", seed=0, lits_volumes=2, lits_slices=12, lesion_slices=48, size=128)
    # 120 held-out slices: one flipped slice is then 0.83 accuracy points, finer than the 1-point INT8 target
    generate_phantoms(root / "held_out", seed=1, lits_volumes=0, lesion_slices=120, size=128)
    checkpoints, packages = {}, {}
    for arch in ("joint", "ynet"):
        checkpoints[arch] = root / f"ckpt_{arch}"
        train(TrainConfig(data=root / "phantoms", out=checkpoints[arch], arch=arch, epochs=40, lr=1e-2,
                          base_width=8, depth=3, threads=1, batch_size=8, **EXPORT_GRID))
        packages[arch] = root / f"package_{arch}"
        bare = ["--bare"] if arch == "joint" else []
        assert main(["export", str(checkpoints[arch]), "--out", str(packages[arch]), "--eval-data",
                     str(root / "held_out"), *bare]) == 0
        # --allow-miss: a missed INT8 target fails test_int8_accuracy_is_within_its_target, not every test
        assert main(["quantize", str(packages[arch]), "--calib", str(root / "phantoms"), "--eval-data",
                     str(root / "held_out"), "--slices", str(EXPORT_CALIBRATION_SLICES), "--allow-miss"]) == 0
    return ExportWorld(root / "phantoms", root / "held_out", checkpoints, packages, EXPORT_CALIBRATION_SLICES)


# -- sdk analyzer (tests/sdk/test_analyzer.py, test_backends.py, test_cli_predict.py) --------------------------------
@dataclass(frozen=True)
class SdkWorld:
    """A tiny trained joint network exported to a package, its phantoms, and a known-answer package."""

    phantoms: Path  # lits/ (NIfTI volumes) and lesion_slices/
    checkpoint: Path
    package: Path  # FP32 + FP16 ONNX, weights for the torch reference, recorded accuracy
    threshold: Path  # an HU-threshold graph (tests/sdk_fixtures.py): lesions whose areas are known


@pytest.fixture(scope="session")
def sdk_world(tmp_path_factory: pytest.TempPathFactory) -> SdkWorld:
    """Phantoms -> a few seconds of training -> export (the export's own function); ~10 s on 2 cores."""
    from liverlesion.data.phantom import generate_phantoms
    from liverlesion.export import export_package
    from liverlesion.training import TrainConfig, train
    from sdk_fixtures import make_threshold_package

    root = tmp_path_factory.mktemp("sdk")
    generate_phantoms(root / "phantoms", seed=3, lits_volumes=1, lits_slices=6, lesion_slices=16, size=64)
    # One torch thread: on a busy 2-core machine two threads wait on each other for every small op.
    train(TrainConfig(data=root / "phantoms", out=root / "checkpoint", epochs=3, lr=1e-2, base_width=4,
                      depth=2, threads=1, batch_size=8, grid_size=32, grid_spacing=8.0))
    export_package(root / "checkpoint", root / "package", eval_data=root / "phantoms")
    return SdkWorld(root / "phantoms", root / "checkpoint", root / "package",
                    make_threshold_package(root / "threshold"))
