"""RECIST 1.1 axes of a lesion on one axial slice: its longest diameter and the longest one perpendicular to it.

The one definition used per slice and per series. Pixels count as squares: a lesion spans the
outer edges of its pixels, as calipers span the visible extent (a disc of radius r measures
about 2r, not 2r - 1 pixel). Both axes are measured on the convex hull of those squares, in mm,
so anisotropic pixels are right:

- long axis: the longest distance between two points of the hull (maximum Feret diameter);
- short axis: the longest chord of the hull perpendicular to the long axis (RECIST 1.1's
  "longest diameter perpendicular to the long axis"; for a convex lesion a chord of the lesion
  itself, for a non-convex one the calipers' chord across its concavity).

End points are (row, col) in input pixels, pixel centres at integers (as ``Lesion.centroid``),
so an end on a pixel's corner has half-integer coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..grid import check_spacing

Point = tuple[float, float]

#: Above this many edge lines the hull first keeps only the points that can be vertices, vectorised.
_VECTOR_PRUNE = 64


@dataclass(frozen=True)
class AxialDiameters:
    """RECIST 1.1 axes of a lesion on one slice, in mm: the longest diameter and the longest one
    perpendicular to it, with their end points as (row, col) input pixels (for drawing)."""

    long_mm: float
    short_mm: float
    long_ends: tuple[Point, Point]
    short_ends: tuple[Point, Point]

    def to_dict(self) -> dict[str, Any]:
        return {"long_mm": self.long_mm, "short_mm": self.short_mm,
                "long_ends": [list(p) for p in self.long_ends], "short_ends": [list(p) for p in self.short_ends]}


def axial_diameters(mask: np.ndarray, spacing_mm: Sequence[float], origin: Sequence[int] = (0, 0)) -> AxialDiameters:
    """The RECIST long and short axes of the lesion pixels of ``mask`` (rows, cols), in mm.

    ``spacing_mm`` is (row_mm, col_mm), as ``grid.check_spacing`` accepts it. ``mask`` may be a
    crop (e.g. a lesion's bounding box): ``origin`` is the (row, col) of its first pixel, added to
    the end points. Every pixel counts, connected or not; an empty mask has no axes and raises
    :class:`InputError`.
    """
    row_mm, col_mm = check_spacing(spacing_mm)  # a Spacing checked upstream passes at once
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"axial_diameters needs a 2-D (rows, cols) lesion mask; got shape {mask.shape}")
    if mask.dtype != bool:
        mask = mask != 0
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        raise InputError("axial_diameters needs a mask with at least one lesion pixel; this one is empty")
    y, x = _hull(mask[rows], rows)  # polygon vertices in doubled pixel-corner units
    # Points as complex numbers (row_mm + 1j col_mm): distances and rotations are then one numpy call each.
    points = np.array(y, dtype=np.float64) * (0.5 * row_mm) + 1j * (np.array(x, dtype=np.float64) * (0.5 * col_mm))
    long_mm, i, j = _feret(points)
    short_mm, ends = _perpendicular_chord(points, i, j)
    short_mm = min(short_mm, long_mm)  # a chord never exceeds the diameter; rounding could make it by an ulp
    r0, c0 = float(origin[0]), float(origin[1])

    def pixel(z: complex) -> Point:
        return float(z.real) / row_mm + r0, float(z.imag) / col_mm + c0

    return AxialDiameters(long_mm=long_mm, short_mm=short_mm,
                          long_ends=(pixel(points[i]), pixel(points[j])), short_ends=(pixel(ends[0]), pixel(ends[1])))


def _hull(mask: np.ndarray, rows: np.ndarray) -> tuple[list[int], list[int]]:
    """Convex hull of the pixel squares of ``mask`` (its rows are ``rows``): vertex rows and cols, in polygon order.

    Coordinates are doubled so that every corner is an integer: pixel (r, c) spans rows 2r-1..2r+1
    and cols 2c-1..2c+1. Only each edge line's outermost corners can be hull vertices, so the hull
    is the lower envelope of the west corners joined to the upper envelope of the east ones.
    """
    west = (2 * mask.argmax(axis=1) - 1).tolist()
    east = (2 * (mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)) + 1).tolist()
    if int(rows[-1] - rows[0]) + 1 == rows.size:  # contiguous rows: neighbours share an edge line
        y = list(range(2 * int(rows[0]) - 1, 2 * int(rows[-1]) + 2, 2))
        west = [west[0], *map(min, west[:-1], west[1:]), west[-1]]
        east = [east[0], *map(max, east[:-1], east[1:]), east[-1]]
    else:  # rows with gaps (a mask of several pieces): merge the shared lines only
        y, west, east = _edge_lines(rows.tolist(), west, east)
    if len(y) > _VECTOR_PRUNE:
        y_west, west = _candidates(y, west)
        y_east, east = _candidates(y, [-x for x in east])
        east = [-x for x in east]
    else:
        y_west = y_east = y
    w = _envelope(y_west, west, 1)
    e = _envelope(y_east, east, -1)[::-1]  # west side top to bottom, east side bottom to top
    return [p[0] for p in w] + [p[0] for p in e], [p[1] for p in w] + [p[1] for p in e]


def _edge_lines(rows: list[int], west: list[int], east: list[int]) -> tuple[list[int], list[int], list[int]]:
    """Edge lines (doubled rows) of pixel rows ``rows`` with their westmost and eastmost corner."""
    lines: dict[int, list[int]] = {}
    for r, w, e in zip(rows, west, east):
        for line in (2 * r - 1, 2 * r + 1):
            got = lines.get(line)
            lines[line] = [w, e] if got is None else [min(got[0], w), max(got[1], e)]
    y = sorted(lines)
    return y, [lines[v][0] for v in y], [lines[v][1] for v in y]


def _candidates(y: list[int], x: list[int]) -> tuple[list[int], list[int]]:
    """The points of (y ascending, x) that can be vertices of the lower envelope: a new minimum from above or below.

    A point with a smaller x somewhere above it and somewhere below lies above the segment
    joining those two, so it is no vertex; this drops most of a long chain in a few numpy calls.
    """
    xs = np.asarray(x)
    above = np.minimum.accumulate(xs)
    below = np.minimum.accumulate(xs[::-1])[::-1]
    keep = np.ones(xs.size, dtype=bool)
    keep[1:] = xs[1:] < above[:-1]
    keep[:-1] |= xs[:-1] < below[1:]
    keep[-1] = True
    ys = np.asarray(y)
    return ys[keep].tolist(), xs[keep].tolist()


def _envelope(y: Sequence[int], x: Sequence[int], side: int) -> list[tuple[int, int]]:
    """The convex envelope of points (y ascending, x): lower in x for side 1, upper for side -1.

    Andrew's monotone chain in exact integer arithmetic, collinear points dropped.
    """
    chain: list[tuple[int, int]] = []
    for p in zip(y, x):
        while len(chain) >= 2:
            (y0, x0), (y1, x1) = chain[-2], chain[-1]
            if ((y1 - y0) * (p[1] - x1) - (x1 - x0) * (p[0] - y1)) * side > 0:
                break
            chain.pop()
        chain.append(p)
    return chain


def _feret(points: np.ndarray) -> tuple[float, int, int]:
    """The largest distance between two hull vertices (complex, mm) and their indices (first pair on ties)."""
    distance = np.abs(points[:, None] - points[None, :])
    i, j = divmod(int(np.argmax(distance)), points.size)
    return float(distance[i, j]), i, j


def _perpendicular_chord(points: np.ndarray, i: int, j: int) -> tuple[float, tuple[complex, complex]]:
    """The longest chord of the convex polygon ``points`` (complex, mm) perpendicular to vertex i -> vertex j.

    The ends of the longest diameter are the polygon's extremes along it, so they split it into
    two chains, each monotone along the axis; the chord across at a point of the axis is the gap
    between the chains there, a concave piecewise-linear function, largest at some vertex.
    """
    p = points[i]
    u = (points[j] - p) / abs(points[j] - p)
    local = (points - p) / u  # along the axis + 1j across it
    k = points.size
    order = np.arange(i, i + k + 1) % k  # the polygon from vertex i round to vertex i again
    m = (j - i) % k
    one, two = local[order[:m + 1]], local[order[m:][::-1]]  # both chains run from vertex i to vertex j
    # Rounding can step a chain back along the axis by ~1e-15; np.interp needs it non-decreasing.
    a1, a2 = np.maximum.accumulate(one.real), np.maximum.accumulate(two.real)
    across1 = one.imag - np.interp(a1, a2, two.imag)  # from each vertex of one chain to the other chain
    across2 = two.imag - np.interp(a2, a1, one.imag)
    k1, k2 = int(np.argmax(np.abs(across1))), int(np.argmax(np.abs(across2)))
    if abs(across1[k1]) >= abs(across2[k2]):
        at, end, gap = a1[k1], one.imag[k1], across1[k1]
    else:
        at, end, gap = a2[k2], two.imag[k2], across2[k2]
    return float(abs(gap)), (complex(p + u * complex(at, end)), complex(p + u * complex(at, end - gap)))
