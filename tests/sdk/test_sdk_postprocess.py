"""From hand-built model outputs to a Prediction: components, areas, boxes, class votes, resampling."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import ndimage

from liverlesion.errors import BackendError, InputError, PackageError
from liverlesion.grid import ModelGrid, from_model_grid
from liverlesion.labels import LESION_CLASSES, YNET_SEG_LABELS
from liverlesion.sdk import Orientation, Postprocessor, SliceInput, postprocess
from liverlesion.sdk.geometry import separable_index, source_index

CYST, HEM, MET = 2, 3, 4


def outputs(labels: np.ndarray, probs: np.ndarray | None = None, n_labels: int = 5) -> dict[str, np.ndarray]:
    """The fused graph's outputs for one slice; by default 0.9 on the chosen label, the rest shared."""
    if probs is None:
        probs = np.full((n_labels, *labels.shape), 0.1 / (n_labels - 1), np.float32)
        np.put_along_axis(probs, labels[None].astype(np.intp), 0.9, axis=0)
    return {"labels": labels[None].astype(np.int32), "probabilities": probs[None].astype(np.float32)}


GRID = ModelGrid(size=(32, 32), spacing_mm=(0.5, 0.8))


def on_grid(grid: ModelGrid = GRID) -> SliceInput:
    """A slice exactly on the model grid, so labels come back unresampled."""
    return SliceInput(hu=np.zeros(grid.size, np.float32), spacing_mm=grid.spacing_mm)


def test_components_areas_boxes_and_centroids():
    labels = np.zeros(GRID.size, np.int32)
    labels[1:30, 1:30] = 1
    labels[2:5, 3:7] = MET              # 3 x 4 rectangle
    labels[10, 10] = labels[11, 11] = CYST  # diagonal neighbours: one component with 8-connectivity
    labels[20, 20] = labels[20, 22] = HEM   # a gap between them: two components
    p = Postprocessor(GRID)(outputs(labels), on_grid())
    np.testing.assert_array_equal(p.label_map, labels)
    assert p.label_map.dtype == np.uint8
    assert [x.pixels for x in p.lesions] == [12, 2, 1, 1]
    assert [x.label for x in p.lesions] == ["metastasis", "cyst", "hemangioma", "hemangioma"]
    first, second = p.lesions[0], p.lesions[1]
    assert first.bbox == (2, 3, 5, 7) and first.centroid == pytest.approx((3.0, 4.5))
    assert second.bbox == (10, 10, 12, 12) and second.centroid == pytest.approx((10.5, 10.5))
    assert first.area_mm2 == pytest.approx(12 * 0.5 * 0.8)
    assert first.probability == pytest.approx(0.9)
    np.testing.assert_array_equal(p.lesion_components > 0, p.lesion_mask)
    for lesion in p.lesions:
        assert int((p.lesion_components == lesion.id).sum()) == lesion.pixels
    assert p.liver_mask.sum() == 29 * 29  # the whole liver, lesions included
    assert p.liver_area_mm2 == pytest.approx(29 * 29 * 0.4)


def test_each_lesion_takes_its_majority_class_and_ties_go_to_the_lower_class():
    labels = np.zeros(GRID.size, np.int32)
    labels[2, 2:12] = [MET] * 6 + [CYST] * 4  # one component: 6 metastasis, 4 cyst pixels
    labels[8, 2:6] = [HEM, CYST, HEM, CYST]   # a tie between cyst and hemangioma
    p = Postprocessor(GRID)(outputs(labels), on_grid())
    assert [x.label for x in p.lesions] == ["metastasis", "cyst"]
    # The map keeps the network's per-pixel labels; the vote is per lesion.
    np.testing.assert_array_equal(p.label_map, labels)


def test_lesion_probability_is_the_mean_of_its_class_over_its_pixels():
    labels = np.zeros(GRID.size, np.int32)
    labels[4:6, 4:8] = MET
    probs = np.full((5, *GRID.size), 0.05, np.float32)
    probs[MET, 4:6, 4:8] = np.linspace(0.5, 0.9, 8, dtype=np.float32).reshape(2, 4)
    p = Postprocessor(GRID)(outputs(labels, probs), on_grid())
    assert p.lesions[0].probability == pytest.approx(0.7, abs=1e-6)


def test_slice_class_is_the_majority_of_lesion_pixels_not_of_lesions():
    labels = np.zeros(GRID.size, np.int32)
    labels[1:4, 1:4] = MET        # 9 px
    labels[10:12, 10:13] = MET    # 6 px
    labels[20:24, 20:25] = CYST   # 20 px: one lesion, but the most pixels
    probs = np.full((5, *GRID.size), 0.02, np.float32)
    probs[CYST][labels == CYST] = 0.6
    probs[MET][labels == MET] = 0.8
    p = Postprocessor(GRID)(outputs(labels, probs), on_grid())
    assert [x.label for x in p.lesions].count("metastasis") == 2
    assert p.slice_class == "cyst"
    lesion = labels >= CYST
    means = np.array([probs[c][lesion].mean() for c in (CYST, HEM, MET)])
    expected = dict(zip(LESION_CLASSES, means / means.sum()))
    assert p.class_probabilities == pytest.approx(expected)
    assert p.slice_class_probability == pytest.approx(expected["cyst"])


def test_a_slice_without_lesions_has_no_class():
    labels = np.zeros(GRID.size, np.int32)
    labels[5:20, 5:20] = 1
    p = Postprocessor(GRID)(outputs(labels), on_grid())
    assert p.lesions == () and p.slice_class is None and p.slice_class_probability is None
    assert p.class_probabilities is None and not p.lesion_components.any()
    assert "no lesion" in p.summary()


def test_ynet_outputs_are_relabelled_and_classed_by_the_head():
    labels = np.zeros(GRID.size, np.int32)
    labels[2:28, 2:28] = 1
    labels[4:7, 4:7] = 2    # Y-Net "lesion"
    labels[15:17, 15:18] = 2
    classes = ("metastasis", "cyst", "hemangioma")  # the head's order, as the manifest lists it
    out = outputs(labels, n_labels=3)
    out["class_probabilities"] = np.array([[0.2, 0.1, 0.7]], np.float32)
    p = Postprocessor(GRID, YNET_SEG_LABELS, classes)(out, on_grid())
    expected = np.where(labels == 2, HEM, labels)
    np.testing.assert_array_equal(p.label_map, expected)
    assert [x.label for x in p.lesions] == ["hemangioma", "hemangioma"]
    assert [x.probability for x in p.lesions] == pytest.approx([0.7, 0.7])
    assert p.slice_class == "hemangioma" and p.slice_class_probability == pytest.approx(0.7)
    assert p.class_probabilities == pytest.approx({"cyst": 0.1, "hemangioma": 0.7, "metastasis": 0.2})
    del out["class_probabilities"]
    with pytest.raises(BackendError, match="class_probabilities"):
        Postprocessor(GRID, YNET_SEG_LABELS, classes)(out, on_grid())


def test_package_labels_in_another_order_are_mapped_by_name():
    order = ("background", "metastasis", "liver", "cyst", "hemangioma")
    labels = np.zeros(GRID.size, np.int32)
    labels[2:20, 2:20] = 2  # liver in this package
    labels[5:8, 5:8] = 1    # metastasis in this package
    p = Postprocessor(GRID, order)(outputs(labels), on_grid())
    assert set(np.unique(p.label_map)) == {0, 1, MET}
    assert p.lesions[0].label == "metastasis" and p.lesions[0].probability == pytest.approx(0.9)


@pytest.mark.parametrize("orientation", [Orientation(), Orientation(flip_rows=True), Orientation(flip_cols=True),
                                         Orientation(transpose=True, flip_rows=True)])
def test_the_label_map_comes_back_through_the_one_resampling(orientation):
    grid = ModelGrid(size=(40, 48), spacing_mm=(2.0, 1.5))
    labels = np.random.default_rng(3).integers(0, 5, size=grid.size).astype(np.int32)
    slice_ = SliceInput(hu=np.zeros((70, 90), np.float32), spacing_mm=(0.9, 1.1), orientation=orientation)
    p = postprocess(outputs(labels), slice_, grid)
    canonical = from_model_grid(labels, grid, orientation.canonical_shape((70, 90)),
                                orientation.canonical_spacing((0.9, 1.1)))
    np.testing.assert_array_equal(p.label_map, orientation.from_canonical(canonical))
    assert p.label_map.shape == (70, 90)
    assert (source_index(grid, (70, 90), (0.9, 1.1), orientation) == -1).any()  # partly outside the model grid
    # the row-then-column gather serves every untransposed geometry; a transposed one takes the general path
    separable = separable_index(grid, (70, 90), (0.9, 1.1), orientation)
    assert (separable is None) == orientation.transpose


def test_the_source_index_is_cached_and_read_only():
    first = source_index(GRID, (100, 100), (0.3, 0.4), Orientation())
    assert source_index(GRID, (100, 100), (0.3, 0.4), Orientation()) is first
    assert not first.flags.writeable and first.min() == -1  # parts of the input lie outside the model grid


def _phantom(spacing: float, size: int, centre=(20.0, -30.0), radius=15.0) -> SliceInput:
    """A liver with one round lesion, drawn in mm from the slice centre on a grid of ``spacing``."""
    c = (np.arange(size) - (size - 1) / 2) * spacing
    y, x = np.meshgrid(c, c, indexing="ij")
    hu = np.full((size, size), -1000.0, np.float32)
    hu[(y / 90) ** 2 + (x / 110) ** 2 < 1] = 60.0
    hu[(y - centre[0]) ** 2 + (x - centre[1]) ** 2 < radius ** 2] = 150.0
    return SliceInput(hu=hu, spacing_mm=(spacing, spacing))


def test_the_same_lesion_on_a_fine_and_a_coarse_grid_has_the_same_area_in_mm2():
    grid = ModelGrid(size=(160, 160), spacing_mm=(2.5, 2.5))
    post = Postprocessor(grid)
    found = []
    for spacing, size in ((0.6, 512), (0.9, 341)):
        slice_ = _phantom(spacing, size)
        model_hu = slice_.on_model_grid(grid)
        labels = np.where(model_hu > 100, MET, np.where(model_hu > 0, 1, 0))  # a threshold stands in for the net
        p = post(outputs(labels), slice_)
        assert len(p.lesions) == 1
        lesion = p.lesions[0]
        centre_mm = (np.array(lesion.centroid) - (size - 1) / 2) * spacing
        found.append((lesion.area_mm2, centre_mm))
    (fine, fine_centre), (coarse, coarse_centre) = found
    # Nearest-neighbour resampling moves the border by under a model pixel; on a 15 mm disc the
    # areas then agree to a few percent, and both match pi r^2 (706.9 mm2).
    assert fine == pytest.approx(coarse, rel=0.03)
    for area in (fine, coarse):
        assert area == pytest.approx(np.pi * 15.0 ** 2, rel=0.04)
    np.testing.assert_allclose(fine_centre, coarse_centre, atol=0.5)
    np.testing.assert_allclose(fine_centre, (20.0, -30.0), atol=0.5)


def test_each_lesion_carries_its_recist_axes_on_the_input_grid():
    grid = ModelGrid(size=(160, 160), spacing_mm=(2.5, 2.5))
    spacing, size = 0.6, 512
    c = (np.arange(size) - (size - 1) / 2) * spacing
    y, x = np.meshgrid(c, c, indexing="ij")
    hu = np.full((size, size), -1000.0, np.float32)
    hu[(y / 90) ** 2 + (x / 110) ** 2 < 1] = 60.0
    hu[((y - 20) / 8) ** 2 + ((x + 30) / 20) ** 2 < 1] = 150.0  # an ellipse: 40 mm along x, 16 mm along y
    slice_ = SliceInput(hu=hu, spacing_mm=(spacing, spacing))
    model_hu = slice_.on_model_grid(grid)
    labels = np.where(model_hu > 100, MET, np.where(model_hu > 0, 1, 0))
    lesion, = Postprocessor(grid)(outputs(labels), slice_).lesions
    # the model grid's 2.5 mm pixels move each border by up to half a model pixel
    assert lesion.long_axis_mm == pytest.approx(40.0, abs=2.5)
    assert lesion.short_axis_mm == pytest.approx(16.0, abs=2.5)
    (r0, c0), (r1, c1) = lesion.axes.long_ends
    assert abs(r1 - r0) < abs(c1 - c0)  # the long axis runs along the columns
    assert json.loads(json.dumps(lesion.to_dict()))["long_axis_mm"] == pytest.approx(lesion.long_axis_mm)


def test_recist_axes_are_measured_when_first_read_not_in_predict(monkeypatch):
    from liverlesion.sdk import prediction as prediction_module

    calls = []
    real = prediction_module.axial_diameters
    monkeypatch.setattr(prediction_module, "axial_diameters", lambda *a, **k: calls.append(1) or real(*a, **k))
    labels = np.zeros(GRID.size, np.int32)
    labels[3:25, 3:25] = 1
    labels[5:9, 5:12] = MET
    lesion, = Postprocessor(GRID)(outputs(labels), SliceInput(hu=np.zeros(GRID.size, np.float32),
                                                              spacing_mm=GRID.spacing_mm)).lesions
    assert calls == []  # predict's host time does not pay for them
    assert lesion.long_axis_mm > lesion.short_axis_mm > 0 and len(calls) == 1
    lesion.to_dict()
    assert len(calls) == 1  # measured once


def test_lesions_that_differ_only_in_their_axes_are_not_equal():
    from dataclasses import replace

    from liverlesion.sdk.diameters import AxialDiameters

    labels = np.zeros(GRID.size, np.int32)
    labels[3:25, 3:25] = 1
    labels[5:9, 5:12] = MET
    lesion, = Postprocessor(GRID)(outputs(labels), SliceInput(hu=np.zeros(GRID.size, np.float32),
                                                              spacing_mm=GRID.spacing_mm)).lesions
    axes = lesion.axes
    same = replace(lesion, outline=None, measured_axes=axes)  # as a served Prediction brings them
    other = replace(same, measured_axes=AxialDiameters(axes.long_mm + 1.0, axes.short_mm, axes.long_ends,
                                                       axes.short_ends))
    assert lesion == same and hash(lesion) == hash(same)
    assert lesion != other


def test_to_dict_is_json_and_its_run_length_map_decodes_to_the_label_map():
    labels = np.zeros(GRID.size, np.int32)
    labels[3:25, 3:25] = 1
    labels[5:9, 5:9] = MET
    p = Postprocessor(GRID)(outputs(labels), on_grid(), backend="onnxruntime", precision="fp32",
                            model={"name": "m", "version": "1"}, timings={"total_ms": 3.0})
    data = json.loads(json.dumps(p.to_dict(masks="rle")))
    assert data["slice_class"] == "metastasis" and data["backend"] == "onnxruntime"
    assert data["lesions"][0]["area_mm2"] == pytest.approx(p.lesions[0].area_mm2)
    assert data["masks"]["pixels"]["metastasis"] == 16 and data["masks"]["pixels"]["liver"] == 22 * 22 - 16
    rle = data["masks"]["label_map_rle"]
    decoded = np.repeat(rle["values"], rle["lengths"]).reshape(rle["shape"])
    np.testing.assert_array_equal(decoded, p.label_map)
    assert "label_map_rle" not in p.to_dict()["masks"] and "masks" not in p.to_dict(masks="none")
    with pytest.raises(InputError, match="accepted"):
        p.to_dict(masks="full")
    assert "metastasis" in p.summary() and "3.0 ms" in p.summary()


@pytest.mark.parametrize("broken", ["no-labels", "labels-shape", "probabilities-shape", "values", "index"])
def test_malformed_backend_outputs_are_refused(broken):
    labels = np.zeros(GRID.size, np.int32)
    out = outputs(labels)
    index = 0
    if broken == "no-labels":
        del out["labels"]
    elif broken == "labels-shape":
        out["labels"] = out["labels"][:, :16]
    elif broken == "probabilities-shape":
        out["probabilities"] = out["probabilities"][:, :3]
    elif broken == "values":
        out["labels"][0, 0, 0] = 7
    else:
        index = 1
    with pytest.raises(BackendError):
        Postprocessor(GRID)(out, on_grid(), index)


def test_unknown_label_conventions_are_refused():
    with pytest.raises(PackageError, match="not a known convention"):
        Postprocessor(GRID, ("background", "organ", "spot"))
    with pytest.raises(PackageError, match="permutation"):
        Postprocessor(GRID, lesion_classes=("cyst", "cyst", "metastasis"))


def test_one_postprocessor_shared_by_threads_gives_the_serial_results():
    grid = ModelGrid(size=(48, 48), spacing_mm=(2.0, 2.0))
    rng = np.random.default_rng(7)
    cases = []
    for k in range(12):
        labels = rng.integers(0, 5, size=grid.size).astype(np.int32)
        slice_ = SliceInput(hu=np.zeros((60 + k, 70), np.float32), spacing_mm=(1.0 + 0.1 * k, 1.3))
        cases.append((outputs(labels), slice_))
    post = Postprocessor(grid)

    def run(case):
        p = post(*case)
        return p.label_map.copy(), [x.to_dict() for x in p.lesions]

    serial = [run(case) for case in cases]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(run, cases * 3))
    for (m1, l1), (m2, l2) in zip(serial * 3, parallel):
        np.testing.assert_array_equal(m1, m2)
        assert l1 == l2


def _sparse_lesions(rng: np.random.Generator, shape: tuple[int, int], share: float = 0.12) -> np.ndarray:
    """A liver with scattered lesion pixels of random classes: many small components, some touching diagonally."""
    labels = np.ones(shape, np.int32)
    lesion = rng.random(shape) < share
    labels[lesion] = rng.integers(CYST, MET + 1, size=int(lesion.sum()))
    return labels


def _check_measured_on_input(p, spacing) -> None:
    """Each lesion's pixels, area, bbox and centroid, recomputed from its pixels on the input grid."""
    assert [x.id for x in p.lesions] == list(range(1, len(p.lesions) + 1))
    assert int(p.lesion_components.max()) == len(p.lesions)
    for lesion in p.lesions:
        rows, cols = np.nonzero(p.lesion_components == lesion.id)
        assert lesion.pixels == rows.size
        assert lesion.area_mm2 == pytest.approx(rows.size * spacing[0] * spacing[1])
        assert lesion.bbox == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
        assert lesion.centroid == pytest.approx((rows.mean(), cols.mean()))


FINE_CASES = [(Orientation(), False), (Orientation(flip_rows=True), False), (Orientation(flip_cols=True), False),
              (Orientation(flip_rows=True, flip_cols=True), False), (Orientation(transpose=True), True),
              (Orientation(transpose=True, flip_rows=True, flip_cols=True), True)]


@pytest.mark.parametrize(("orientation", "transposed"), FINE_CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_finer_inputs_model_grid_components_are_the_input_grid_ones(orientation, transposed, seed):
    grid = ModelGrid(size=(24, 30), spacing_mm=(2.0, 1.5))
    rng = np.random.default_rng(seed)
    labels = _sparse_lesions(rng, grid.size)
    # canonically (80 x 90) pixels of (0.7 x 0.6) mm: finer than the grid and covering it
    shape, spacing = ((90, 80), (0.6, 0.7)) if transposed else ((80, 90), (0.7, 0.6))
    index = source_index(grid, shape, spacing, orientation)
    assert np.isin(np.arange(labels.size), index).all()  # every model pixel is sampled
    p = postprocess(outputs(labels), SliceInput(hu=np.zeros(shape, np.float32), spacing_mm=spacing,
                                                orientation=orientation), grid)
    expected, count = ndimage.label(p.label_map >= CYST, structure=np.ones((3, 3), bool))
    assert count > 5  # the case has something to number
    np.testing.assert_array_equal(p.lesion_components, expected)
    _check_measured_on_input(p, spacing)


def test_a_coarser_input_drops_unsampled_components_and_renumbers():
    index = source_index(GRID, (16, 16), (1.0, 1.6), Orientation())  # half the model grid's resolution
    sampled = np.zeros(GRID.size[0] * GRID.size[1], bool)
    sampled[index[index >= 0]] = True
    sampled = sampled.reshape(GRID.size)
    rows_in, cols_in = np.flatnonzero(sampled.any(axis=1)), np.flatnonzero(sampled.any(axis=0))
    rows_out = np.setdiff1d(np.arange(GRID.size[0]), rows_in)
    r, ru = int(rows_in[3]), int(rows_out[rows_out > rows_in[3]][0])  # a sampled row, an unsampled one below it
    assert ru == r + 1
    labels = np.ones(GRID.size, np.int32)
    labels[int(rows_in[1]), int(cols_in[1])] = CYST         # sampled: lesion 1
    labels[int(rows_out[0]), int(cols_in[6])] = MET         # on an unsampled row, alone: dropped
    # a U: two sampled pixels joined through the unsampled row below: one component, two blobs on the input grid
    c1, c2 = int(cols_in[2]), int(cols_in[5])
    labels[r, c1] = labels[r, c2] = HEM
    labels[ru, c1:c2 + 1] = HEM
    labels[int(rows_in[8]), int(cols_in[8])] = MET          # sampled: lesion 3
    p = postprocess(outputs(labels), SliceInput(hu=np.zeros((16, 16), np.float32), spacing_mm=(1.0, 1.6)), GRID)
    assert [x.label for x in p.lesions] == ["cyst", "hemangioma", "metastasis"]
    blobs, count = ndimage.label(p.lesion_components == 2, structure=np.ones((3, 3), bool))
    assert count == 2 and p.lesions[1].pixels == 2
    assert p.lesion_components[blobs > 0].tolist() == [2, 2]
    assert int(p.lesion_mask.sum()) == 4  # the unsampled metastasis pixel reaches no input pixel
    _check_measured_on_input(p, (1.0, 1.6))


def test_lesion_class_and_probability_come_from_the_model_grid_pixels():
    grid = ModelGrid(size=(24, 24), spacing_mm=(2.0, 2.0))
    rng = np.random.default_rng(11)
    labels = _sparse_lesions(rng, grid.size, share=0.3)
    probs = rng.random((5, *grid.size)).astype(np.float32)
    # 0.7 mm input pixels: model pixels are sampled 2 or 3 times each, so an input-pixel vote would weigh them unevenly
    shape, spacing = (72, 72), (0.7, 0.7)
    p = postprocess(outputs(labels, probs), SliceInput(hu=np.zeros(shape, np.float32), spacing_mm=spacing), grid)
    model_components, _ = ndimage.label(labels >= CYST, structure=np.ones((3, 3), bool))
    index = source_index(grid, shape, spacing, Orientation())
    differs = 0
    for lesion in p.lesions:
        on_input = p.lesion_components == lesion.id
        (component,) = np.unique(model_components.ravel()[index[on_input]])
        member = model_components == component
        counts = [int((labels[member] == c).sum()) for c in (CYST, HEM, MET)]
        cls = (CYST, HEM, MET)[int(np.argmax(counts))]
        assert lesion.label == LESION_CLASSES[cls - CYST]
        assert lesion.probability == pytest.approx(float(probs[cls][member].mean()), rel=1e-6)
        differs += abs(float(probs[cls].ravel()[index[on_input]].mean()) - lesion.probability) > 1e-4
    assert differs  # an input-pixel mean would have given other probabilities
    _check_measured_on_input(p, spacing)
