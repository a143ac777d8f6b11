"""The CLI's parser reads the backend rows and bench names without numpy, scipy or the package code."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("numpy", "scipy", "onnxruntime", "openvino", "torch", "liverlesion.package", "liverlesion.backends.base",
         "liverlesion.serving")


@pytest.mark.parametrize("module", ["liverlesion.cli", "liverlesion.cli.predict", "liverlesion.cli.bench",
                                    "liverlesion.cli.predict_series", "liverlesion.cli.serve",
                                    "liverlesion.cli.triton_repo",
                                    "liverlesion.bench.configs", "liverlesion.backends.registry"])
def test_importing_the_parser_side_pulls_nothing_heavy(module):
    code = (f"import sys, {module}\n"
            f"print(sorted(m for m in sys.modules if m.startswith({HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_predict_and_bench_parsers_build_without_numpy():
    code = ("import argparse, sys\n"
            "from liverlesion.cli import bench, predict, predict_series, serve, triton_repo\n"
            "sub = argparse.ArgumentParser().add_subparsers()\n"
            "for module in (predict, bench, predict_series, serve, triton_repo): module.register(sub)\n"
            f"print(sorted(m for m in sys.modules if m.startswith({HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
