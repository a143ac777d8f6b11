"""RECIST axes of one slice's lesion against analytic geometry: discs, ellipses, rectangles, L-shapes, pixels.

Pixels are squares (their corners count). A shape drawn by its pixel centres lies, as squares,
between the shape shrunk and grown by half a pixel diagonal, so its diameters are the analytic
ones within one pixel diagonal; rectangles of whole pixels have exact ones.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from liverlesion.errors import InputError
from liverlesion.sdk.diameters import AxialDiameters, axial_diameters
from liverlesion.sdk.series.lesions3d import AxialDiameters as ReExported


def ellipse(size_mm: float, spacing: tuple[float, float], centre_mm: tuple[float, float], semi_long: float,
            semi_short: float, angle_deg: float) -> np.ndarray:
    """Pixels whose centres lie in an ellipse; its long axis at ``angle_deg`` from the column axis towards rows."""
    rows, cols = np.ogrid[:round(size_mm / spacing[0]), :round(size_mm / spacing[1])]
    y, x = rows * spacing[0] - centre_mm[0], cols * spacing[1] - centre_mm[1]
    t = math.radians(angle_deg)
    along, across = y * math.sin(t) + x * math.cos(t), -y * math.cos(t) + x * math.sin(t)
    return np.asarray((along / semi_long) ** 2 + (across / semi_short) ** 2 <= 1.0)


def mm(point: tuple[float, float], spacing: tuple[float, float]) -> np.ndarray:
    return np.array([point[0] * spacing[0], point[1] * spacing[1]])


def check_ends(d: AxialDiameters, spacing: tuple[float, float]) -> None:
    """The end points span the reported lengths, and the short axis is perpendicular to the long one."""
    long_vec = mm(d.long_ends[1], spacing) - mm(d.long_ends[0], spacing)
    short_vec = mm(d.short_ends[1], spacing) - mm(d.short_ends[0], spacing)
    assert np.hypot(*long_vec) == pytest.approx(d.long_mm, rel=1e-9)
    assert np.hypot(*short_vec) == pytest.approx(d.short_mm, rel=1e-9)
    assert abs(np.dot(long_vec, short_vec)) <= 1e-9 * d.long_mm * max(d.short_mm, 1e-9)
    assert d.short_mm <= d.long_mm + 1e-9


def test_the_series_module_reexports_the_one_definition():
    assert ReExported is AxialDiameters


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 0.7), (0.5, 1.0), (1.2, 0.6)])
@pytest.mark.parametrize("radius_mm", [2.0, 7.5, 16.0])
def test_disc_measures_its_diameter_both_ways(spacing, radius_mm):
    diag = math.hypot(*spacing)
    mask = ellipse(2 * radius_mm + 6, spacing, (radius_mm + 2.9, radius_mm + 3.1), radius_mm, radius_mm, 0.0)
    d = axial_diameters(mask, spacing)
    assert abs(d.long_mm - 2 * radius_mm) <= diag
    assert abs(d.short_mm - 2 * radius_mm) <= diag
    check_ends(d, spacing)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 0.7), (0.5, 1.0), (1.2, 0.6)])
@pytest.mark.parametrize("angle", [0, 17, 30, 45, 60, 90, 123, 161])
@pytest.mark.parametrize(("semi_long", "semi_short"), [(20.0, 10.0), (30.0, 8.0)])
def test_ellipse_axes_and_direction_at_any_angle(spacing, angle, semi_long, semi_short):
    half_diag = math.hypot(*spacing) / 2
    mask = ellipse(80, spacing, (40.3, 39.8), semi_long, semi_short, angle)
    d = axial_diameters(mask, spacing)
    assert abs(d.long_mm - 2 * semi_long) <= 2 * half_diag
    assert abs(d.short_mm - 2 * semi_short) <= 2 * half_diag
    check_ends(d, spacing)
    # The long axis (>= 2A - 2h) fits in the ellipse grown by h, whose width at angle t off the
    # major axis is 2 sqrt(A^2 cos^2 t + B^2 sin^2 t) + 2h: that bounds t. (The digital ellipse's
    # flat ends tilt its longest diameter by several degrees at 0 and 90: corner to corner.)
    a, b = semi_long, semi_short
    bound = math.degrees(math.asin(math.sqrt((a * a - (a - 2 * half_diag) ** 2) / (a * a - b * b))))
    (r0, c0), (r1, c1) = (mm(p, spacing) for p in d.long_ends)
    direction = math.degrees(math.atan2(r1 - r0, c1 - c0)) % 180
    assert min(abs(direction - angle), 180 - abs(direction - angle)) <= bound


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 2.0), (0.8, 0.6)])
@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (1, 7), (10, 20), (13, 4), (100, 150)])
def test_rectangle_of_whole_pixels_is_exact(spacing, rows, cols):
    # Long axis: the diagonal. The longest chord perpendicular to it passes through the centre
    # (the chord length is concave and symmetric) and is cut by the longer sides: d * short / long.
    height, width = rows * spacing[0], cols * spacing[1]
    diagonal = math.hypot(height, width)
    mask = np.zeros((rows + 4, cols + 6), bool)
    mask[2:2 + rows, 3:3 + cols] = True
    d = axial_diameters(mask, spacing)
    assert d.long_mm == pytest.approx(diagonal, rel=1e-12)
    assert d.short_mm == pytest.approx(diagonal * min(height, width) / max(height, width), rel=1e-12)
    check_ends(d, spacing)
    corners = {(1.5, 2.5), (1.5, 2.5 + cols), (1.5 + rows, 2.5), (1.5 + rows, 2.5 + cols)}
    ends = {tuple(round(v, 9) for v in p) for p in d.long_ends}
    assert ends <= corners and len(ends) == 2


def test_one_pixel_spans_its_square():
    d = axial_diameters(np.ones((1, 1), bool), (1.0, 2.0))
    assert d.long_mm == pytest.approx(math.sqrt(5))
    assert d.short_mm == pytest.approx(math.sqrt(5) / 2)
    assert sorted(d.long_ends) == [(-0.5, -0.5), (0.5, 0.5)] or sorted(d.long_ends) == [(-0.5, 0.5), (0.5, -0.5)]


def test_l_shape_is_measured_on_its_convex_hull():
    # Bar of rows 0..9 x cols 0..1 and bar of rows 8..9 x cols 0..9. Hull vertices (pixel corners):
    # (-.5,-.5) (-.5,1.5) (7.5,9.5) (9.5,9.5) (9.5,-.5). Long: (-.5,-.5)-(9.5,9.5) = 10 sqrt 2.
    # Along that diagonal the upper chain sits at sqrt 2 and the lower one reaches -5 sqrt 2 at
    # the corner (9.5,-.5): the longest perpendicular chord is 6 sqrt 2 (it crosses the concavity).
    mask = np.zeros((12, 12), bool)
    mask[1:11, 1:3] = True
    mask[9:11, 1:11] = True
    d = axial_diameters(mask, (1.0, 1.0))
    assert d.long_mm == pytest.approx(10 * math.sqrt(2))
    assert d.short_mm == pytest.approx(6 * math.sqrt(2))
    assert sorted(d.long_ends) == [(0.5, 0.5), (10.5, 10.5)]
    assert (10.5, 0.5) in [tuple(round(v, 9) for v in p) for p in d.short_ends]
    check_ends(d, (1.0, 1.0))


def test_pieces_with_empty_rows_between_them():
    mask = np.zeros((10, 10), bool)
    mask[1, 1] = mask[8, 5] = True  # far corners (0.5, 0.5) and (8.5, 5.5)
    d = axial_diameters(mask, (1.0, 1.0))
    assert d.long_mm == pytest.approx(math.hypot(8, 5))
    check_ends(d, (1.0, 1.0))


def test_large_disc_through_the_vectorised_hull():
    spacing = (0.7, 0.7)
    mask = ellipse(150, spacing, (75.2, 74.9), 70.0, 70.0, 0.0)  # 200 rows: more edge lines than the loop path
    d = axial_diameters(mask, spacing)
    assert abs(d.long_mm - 140) <= math.hypot(*spacing)
    assert abs(d.short_mm - 140) <= math.hypot(*spacing)


def test_transposing_or_flipping_changes_nothing():
    mask = ellipse(60, (0.6, 0.9), (31.0, 29.0), 22.0, 9.0, 37.0)
    base = axial_diameters(mask, (0.6, 0.9))
    for other, spacing in ((mask.T, (0.9, 0.6)), (mask[::-1], (0.6, 0.9)), (mask[:, ::-1], (0.6, 0.9))):
        d = axial_diameters(other, spacing)
        assert d.long_mm == pytest.approx(base.long_mm, rel=1e-12)
        assert d.short_mm == pytest.approx(base.short_mm, rel=1e-12)


def test_a_crop_with_its_origin_gives_the_same_axes_and_ends():
    full = np.zeros((64, 64), bool)
    full[20:31, 12:40] = ellipse(30, (1.0, 1.0), (5.0, 13.5), 13.0, 5.0, 10.0)[:11, :28]
    whole = axial_diameters(full, (0.8, 0.8))
    crop = axial_diameters(full[20:31, 12:40], (0.8, 0.8), origin=(20, 12))
    assert crop.long_mm == pytest.approx(whole.long_mm, rel=1e-12)
    assert crop.short_mm == pytest.approx(whole.short_mm, rel=1e-12)
    for got, want in ((crop.long_ends, whole.long_ends), (crop.short_ends, whole.short_ends)):
        assert np.allclose(got, want, atol=1e-9)
    assert axial_diameters(full.astype(np.uint8) * 3, (0.8, 0.8)) == whole  # non-zero counts as lesion


@pytest.mark.parametrize(("mask", "spacing", "match"), [
    (np.zeros((5, 5), bool), (1.0, 1.0), "empty"),
    (np.ones((2, 2, 2), bool), (1.0, 1.0), "2-D"),
    (np.ones((2, 2), bool), (0.0, 1.0), "spacing"),
    (np.ones((2, 2), bool), (1.0,), "spacing"),
    (np.ones((2, 2), bool), "11", "spacing"),
])
def test_bad_input_is_refused_with_what_is_accepted(mask, spacing, match):
    with pytest.raises(InputError, match=match):
        axial_diameters(mask, spacing)
