"""Issue 12, the SDK's shape: one geometry module, no import cycle, colours with the labels, one predict pipeline."""

from __future__ import annotations

import ast
import itertools
import threading
from pathlib import Path

import numpy as np
import pytest

from liverlesion import grid as grid_module
from liverlesion.backends import base
from liverlesion.errors import InputError
from liverlesion.grid import ModelGrid, Spacing, check_spacing
from liverlesion.labels import LABEL_COLOURS, TARGET_LABELS
from liverlesion.sdk import geometry
from liverlesion.sdk.geometry import Orientation
from sdk_fixtures import drawn_slice, make_threshold_package

SDK = Path(__file__).resolve().parents[2] / "src" / "liverlesion" / "sdk"
ORIENTATIONS = [Orientation(*flags) for flags in itertools.product((False, True), repeat=3)]


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory):
    from liverlesion import LesionAnalyzer

    with LesionAnalyzer.load(make_threshold_package(tmp_path_factory.mktemp("shape") / "thr"),
                             backend="onnxruntime", threads=1) as loaded:
        yield loaded


# -- one geometry module: both directions of the transform ---------------------------------------------
@pytest.mark.parametrize("orientation", ORIENTATIONS, ids=lambda o: "".join("tRC"[i] if f else "-" for i, f in
                                                                          enumerate(o.to_dict().values())))
def test_back_undoes_forward_for_every_orientation(orientation):
    """A slice already at the grid's spacing and (canonical) size comes back pixel for pixel."""
    grid = ModelGrid((24, 32), (1.5, 1.5))
    shape = (32, 24) if orientation.transpose else (24, 32)
    labels = np.random.default_rng(0).integers(0, 5, size=shape).astype(np.float32)
    on_grid = geometry.to_model(labels, check_spacing((1.5, 1.5)), orientation, grid)
    np.testing.assert_array_equal(on_grid, orientation.to_canonical(labels))
    back, index = geometry.to_input(on_grid, grid, shape, check_spacing((1.5, 1.5)), orientation)
    np.testing.assert_array_equal(back, labels)
    assert index.shape == shape and index.min() >= 0


def test_back_fills_what_the_model_grid_does_not_cover():
    """Beyond the model grid's field the label is the fill, on the separable and the transposed path alike."""
    grid = ModelGrid((8, 8), (2.0, 2.0))
    for orientation in (Orientation(), Orientation(transpose=True, flip_rows=True)):
        back, index = geometry.to_input(np.ones((8, 8), np.uint8), grid, (40, 40), check_spacing((1.0, 1.0)),
                                        orientation, fill=7)
        inside = back == 1
        assert set(np.unique(back)) == {1, 7} and np.array_equal(inside, index >= 0)
        assert 0 < inside.sum() < 16 * 16 * 1.3 and np.array_equal(inside, inside[::-1, ::-1])  # the centre 16 mm


# -- one spacing check ----------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [(0.0, 1.0), (1.0,), "11", (True, 1.0), (float("nan"), 1.0), (1.0, 99.0), None])
def test_a_spacing_cannot_be_made_unchecked(bad):
    with pytest.raises(InputError, match="spacing"):
        Spacing(bad)


def test_a_checked_spacing_is_not_checked_again():
    spacing = check_spacing([0.7, 0.8])
    assert check_spacing(spacing) is spacing and spacing == (0.7, 0.8) and hash(spacing) == hash((0.7, 0.8))
    assert spacing.transposed() == (0.8, 0.7) and Orientation(transpose=True).canonical_spacing(spacing) == (0.8, 0.7)


@pytest.mark.parametrize("kind", ["array", "dicom"])
def test_predict_checks_a_slices_spacing_once(analyzer, monkeypatch, kind):
    from dicom_files import real

    source = drawn_slice(1.0) if kind == "array" else real("CT_small.dcm")
    geometry.clear_geometry_caches()  # the map back is built too (on a miss it resamples once more)
    calls = []
    checked = grid_module._checked
    monkeypatch.setattr(grid_module, "_checked", lambda value: (calls.append(value), checked(value))[1])
    prediction = analyzer.predict(source, spacing=(1.0, 1.0) if kind == "array" else None)
    assert len(calls) == 1 and prediction.spacing_mm == tuple(float(v) for v in calls[0])


# -- no import cycle; colours with the labels -----------------------------------------------------------
def _module_imports(path: Path) -> set[str]:
    """The sdk modules ``path`` imports when it is imported (top-level statements only)."""
    package = ".".join(("liverlesion", *path.relative_to(SDK.parent).with_suffix("").parts))
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + ".__init__"
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base_parts = package.split(".")[:-node.level] if node.level else []
            target = ".".join([*base_parts, *(node.module or "").split(".")]).strip(".")
            targets = [target] + [f"{target}.{a.name}" for a in node.names]
            found.update(t for t in targets if t.startswith("liverlesion.sdk.") and _exists(t))
    return found


def _exists(module: str) -> bool:
    relative = Path(*module.split(".")[2:])
    return (SDK / relative).with_suffix(".py").is_file() or (SDK / relative / "__init__.py").is_file()


def _name(path: Path) -> str:
    parts = path.relative_to(SDK.parent).with_suffix("").parts
    return ".".join(("liverlesion", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def test_sdk_modules_import_no_cycle():
    """Module-level imports within sdk/ form no cycle; a package imports its own modules (that is no cycle)."""
    graph = {_name(p): {t for t in _module_imports(p) if not t.startswith(_name(p) + ".")} for p in SDK.rglob("*.py")}
    seen: dict[str, int] = {}

    def visit(node: str, trail: tuple[str, ...]) -> None:
        if seen.get(node) == 2:
            return
        assert seen.get(node) != 1, f"import cycle: {' -> '.join((*trail, node))}"
        seen[node] = 1
        for target in graph.get(node, ()):
            visit(target, (*trail, node))
        seen[node] = 2

    for module in graph:
        visit(module, ())
    assert "liverlesion.sdk.prediction" in graph and not any(
        t.startswith("liverlesion.sdk.outputs") for t in graph["liverlesion.sdk.prediction"])


def test_label_colours_live_with_the_labels():
    from liverlesion.sdk.outputs import dicom, overlay

    assert set(LABEL_COLOURS) == set(TARGET_LABELS[1:])
    assert overlay.LABEL_COLOURS is LABEL_COLOURS and dicom.LABEL_COLOURS is LABEL_COLOURS


# -- one predict pipeline ---------------------------------------------------------------------------
def test_predict_is_a_batch_of_one(analyzer):
    hu = drawn_slice(0.8)
    one = analyzer.predict(hu, spacing=(0.8, 0.8))
    batch = analyzer.predict_batch([hu], spacing=(0.8, 0.8))[0]
    np.testing.assert_array_equal(one.label_map, batch.label_map)
    assert one.to_dict(masks="rle") | {"timings": None} == batch.to_dict(masks="rle") | {"timings": None}
    assert set(one.timings) == set(batch.timings) == {"preprocess_ms", "inference_ms", "postprocess_ms", "total_ms"}


def test_inference_time_is_the_backends_own_shared_per_slice(analyzer, monkeypatch):
    """Taken once, from the backend: one infer per device batch, its time split among the batch's slices."""
    backend = analyzer._backend
    calls = []
    infer = backend.infer
    monkeypatch.setattr(backend, "infer", lambda hu: (calls.append(hu.shape[0]), infer(hu))[1])
    monkeypatch.setattr(backend, "last_inference_time", lambda: 0.25)
    one = analyzer.predict(drawn_slice(1.0), spacing=(1.0, 1.0))
    assert one.timings["inference_ms"] == 250.0
    t = one.timings
    assert t["total_ms"] == pytest.approx(t["preprocess_ms"] + 250.0 + t["postprocess_ms"])
    several = analyzer.predict_batch([drawn_slice(1.0)] * 5, spacing=(1.0, 1.0), batch_size=2)
    assert calls == [1, 2, 2, 1]
    assert [p.timings["inference_ms"] for p in several] == [125.0] * 4 + [250.0]


def test_each_thread_reads_its_own_inference_time(analyzer, monkeypatch):
    """Threads sharing one backend: another thread's later infer does not change this thread's time."""
    ticks = iter([0.0, 1.0, 10.0, 12.0])  # this thread: 0 -> 1 s; the other: 10 -> 12 s

    class Clock:
        @staticmethod
        def perf_counter() -> float:
            return next(ticks)

    monkeypatch.setattr(base, "time", Clock)
    batch = np.full((1, 1, *analyzer.grid.size), -1000.0, np.float32)
    analyzer._backend.infer(batch)
    other = threading.Thread(target=analyzer._backend.infer, args=(batch,))
    other.start()
    other.join()
    assert analyzer._backend.last_inference_time() == 1.0


@pytest.mark.parametrize("batch", [False, True])
def test_predict_takes_the_input_side_limit(analyzer, batch):
    """``max_side`` reaches the reader through the options, for one slice and for a batch alike."""
    hu = drawn_slice(4.0)  # 100 x 100 pixels
    with pytest.raises(InputError, match="100"):
        if batch:
            analyzer.predict_batch([hu], spacing=(4.0, 4.0), max_side=64)
        else:
            analyzer.predict(hu, spacing=(4.0, 4.0), max_side=64)
    assert analyzer.predict(hu, spacing=(4.0, 4.0), max_side=100).shape == (100, 100)
