"""The one preprocessing and the one resampling."""

from __future__ import annotations

import numpy as np
import pytest

from liverlesion.errors import InputError
from liverlesion.grid import ModelGrid, check_spacing, from_model_grid, to_model_grid
from liverlesion.preprocessing import Preprocessing, window_channels


def test_windows_map_their_bounds_to_minus_one_and_one():
    pre = Preprocessing(windows=((-100.0, 300.0), (0.0, 100.0)))
    hu = np.array([-2000.0, -100.0, 0.0, 100.0, 300.0, 3000.0], dtype=np.float32).reshape(1, 1, 1, 6)
    out = pre(hu)
    assert out.shape == (1, 2, 1, 6) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0], [-1, -1, -0.5, 0, 1, 1], atol=1e-6)
    np.testing.assert_allclose(out[0, 1, 0], [-1, -1, -1, 1, 1, 1], atol=1e-6)


def test_numpy_and_torch_give_the_same_channels():
    torch = pytest.importorskip("torch")
    hu = np.random.default_rng(0).uniform(-1100, 1500, size=(2, 1, 8, 8)).astype(np.float32)
    windows = Preprocessing().windows
    np.testing.assert_allclose(window_channels(hu, windows),
                               window_channels(torch.from_numpy(hu), windows).numpy(), atol=1e-6)


def test_preprocessing_round_trips_and_refuses_empty_windows():
    pre = Preprocessing(windows=((-10, 90),))
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    with pytest.raises(ValueError, match="empty"):
        Preprocessing(windows=((50, 50),))


def disk(shape, spacing, radius_mm, centre_mm):
    rows, cols = np.indices(shape, dtype=float)
    y = rows * spacing[0] - centre_mm[0]
    x = cols * spacing[1] - centre_mm[1]
    return (x ** 2 + y ** 2 <= radius_mm ** 2).astype(np.uint8)


@pytest.mark.parametrize("spacing", [(0.6, 0.6), (0.9, 0.9), (0.7, 0.8)])
def test_resampling_preserves_physical_area(spacing):
    grid = ModelGrid((128, 128), (2.5, 2.5))
    shape = (512, 512)
    centre = ((shape[0] - 1) * spacing[0] / 2 + 20, (shape[1] - 1) * spacing[1] / 2 - 15)
    mask = disk(shape, spacing, 25.0, centre)
    on_grid = to_model_grid(mask, spacing, grid, order=0, fill=0)
    true_area = np.pi * 25.0 ** 2
    assert on_grid.sum() * 2.5 * 2.5 == pytest.approx(true_area, rel=0.08)
    back = from_model_grid(on_grid, grid, shape, spacing)
    assert back.shape == shape
    assert back.sum() * spacing[0] * spacing[1] == pytest.approx(true_area, rel=0.08)
    # The round trip lands where the disk was: overlap is high.
    assert (back & mask).sum() / mask.sum() > 0.9


def test_outside_the_slice_is_air():
    grid = ModelGrid((64, 64), (4.0, 4.0))
    image = np.full((50, 50), 40.0, dtype=np.float32)  # 50 mm field of view, far smaller than the grid's
    out = to_model_grid(image, (1.0, 1.0), grid)
    assert out[0, 0] == -1024.0 and out[32, 32] == pytest.approx(40.0)


@pytest.mark.parametrize("spacing", [None, (0.0, 1.0), (1.0,), (float("nan"), 1.0), (50.0, 50.0), ("a", "b")])
def test_absurd_spacing_is_refused(spacing):
    with pytest.raises(InputError, match="spacing"):
        check_spacing(spacing)


def test_non_2d_is_refused():
    with pytest.raises(InputError, match="2D"):
        to_model_grid(np.zeros((2, 8, 8)), (1.0, 1.0), ModelGrid((8, 8), (1.0, 1.0)))


def test_image_resampling_is_scipys_bilinear_affine_transform_on_any_geometry():
    """The row-then-column resampler gives scipy's order-1 ``affine_transform`` (constant mode) values."""
    from scipy import ndimage

    from liverlesion.grid import AIR_HU, _affine

    rng = np.random.default_rng(7)
    for _ in range(200):
        shape = tuple(int(v) for v in rng.integers(1, 160, 2))
        spacing = tuple(float(v) for v in rng.uniform(0.3, 5.0, 2))
        grid = ModelGrid(tuple(int(v) for v in rng.integers(1, 120, 2)),
                         tuple(float(v) for v in rng.uniform(0.5, 6.0, 2)))
        image = rng.uniform(-1000, 2000, shape).astype(rng.choice([np.float32, np.int16]))
        matrix, offset = _affine(shape, spacing, grid.size, grid.spacing_mm)
        expected = ndimage.affine_transform(image.astype(np.float32), matrix, offset=offset,
                                            output_shape=grid.size, order=1, mode="constant", cval=AIR_HU,
                                            prefilter=False)
        got = to_model_grid(image, spacing, grid)
        assert got.dtype == np.float32 and got.shape == grid.size
        np.testing.assert_allclose(got, expected, atol=1e-2, rtol=0)
        np.testing.assert_array_equal(got == AIR_HU, expected == AIR_HU)  # the same samples fall outside


@pytest.mark.parametrize("view", ["transposed", "rows flipped", "columns flipped", "both flipped",
                                  "transposed, both flipped"])
def test_views_resample_as_their_contiguous_copies(view):
    """The radiological view is a numpy view (transposed and/or flipped strides): sampled in memory order, the
    same samples and weights as a contiguous copy (float32 blending order aside)."""
    stored = np.random.default_rng(7).uniform(-1000, 400, (301, 277)).astype(np.float32)
    image = {"transposed": stored.T, "rows flipped": stored[::-1], "columns flipped": stored[:, ::-1],
             "both flipped": stored[::-1, ::-1], "transposed, both flipped": stored.T[::-1, ::-1]}[view]
    grid = ModelGrid((96, 112), (2.5, 3.0))
    got = to_model_grid(image, (0.9, 0.8), grid)
    want = to_model_grid(np.ascontiguousarray(image), (0.9, 0.8), grid)
    assert got.shape == grid.size and got.flags.c_contiguous
    np.testing.assert_array_equal(got == -1024.0, want == -1024.0)  # the same pixels fall outside the slice
    assert np.abs(got - want).max() < 1e-3
