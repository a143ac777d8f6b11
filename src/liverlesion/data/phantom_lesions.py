"""Liver lesions for the phantoms: cyst, hemangioma and metastasis, as radiology describes them.

Synthetic, NOT clinical data. Portal-venous appearance (paper.md's CT table):

- cyst: 0-20 HU, homogeneous, round or oval, sharp margin; small ones are lifted
  towards liver HU by partial volume, some show a faint rim.
- hemangioma: well-defined; bright nodules at the rim, as dense as the blood pool,
  with gaps between them; a darker centre that fills in centripetally to a random
  degree, up to almost uniformly bright.
- metastasis: 40-80 HU, hypodense to liver, heterogeneous (sometimes barely),
  lobulated, often a brighter rim (target), sometimes a darker necrotic centre;
  often several per slice.

Parameters are drawn so that classes overlap at the edges. A lesion is an
ellipsoid in mm; :func:`paint` cuts it at a height z, so the same lesion serves
a single slice and a 3D tumour. It is painted only over liver pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..labels import LESION_CLASSES
from .phantom_anatomy import LESION, LIVER_TISSUES, Canvas, Harmonics, Patient, harmonics, polar

#: Lesions per slice (1..4) and their probabilities, per class: metastases are often multiple.
_COUNT_P = {"cyst": (0.55, 0.3, 0.15, 0.0), "hemangioma": (0.65, 0.25, 0.1, 0.0),
            "metastasis": (0.3, 0.3, 0.25, 0.15)}


@dataclass
class Lesion:
    """One lesion: an ellipsoid (mm) of one kind, with its random appearance."""

    kind: str
    radius: float  # in-plane semi-axis, mm
    z_radius: float
    aspect: float  # second in-plane semi-axis / radius
    rot: float
    wobble: Harmonics
    edge_px: float  # margin width, pixels
    look: dict[str, Any]
    texture: np.ndarray  # (n, 4) wave vector (normalised units, also along z) and phase
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0

    @property
    def reach(self) -> float:
        """Largest in-plane distance (mm) from the centre to the margin."""
        return self.radius * (1.0 + float(np.abs(self.wobble[1]).sum()))


def lesion_count(rng: np.random.Generator, kind: str) -> int:
    return int(rng.choice(4, p=_COUNT_P[kind])) + 1


def _diameter(rng: np.random.Generator) -> float:
    """Diameter in mm: 10-60, mostly 15-50."""
    return float(np.clip(rng.lognormal(math.log(30.0), 0.36), 10.0, 60.0))


def draw_lesion(rng: np.random.Generator, kind: str, patient: Patient) -> Lesion:
    """A lesion of ``kind`` (one of labels.LESION_CLASSES) with random size and appearance."""
    radius = _diameter(rng) / 2.0
    liver, blood = patient.hu["liver"], patient.hu["blood"]
    look: dict[str, Any]
    if kind == "cyst":
        hu = float(rng.uniform(0, 18))
        if radius < 8.0 and rng.random() < 0.6:  # partial volume with the liver around a small cyst
            hu += (liver - hu) * float(rng.uniform(0.05, 0.3))
        look = {"hu": hu, "texture": float(rng.uniform(0, 3)),
                "rim": float(rng.uniform(8, 25)) if rng.random() < 0.3 else 0.0}
        aspect, wobble, edge = rng.uniform(0.8, 1.0), harmonics(rng, (2, 3), 0.03), rng.uniform(0.6, 1.0)
    elif kind == "hemangioma":
        n = int(rng.integers(3, 9))
        size = np.maximum(rng.uniform(0.13, 0.28, n), 2.0 / radius)  # nodules of at least 2 mm radius
        look = {"centre": float(rng.uniform(35, min(75, liver - 30))), "blood": blood + float(rng.uniform(-15, 10)),
                "fill": float(rng.uniform(0, 1)) ** (0.7 if radius > 8 else 0.4), "texture": float(rng.uniform(1, 4)),
                "core_phase": float(rng.uniform(0, 2 * np.pi)),
                "nodules": np.stack([rng.uniform(0, 2 * np.pi, n), 1.0 - size * rng.uniform(0.7, 1.1, n), size], 1)}
        aspect, wobble, edge = rng.uniform(0.8, 1.0), harmonics(rng, (3, 4, 5), 0.07), rng.uniform(0.7, 1.1)
    elif kind == "metastasis":
        base = float(rng.uniform(40, min(80, liver - 25)))
        look = {"hu": base, "texture": float(rng.uniform(2, 18)),
                # The target: a viable rim enhancing to liver HU or a little above.
                "rim": liver + float(rng.uniform(0, 30)) if rng.random() < 0.65 else 0.0,
                "rim_width": max(float(rng.uniform(0.1, 0.22)), 2.0 / radius),
                "necrosis": float(rng.uniform(10, 25)) if rng.random() < 0.4 else 0.0,
                "necrosis_radius": float(rng.uniform(0.3, 0.6))}
        aspect, wobble, edge = rng.uniform(0.75, 1.0), harmonics(rng, (2, 3, 4, 5), 0.13), rng.uniform(1.2, 2.0)
    else:
        raise ValueError(f"unknown lesion kind {kind!r}; expected one of {LESION_CLASSES}")
    waves = rng.normal(0.0, 1.0, (6, 3))
    waves *= (rng.uniform(4.0, 10.0, 6) / np.linalg.norm(waves, axis=1))[:, None]
    return Lesion(kind=kind, radius=radius, z_radius=radius * float(rng.uniform(0.8, 1.2)), aspect=float(aspect),
                  rot=float(rng.uniform(0, np.pi)), wobble=wobble, edge_px=float(edge), look=look,
                  texture=np.concatenate([waves, rng.uniform(0, 2 * np.pi, (6, 1))], 1).astype(np.float32))


def place(rng: np.random.Generator, canvas: Canvas, lesions: list[Lesion],
          others: Sequence[Lesion] = ()) -> list[Lesion]:
    """Centre each lesion (largest first) inside the liver of ``canvas``, clear of the others.

    A lesion too big for the room left is shrunk (down to 4 mm radius), else
    dropped; returns the placed lesions, with x and y set (z is left as it is).
    """
    liver = np.isin(canvas.tissue, LIVER_TISSUES[:2])
    step = max(1, canvas.size // 128)  # the distance map on a coarse grid: fast, and margins absorb the error
    room = ndimage.distance_transform_edt(liver[::step, ::step]) * (canvas.spacing * step)
    xs, ys = canvas.coordinates(step)
    margin = canvas.spacing * step + 1.5
    placed: list[Lesion] = []
    for lesion in sorted(lesions, key=lambda item: -item.radius):
        free = room.copy()
        for other in [*others, *placed]:
            gap = np.hypot(xs - other.x, ys - other.y) - other.reach - 2.0
            np.minimum(free, gap, out=free)
        best = float(free.max())
        if best < lesion.reach + margin:
            shrink = (best - margin) / lesion.reach
            if lesion.radius * shrink < 4.0:
                continue
            lesion.radius *= shrink
            lesion.z_radius *= shrink
        rows, cols = np.nonzero(free >= lesion.reach + margin)
        if rows.size == 0:
            rows, cols = np.nonzero(free >= free.max())
        pick = int(rng.integers(rows.size))
        lesion.x, lesion.y = float(xs[0, cols[pick]]), float(ys[rows[pick], 0])
        placed.append(lesion)
    return placed


def paint(canvas: Canvas, lesion: Lesion, z: float, label: int) -> int:
    """Paint the cut of ``lesion`` at height ``z`` over liver pixels; returns the pixels labelled."""
    dz = (z - lesion.z) / lesion.z_radius
    if abs(dz) >= 1.0:
        return 0
    radius = lesion.radius * math.sqrt(1.0 - dz * dz)
    r_px = radius / canvas.spacing
    if r_px < 0.7:
        return 0
    reach = lesion.reach * radius / lesion.radius + 2.0 * canvas.spacing
    reg = canvas.region(lesion.x, lesion.y, reach, reach)
    if reg is None:
        return 0
    u, v, rho = polar(reg, lesion.x, lesion.y, radius, radius * lesion.aspect, lesion.rot, lesion.wobble)
    liver = np.isin(reg.tissue, LIVER_TISSUES)
    value = _LOOKS[lesion.kind](lesion, u, v, rho, dz, r_px)
    alpha = np.clip((1.0 - rho) * (r_px / lesion.edge_px) + 0.5, 0.0, 1.0) * liver
    reg.hu += alpha * (value - reg.hu)
    inside = (rho <= 1.0) & liver
    reg.tissue[inside] = LESION
    reg.lesion[inside] = label
    return int(inside.sum())


def _texture(lesion: Lesion, u: np.ndarray, v: np.ndarray, dz: float) -> np.ndarray:
    """Unit-SD smooth heterogeneity in the lesion's own (normalised) coordinates, consistent along z."""
    k = lesion.texture
    return math.sqrt(2.0 / len(k)) * sum(np.cos(a * u + b * v + (c * dz + p)) for a, b, c, p in k)


def _cyst(lesion: Lesion, u: np.ndarray, v: np.ndarray, rho: np.ndarray, dz: float, r_px: float) -> np.ndarray:
    look = lesion.look
    value = look["hu"] + look["texture"] * _texture(lesion, u, v, dz)
    if look["rim"]:
        value = value + look["rim"] * (rho > 1.0 - 1.5 / max(r_px, 1.5))
    return value


def _hemangioma(lesion: Lesion, u: np.ndarray, v: np.ndarray, rho: np.ndarray, dz: float,
                r_px: float) -> np.ndarray:
    look = lesion.look
    pixel = 1.0 / max(r_px, 1.0)
    nodules = np.zeros_like(rho)
    for angle, centre, size in look["nodules"]:
        dist = np.hypot(u - centre * math.cos(angle), v - centre * math.sin(angle))
        np.maximum(nodules, np.clip((size - dist) / pixel + 0.5, 0.0, 1.0), out=nodules)
    # Centripetal fill-in: the enhanced band grows inwards from the rim as ``fill`` rises.
    theta = np.arctan2(v, u)
    core = (1.0 - look["fill"]) * 0.85 * (1.0 + 0.15 * np.cos(3.0 * theta + look["core_phase"]))
    # Fully filled in, the lesion follows the blood pool.
    filled = look["fill"] * (0.6 + 0.4 * look["fill"]) * np.clip((rho - core) / 0.1, 0.0, 1.0)
    enhancement = np.maximum(nodules, filled)
    return (look["centre"] + (look["blood"] - look["centre"]) * enhancement
            + look["texture"] * _texture(lesion, u, v, dz))


def _metastasis(lesion: Lesion, u: np.ndarray, v: np.ndarray, rho: np.ndarray, dz: float,
                r_px: float) -> np.ndarray:
    look = lesion.look
    value = look["hu"] + look["texture"] * _texture(lesion, u, v, dz)
    if look["necrosis"]:
        value = value - look["necrosis"] * np.clip((look["necrosis_radius"] - rho) / 0.15 + 0.5, 0.0, 1.0)
    if look["rim"]:  # target appearance: an enhancing viable rim
        ring = np.clip((rho - (1.0 - look["rim_width"])) / 0.08, 0.0, 1.0)
        value = value + ring * (look["rim"] - value)
    return np.maximum(value, 15.0)


_LOOKS = {"cyst": _cyst, "hemangioma": _hemangioma, "metastasis": _metastasis}
