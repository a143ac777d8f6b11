"""grid_affine: GridSample thetas that reproduce grid.py's resampling (checked with numpy, float64)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from liverlesion.errors import InputError
from liverlesion.grid import ModelGrid
from liverlesion.grid_affine import TIE_BIAS_PX, slice_to_model_theta
from liverlesion.sdk.geometry import Orientation, source_index, to_model

GRID = ModelGrid((32, 40), (3.0, 2.5))
ORIENTATIONS = [Orientation(*flags) for flags in itertools.product((False, True), repeat=3)]


def _pixel_coords(theta: np.ndarray, out_shape: tuple[int, int], in_shape: tuple[int, int]):
    """ONNX GridSample (align_corners=1): pixel (x, y) in the input of each output pixel, and inside-ness."""
    rows, cols = out_shape
    y, x = np.meshgrid(np.linspace(-1, 1, rows), np.linspace(-1, 1, cols), indexing="ij")
    t = theta.astype(np.float64)
    gx, gy = t[0, 0] * x + t[0, 1] * y + t[0, 2], t[1, 0] * x + t[1, 1] * y + t[1, 2]
    inside = (np.abs(gx) <= 1 + 1e-9) & (np.abs(gy) <= 1 + 1e-9)
    return (gx + 1) / 2 * (in_shape[1] - 1), (gy + 1) / 2 * (in_shape[0] - 1), inside


def _bilinear(image: np.ndarray, theta: np.ndarray, out_shape: tuple[int, int], fill: float) -> np.ndarray:
    px, py, inside = _pixel_coords(theta, out_shape, image.shape)
    px, py = np.clip(px, 0, image.shape[1] - 1), np.clip(py, 0, image.shape[0] - 1)  # border padding
    x0 = np.minimum(np.floor(px).astype(int), image.shape[1] - 2)
    y0 = np.minimum(np.floor(py).astype(int), image.shape[0] - 2)
    fx, fy = px - x0, py - y0
    v = image.astype(np.float64)
    out = (v[y0, x0] * (1 - fx) * (1 - fy) + v[y0, x0 + 1] * fx * (1 - fy)
           + v[y0 + 1, x0] * (1 - fx) * fy + v[y0 + 1, x0 + 1] * fx * fy)
    return np.where(inside, out, fill)


def _model_coords(n_stored: int, stored_mm: float, n_model: int, model_mm: float) -> np.ndarray:
    """Float64 model-grid coordinate of each canonical pixel along one axis (centres aligned)."""
    return (np.arange(n_stored) - (n_stored - 1) / 2) * stored_mm / model_mm + (n_model - 1) / 2


def _near_tie(shape, spacing, orientation: Orientation, grid: ModelGrid, tol: float = 1e-3) -> np.ndarray:
    """Stored pixels whose model coordinate is within ``tol`` px of a half-pixel tie or of the grid's edge."""
    (hc, wc), (rc, cc) = orientation.canonical_shape(shape), orientation.canonical_spacing(spacing)
    axes = []
    for n, mm, m, m_mm in ((hc, rc, grid.size[0], grid.spacing_mm[0]), (wc, cc, grid.size[1], grid.spacing_mm[1])):
        c = _model_coords(n, mm, m, m_mm)
        axes.append((np.abs(c % 1 - 0.5) < tol) | (np.abs(c) < tol) | (np.abs(c - (m - 1)) < tol))
    return orientation.from_canonical(axes[0][:, None] | axes[1][None, :])


#: (shape, spacing): two slices smaller than the model grid's field (fill around them), one larger.
CASES = [((67, 90), (1.07, 0.93)), ((90, 67), (0.61, 1.33)), ((42, 44), (3.07, 2.43))]


@pytest.mark.parametrize("orientation", ORIENTATIONS, ids=lambda o: "".join("tfc"[i] if v else "-" for i, v in
                                                                            enumerate(o.to_dict().values())))
@pytest.mark.parametrize("shape, spacing", CASES)
def test_theta_samples_the_stored_slice_as_to_model_does(shape, spacing, orientation):
    rng = np.random.default_rng(sum(shape))
    hu = rng.normal(0, 500, shape).astype(np.float32)
    theta, _ = slice_to_model_theta(shape, spacing, orientation, GRID)
    reference = to_model(hu, spacing, orientation, GRID)
    assert (reference == -1024).any() == (shape != (42, 44))  # the fill is checked where the grid reaches past
    np.testing.assert_allclose(_bilinear(hu, theta, GRID.size, -1024.0), reference, atol=0.02)


@pytest.mark.parametrize("orientation", ORIENTATIONS[::3])
@pytest.mark.parametrize("shape, spacing", CASES)
def test_theta_back_finds_each_stored_pixels_model_pixel_as_source_index_does(shape, spacing, orientation):
    _, theta_back = slice_to_model_theta(shape, spacing, orientation, GRID)
    px, py, inside = _pixel_coords(theta_back, shape, GRID.size)
    inside &= (np.abs(px - np.clip(px, 0, GRID.size[1] - 1)) < 1e-3) & (
        np.abs(py - np.clip(py, 0, GRID.size[0] - 1)) < 1e-3)  # the bias may step just past the last centre
    px, py = np.clip(px, 0, GRID.size[1] - 1), np.clip(py, 0, GRID.size[0] - 1)
    flat = np.rint(py).astype(int) * GRID.size[1] + np.rint(px).astype(int)  # rint: GridSample's ties to even
    got = np.where(inside, flat, -1)
    expected = source_index(GRID, shape, spacing, orientation)
    differ = got != expected
    assert (expected == -1).any() == (shape == (42, 44))  # only the larger slice has pixels outside the grid
    assert not (differ & ~_near_tie(shape, spacing, orientation, GRID)).any()
    assert differ.mean() <= 1e-3


def test_exact_half_pixel_ties_round_upwards_like_scipy():
    # 0.5 mm on a 1 mm grid: every other stored pixel sits exactly between two model pixels
    grid = ModelGrid((8, 8), (1.0, 1.0))
    _, theta_back = slice_to_model_theta((15, 15), (0.5, 0.5), Orientation(), grid)
    coords = _pixel_coords(theta_back, (15, 15), grid.size)[0][0]
    expected = source_index(grid, (15, 15), (0.5, 0.5), Orientation())[0]
    inside = expected >= 0
    ties = np.abs(coords % 1 - 0.5) < 1e-3
    assert (ties & inside).sum() >= 6  # ties to even (np.rint without the bias) would send half of them down
    assert np.array_equal(np.rint(coords[inside]).astype(int), expected[inside] % 8)


def test_a_slice_already_on_the_grid_is_sampled_in_place():
    theta, theta_back = slice_to_model_theta(GRID.size, GRID.spacing_mm, Orientation(), GRID)
    np.testing.assert_allclose(theta, [[1, 0, 0], [0, 1, 0]], atol=1e-7)
    np.testing.assert_allclose(theta_back[:, :2], np.eye(2), atol=1e-7)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_theta_back_undoes_theta_up_to_the_tie_bias(orientation):
    theta, theta_back = slice_to_model_theta((300, 257), (0.7, 0.9), orientation, GRID)
    np.testing.assert_allclose(theta_back[:, :2] @ theta[:, :2], np.eye(2), atol=1e-6)
    shift_px = theta_back[:, 2] * (np.array(GRID.size[::-1]) - 1) / 2  # (x, y) in model pixels
    np.testing.assert_allclose(shift_px, TIE_BIAS_PX, rtol=1e-3)


@pytest.mark.parametrize("shape", [(1, 5), (5,), (5, 5, 5), "ab", (True, 5), (5.0, 5), None])
def test_a_bad_shape_is_refused_saying_what_is_accepted(shape):
    with pytest.raises(InputError, match="integers of at least 2"):
        slice_to_model_theta(shape, (1.0, 1.0), Orientation(), GRID)


@pytest.mark.parametrize("kwargs, match", [({"spacing": (0.0, 1.0)}, "spacing"), ({"spacing": "11"}, "spacing"),
                                           ({"orientation": None}, "Orientation"),
                                           ({"orientation": (True, False, False)}, "Orientation"),
                                           ({"grid": ((32, 32), (1.0, 1.0))}, "ModelGrid")])
def test_bad_spacing_orientation_or_grid_is_refused(kwargs, match):
    args = {"shape": (64, 64), "spacing": (1.0, 1.0), "orientation": Orientation(), "grid": GRID, **kwargs}
    with pytest.raises(InputError, match=match):
        slice_to_model_theta(**args)
