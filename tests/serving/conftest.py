"""Fixtures of the serving tests: one ``liverlesion serve`` for the session, on the threshold package.

The threshold package (tests/sdk_fixtures.py) labels each pixel by the nearest of a few HU values, so what
the server must answer is known from the drawn slice itself; the in-process analyzer on the same package
and backend gives the Predictions the served ones must equal.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from serving_process import ServerProcess, require_client, serve_python, start_server


@dataclass(frozen=True)
class Served:
    """The session's server, its package and the in-process analyzer on that package."""

    server: ServerProcess
    package: Path
    digest: str
    analyzer: object  # LesionAnalyzer on the same backend as the server


@pytest.fixture(scope="session")
def threshold_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdk_fixtures import make_threshold_package

    return make_threshold_package(tmp_path_factory.mktemp("served") / "threshold")


@pytest.fixture(scope="session")
def served(threshold_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Started once; stopped by its PID at the end of the session, whatever the tests did."""
    serve_python()
    require_client()
    from liverlesion.package import load_package
    from liverlesion.package.digest import package_digest
    from liverlesion.sdk import LesionAnalyzer

    with load_package(threshold_package) as package:
        digest = package_digest(package.manifest)
    analyzer = LesionAnalyzer.load(threshold_package, backend="openvino")  # first: a failed load leaves no server
    server = start_server(threshold_package, tmp_path_factory.mktemp("serve-logs"), "--max-batch", "8",
                          "--queue-delay-ms", "5")
    try:
        yield Served(server, threshold_package, digest, analyzer)
    finally:
        analyzer.close()
        server.stop()
