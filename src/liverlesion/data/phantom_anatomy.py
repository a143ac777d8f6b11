"""Procedural abdominal anatomy for the phantoms: one simulated patient, painted slice by slice.

Synthetic, NOT clinical data: shapes and HU follow textbook portal-venous CT values
(the CT table in shared/design/paper.md) closely enough to exercise the pipeline, no more.

Coordinates are mm: x towards the patient's left (image right), y posterior (image
down), z superior, origin at the body centre; z = 0 is the liver's inferior tip and
``Patient.liver_height`` its dome. Organs are painted back to front into a
:class:`Canvas` holding HU and a tissue id per pixel; :func:`finish` then adds
texture, partial-volume blur and correlated noise. Every operation is vectorised
over the bounding box of one structure, so a 512 x 512 slice takes tens of ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

# Tissue ids (index into texture amplitudes); LIVER_TISSUES carry the liver label.
(AIR, TABLE, SKIN, FAT, MUSCLE, VISCERAL_FAT, BOWEL, GAS, KIDNEY, MEDULLA, SINUS, SPLEEN, STOMACH, LIVER,
 HEPATIC_VESSEL, GALLBLADDER, VESSEL, BONE, MARROW, CANAL, DISC, LUNG, LESION) = range(23)
LIVER_TISSUES = (LIVER, HEPATIC_VESSEL, LESION)
_TEXTURE_SD = {FAT: 8, VISCERAL_FAT: 8, MUSCLE: 6, BOWEL: 14, KIDNEY: 5, MEDULLA: 5, SPLEEN: 4, STOMACH: 8,
                LIVER: 3, HEPATIC_VESSEL: 3, VESSEL: 3, BONE: 40, MARROW: 40, DISC: 6, LUNG: 25, SINUS: 10}
#: SD (HU) of the smooth texture each tissue gets on top of its base HU, indexed by tissue id.
_TEXTURE_HU = np.array([_TEXTURE_SD.get(tissue, 0) for tissue in range(LESION + 1)], np.float32)
AIR_HU = -1000.0
#: HU range of the output (a 12-bit CT range).
HU_RANGE = (-1024.0, 3071.0)

Harmonics = tuple[np.ndarray, np.ndarray, np.ndarray]  # (orders, amplitudes, phases) of a polar outline


def harmonics(rng: np.random.Generator, orders: tuple[int, ...], amplitude: float) -> Harmonics:
    """A random wobble of a polar outline: radius *= 1 + sum a_k cos(k theta + phi_k)."""
    k = np.asarray(orders, np.float32)
    amplitudes = rng.uniform(0.3, 1.0, k.size) * amplitude / k.size ** 0.5
    return k, amplitudes.astype(np.float32), rng.uniform(0, 2 * np.pi, k.size).astype(np.float32)


@dataclass
class Region:
    """A window of a canvas: views of its arrays and the mm coordinates of its pixels."""

    hu: np.ndarray
    tissue: np.ndarray
    lesion: np.ndarray
    x: np.ndarray  # (1, w) mm
    y: np.ndarray  # (h, 1) mm


class Canvas:
    """One slice being painted: HU, tissue id and lesion label per pixel."""

    def __init__(self, size: int, spacing: float, offset: tuple[float, float]) -> None:
        self.size, self.spacing = size, spacing
        self.hu = np.full((size, size), AIR_HU, np.float32)
        self.tissue = np.zeros((size, size), np.uint8)
        self.lesion = np.zeros((size, size), np.uint8)
        centre = (size - 1) / 2.0
        self._x = ((np.arange(size) - centre) * spacing + offset[0]).astype(np.float32)
        self._y = ((np.arange(size) - centre) * spacing + offset[1]).astype(np.float32)

    def region(self, cx: float, cy: float, rx: float, ry: float) -> Region | None:
        """The pixels whose centres lie in the mm box [cx - rx, cx + rx] x [cy - ry, cy + ry]."""
        c0, c1 = np.searchsorted(self._x, (cx - rx, cx + rx))
        r0, r1 = np.searchsorted(self._y, (cy - ry, cy + ry))
        if c0 >= c1 or r0 >= r1:
            return None
        rows, cols = slice(r0, r1), slice(c0, c1)
        return Region(self.hu[rows, cols], self.tissue[rows, cols], self.lesion[rows, cols],
                      self._x[None, c0:c1], self._y[r0:r1, None])

    def coordinates(self, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """mm of every ``step``-th pixel centre: x as (1, w), y as (h, 1)."""
        return self._x[None, ::step], self._y[::step, None]

    def full(self) -> Region:
        return Region(self.hu, self.tissue, self.lesion, *self.coordinates())


def polar(reg: Region, cx: float, cy: float, ax: float, ay: float, rot: float = 0.0,
          wobble: Harmonics | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised (u, v) and radius of an ellipse (semi-axes ax, ay, turned by rot); inside is rho <= 1."""
    dx, dy = reg.x - cx, reg.y - cy
    if rot:
        c, s = math.cos(rot), math.sin(rot)
        u, v = (c * dx + s * dy) / ax, (c * dy - s * dx) / ay
    else:
        u, v = np.broadcast_arrays(dx / ax, dy / ay)
    rho = np.hypot(u, v)
    if wobble is not None:
        theta = np.arctan2(v, u)
        k, amp, phase = wobble
        rho = rho / (1.0 + sum(a * np.cos(n * theta + p) for n, a, p in zip(k, amp, phase)))
    return u, v, rho


def blob(canvas: Canvas, cx: float, cy: float, ax: float, ay: float, rot: float = 0.0,
         wobble: Harmonics | None = None) -> tuple[Region, np.ndarray] | None:
    """The region around an ellipse and its normalised radius (None if it misses the slice)."""
    if ax <= 0 or ay <= 0:
        return None
    reach = max(ax, ay) * (1.0 + (float(np.abs(wobble[1]).sum()) if wobble is not None else 0.0))
    reg = canvas.region(cx, cy, reach, reach)
    if reg is None:
        return None
    return reg, polar(reg, cx, cy, ax, ay, rot, wobble)[2]


def fill(reg: Region, where: np.ndarray, hu: float | np.ndarray, tissue: int) -> None:
    """Paint ``hu`` (a value or an array of the region's shape) and a tissue id where ``where``."""
    reg.hu[where] = hu[where] if isinstance(hu, np.ndarray) else hu
    reg.tissue[where] = tissue


def paint_ellipse(canvas: Canvas, cx: float, cy: float, ax: float, ay: float, hu: float, tissue: int, *,
                  rot: float = 0.0, wobble: Harmonics | None = None, within: tuple[int, ...] | None = None) -> None:
    """Fill an ellipse, optionally only over pixels whose tissue is in ``within``."""
    found = blob(canvas, cx, cy, ax, ay, rot, wobble)
    if found is None:
        return
    reg, rho = found
    where = rho <= 1.0
    if within is not None:
        where &= np.isin(reg.tissue, within)
    fill(reg, where, hu, tissue)


def profile(z: float, lo: float, hi: float, power: float = 0.5) -> float:
    """Smooth 0..1..0 size factor of an organ spanning z in [lo, hi] (an ellipsoid's cross-section)."""
    if not hi > z > lo:
        return 0.0
    t = (2.0 * z - lo - hi) / (hi - lo)
    return (1.0 - t * t) ** power


@dataclass
class Segment:
    """A straight piece of a vessel tree: a tube of ``radius`` mm between two 3D points."""

    start: np.ndarray
    end: np.ndarray
    radius: float
    hu: float


@dataclass
class Loop:
    """A bowel loop: a blob that drifts and swells along z."""

    x: float
    y: float
    z: float
    half_height: float
    radius: float
    drift: tuple[float, float]
    content: str  # "fluid", "gas" or "stool"
    content_hu: float
    wobble: Harmonics
    bubbles: np.ndarray  # (n, 4) gas bubbles in stool: x, y (fractions of the radius), z offset mm, radius mm


@dataclass
class Patient:
    """The random anatomy of one simulated patient (all lengths mm, all values HU)."""

    size: int
    spacing: float
    offset: tuple[float, float]  # body centre relative to the image centre, mm
    half_width: float
    half_depth: float
    back_flat: float
    body_wobble: Harmonics
    fat_sc: float
    wall: float
    liver_height: float
    liver_wobble: Harmonics
    left_lobe_wobble: Harmonics
    lobe: dict[str, float]
    hu: dict[str, float]
    spine: dict[str, float]
    kidneys: list[dict[str, float]]
    spleen: dict[str, float]
    stomach: dict[str, float]
    gallbladder: dict[str, float] | None
    ribs: list[tuple[float, float, float]]  # (side -1 right / +1 left, angle from the back at z=0, change per mm)
    lung_start: float
    noise_sd: float
    noise_grain_px: float
    blur_px: float
    vessels: list[Segment] = field(default_factory=list)
    loops: list[Loop] = field(default_factory=list)

    @property
    def cavity(self) -> tuple[float, float]:
        """Semi-axes of the abdominal cavity (inside fat and muscle wall)."""
        return self.half_width - self.fat_sc - self.wall, self.half_depth - 0.8 * self.fat_sc - self.wall


def draw_patient(rng: np.random.Generator, size: int) -> Patient:
    """A random patient, imaged with pixels of 0.6-0.95 mm at 512 px (proportionally larger at smaller sizes)."""
    spacing = float(rng.uniform(0.6, 0.95)) * 512.0 / size
    # Organs keep adult sizes; patients differ mostly by fat, and must fit the field of view.
    lean = float(rng.uniform(125, 150))
    half_width = min(lean + float(rng.uniform(8, 50)), 0.45 * spacing * size)
    lean = min(lean, half_width - 6.0)
    fat_sc = half_width - lean
    half_depth = lean * float(rng.uniform(0.7, 0.82)) + 0.8 * fat_sc
    wall = float(rng.uniform(8, 14))
    liver = float(rng.uniform(100, 130))
    blood = float(rng.uniform(150, 200))
    cortex = float(rng.uniform(150, 200))
    hu = {"fat": float(rng.uniform(-115, -85)), "muscle": float(rng.uniform(40, 60)), "liver": liver,
          "blood": blood, "portal": blood - float(rng.uniform(0, 20)),
          "hepatic": liver + float(rng.uniform(30, 60)), "ivc": blood - float(rng.uniform(10, 35)),
          "spleen": float(rng.uniform(110, 130)), "cortex": cortex, "medulla": cortex - float(rng.uniform(40, 80)),
          "cancellous": float(rng.uniform(150, 300)), "cortical": float(rng.uniform(700, 1100)),
          "lung": float(rng.uniform(-870, -800)), "bowel_wall": float(rng.uniform(60, 90)),
          "bile": float(rng.uniform(0, 20)), "skin": float(rng.uniform(20, 50))}
    back_flat = float(rng.uniform(0.1, 0.2))
    back = half_depth / (1.0 + back_flat)
    vertebra = float(rng.uniform(16, 21))
    canal_y = back - 0.8 * fat_sc - float(rng.uniform(38, 48))
    body_y = canal_y - 8.0 - vertebra - 3.0
    spine = {"r": vertebra, "y": body_y, "canal_y": canal_y, "period": float(rng.uniform(28, 34)),
             "disc": float(rng.uniform(6, 9)), "phase": float(rng.uniform(0, 34)),
             "aorta_x": vertebra * 0.35 + float(rng.uniform(0, 6)), "aorta_r": float(rng.uniform(9, 13)),
             "ivc_x": -(vertebra + float(rng.uniform(4, 10))), "ivc_rx": float(rng.uniform(10, 14)),
             "ivc_ry": float(rng.uniform(7, 10)), "psoas": float(rng.uniform(13, 20))}
    height = float(rng.uniform(130, 175))
    kidney_z = float(rng.uniform(-25, 10))
    kidneys = []
    for side, dz in ((-1.0, 0.0), (1.0, float(rng.uniform(10, 25)))):
        kidneys.append({"x": side * (vertebra + float(rng.uniform(38, 50))), "y": body_y + float(rng.uniform(-4, 8)),
                        "z": kidney_z + dz, "h": float(rng.uniform(50, 60)), "a": float(rng.uniform(22, 28)),
                        "b": float(rng.uniform(28, 36)), "rot": -side * float(rng.uniform(0.4, 0.8)),
                        "phase": float(rng.uniform(0, 6.3))})
    patient = Patient(
        size=size, spacing=spacing, offset=(float(rng.uniform(-8, 8)), float(rng.uniform(-12, 6))),
        half_width=half_width, half_depth=half_depth, back_flat=back_flat,
        body_wobble=harmonics(rng, (2, 3, 4), 0.04), fat_sc=fat_sc, wall=wall, liver_height=height,
        liver_wobble=harmonics(rng, (2, 3, 4, 5), 0.1), left_lobe_wobble=harmonics(rng, (2, 3, 4), 0.12),
        lobe={"right_x": float(rng.uniform(70, 95)), "right_y": float(rng.uniform(75, 100)),
              "left_x": float(rng.uniform(45, 75)), "left_y": float(rng.uniform(25, 40)),
              "left_start": float(rng.uniform(0.3, 0.5)), "peak": float(rng.uniform(0.55, 0.7)),
              "twist": float(rng.uniform(-0.3, 0.3))},
        hu=hu, spine=spine, kidneys=kidneys,
        spleen={"lo": height * float(rng.uniform(0.3, 0.5)), "hi": height * float(rng.uniform(0.85, 1.05)),
                "a": float(rng.uniform(22, 32)), "b": float(rng.uniform(45, 65))},
        stomach={"lo": height * float(rng.uniform(0.45, 0.6)), "hi": height * 1.1,
                 "a": float(rng.uniform(30, 45)), "b": float(rng.uniform(30, 45)),
                 "air": float(rng.uniform(0.2, 0.6)), "content": float(rng.uniform(10, 40))},
        gallbladder=({"z": height * float(rng.uniform(0.15, 0.35)), "h": float(rng.uniform(25, 40)),
                      "a": float(rng.uniform(10, 16)), "b": float(rng.uniform(16, 26))}
                     if rng.random() < 0.7 else None),
        ribs=[(side, float(phi), float(rng.uniform(-0.004, 0.004)))
              for side in (-1.0, 1.0) for phi in np.linspace(0.55, 2.7, 7) + rng.uniform(-0.1, 0.1, 7)],
        lung_start=height - float(rng.uniform(20, 40)),
        noise_sd=float(rng.uniform(10, 20)), noise_grain_px=float(rng.uniform(0.7, 1.1)),
        blur_px=float(rng.uniform(0.45, 0.7)),
    )
    patient.vessels = _vessel_trees(rng, patient)
    patient.loops = _bowel_loops(rng, patient)
    return patient


def _vessel_trees(rng: np.random.Generator, p: Patient) -> list[Segment]:
    """Hepatic veins (from the IVC near the dome), portal branches (from the hilum) and small twigs."""
    cav_x, cav_y = p.cavity
    h, s = p.liver_height, p.spine
    ivc = np.array([s["ivc_x"], s["y"] - s["r"] - 6.0, 0.85 * h])
    hilum = np.array([s["ivc_x"] - 5.0, s["y"] - s["r"] - 30.0, 0.45 * h])
    segments: list[Segment] = []
    roots = [(ivc, (-1.0, -0.2, -0.5), 55.0, 5.5, p.hu["hepatic"]),
             (ivc, (-0.5, -1.0, -0.4), 50.0, 5.0, p.hu["hepatic"]),
             (ivc, (0.6, -1.0, -0.3), 45.0, 4.5, p.hu["hepatic"]),
             (hilum, (-1.0, 0.3, 0.2), 30.0, 7.0, p.hu["portal"]),
             (hilum, (0.7, -0.8, 0.2), 35.0, 5.5, p.hu["portal"])]
    for start, direction, length, radius, hu in roots:
        stack = [(start, np.asarray(direction) / np.linalg.norm(direction), length * rng.uniform(0.85, 1.2),
                  radius * rng.uniform(0.85, 1.15), 4)]
        while stack:
            start, direction, length, radius, depth = stack.pop()
            end = start + direction * length
            segments.append(Segment(start, end, float(radius), float(hu)))
            if depth:
                for _ in range(2):
                    turn = direction + rng.normal(0.0, 0.6, 3)
                    stack.append((end, turn / np.linalg.norm(turn), length * rng.uniform(0.6, 0.85),
                                  max(1.2, radius * rng.uniform(0.65, 0.8)), depth - 1))
    for _ in range(30):  # peripheral twigs: the dots and short streaks seen all over the liver
        start = np.array([rng.uniform(-cav_x, 0.4 * cav_x), rng.uniform(-cav_y, 0.5 * cav_y), rng.uniform(0, h)])
        turn = rng.normal(0.0, 1.0, 3)
        segments.append(Segment(start, start + turn / np.linalg.norm(turn) * rng.uniform(10, 30),
                                float(rng.uniform(1.2, 3.0)), p.hu["portal" if rng.random() < 0.5 else "hepatic"]))
    return segments


def _bowel_loops(rng: np.random.Generator, p: Patient) -> list[Loop]:
    """Small-bowel loops low in the abdomen, and colon (often gas-filled) along the flanks."""
    cav_x, cav_y = p.cavity
    h = p.liver_height
    loops = []
    for _ in range(int(rng.integers(22, 32))):
        content = str(rng.choice(["fluid", "gas", "stool"], p=[0.7, 0.15, 0.15]))
        loops.append(Loop(x=float(rng.uniform(-0.7, 0.75)) * cav_x, y=float(rng.uniform(-0.8, 0.3)) * cav_y,
                          z=float(rng.uniform(-0.8, 0.5)) * h, half_height=float(rng.uniform(25, 60)),
                          radius=float(rng.uniform(12, 24)), drift=tuple(rng.uniform(-15, 15, 2)),
                          content=content, content_hu=float(rng.uniform(5, 40)),
                          wobble=harmonics(rng, (2, 3), 0.15), bubbles=_bubbles(rng)))
    for x, y, top in ((-0.75, 0.05, 0.3), (0.78, 0.2, 0.85), (-0.1, -0.75, 0.4)):
        loops.append(Loop(x=x * cav_x, y=y * cav_y, z=(top - 0.5) * h, half_height=0.5 * h + 20,
                          radius=float(rng.uniform(16, 26)), drift=tuple(rng.uniform(-10, 10, 2)),
                          content="gas" if rng.random() < 0.6 else "stool", content_hu=30.0,
                          wobble=harmonics(rng, (3, 4), 0.15), bubbles=_bubbles(rng)))
    return loops


def _bubbles(rng: np.random.Generator, count: int = 25) -> np.ndarray:
    return np.stack([rng.uniform(-0.7, 0.7, count), rng.uniform(-0.7, 0.7, count),
                     rng.uniform(-40, 40, count), rng.uniform(1.5, 4.5, count)], 1)


def render(p: Patient, z: float) -> Canvas:
    """The noise-free anatomy of patient ``p`` at height ``z`` mm (no lesions yet)."""
    canvas = Canvas(p.size, p.spacing, (-p.offset[0], -p.offset[1]))
    _body(canvas, p, z)
    _bowel(canvas, p, z)
    _retroperitoneum(canvas, p, z)
    _upper_organs(canvas, p, z)
    _liver(canvas, p, z)
    _great_vessels(canvas, p, z)
    _spine(canvas, p, z)
    _ribs_and_lungs(canvas, p, z)
    return canvas


def _body(canvas: Canvas, p: Patient, z: float) -> None:
    """Table, skin, subcutaneous fat, muscle wall and visceral fat."""
    full = canvas.full()
    swell = 1.0 + 0.03 * math.sin(z / 90.0)
    a, b = p.half_width * swell, p.half_depth * swell
    dx, dy = full.x / a, full.y / b
    dy = np.where(dy > 0, dy * (1.0 + p.back_flat), dy)  # a flatter back, lying on the table
    theta = np.arctan2(dy, dx)
    k, amp, phase = p.body_wobble
    outline = 1.0 + sum(ai * np.cos(ki * theta + ph) for ki, ai, ph in zip(k, amp, phase))
    rho = np.hypot(dx, dy) / outline
    # Inner contours as shrunk copies of the outline; fat is thicker at the flanks.
    flanks = 1.0 + 0.3 * np.cos(theta) ** 2
    layers = ((1.0, p.hu["skin"], SKIN), (1.0 - 2.0 / a, p.hu["fat"], FAT),
              (1.0 - p.fat_sc / a * flanks, p.hu["muscle"], MUSCLE),
              (1.0 - (p.fat_sc + p.wall) / a * flanks, p.hu["fat"], VISCERAL_FAT))
    for level, hu, tissue in layers:
        fill(full, rho <= level, hu, tissue)
    # The patient lies on a curved table shell just behind the back.
    inside = np.flatnonzero((rho <= 1.0).any(axis=1))
    table_y = float(full.y[inside[-1], 0]) + 2.0 if inside.size else b
    curve = table_y + 0.0008 * full.x ** 2
    shell = (full.y > curve) & (full.y < curve + 3.0) & (np.abs(full.x) < 1.2 * p.half_width)
    fill(full, np.broadcast_to(shell, full.hu.shape), 150.0, TABLE)


def _bowel(canvas: Canvas, p: Patient, z: float) -> None:
    for loop in p.loops:
        size = profile(z, loop.z - loop.half_height, loop.z + loop.half_height, 0.35)
        if size < 0.25:
            continue
        t = (z - loop.z) / loop.half_height
        cx, cy = loop.x + loop.drift[0] * t, loop.y + loop.drift[1] * t
        r = loop.radius * size
        found = blob(canvas, cx, cy, r, r * 0.85, t, loop.wobble)
        if found is None:
            continue
        reg, rho = found
        inside = (rho <= 1.0) & (reg.tissue == VISCERAL_FAT)
        fill(reg, inside, p.hu["bowel_wall"], BOWEL)
        lumen = inside & (rho <= 1.0 - 3.0 / r)
        if loop.content == "fluid":
            fill(reg, lumen, loop.content_hu, BOWEL)
        elif loop.content == "gas":  # gas rises: anterior, above a flat fluid level
            fill(reg, lumen, loop.content_hu, BOWEL)
            fill(reg, lumen & (reg.y < cy + 0.3 * r), AIR_HU, GAS)
        else:  # stool: soft tissue mottled with gas bubbles
            fill(reg, lumen, 35.0, BOWEL)
            for bx, by, bz, br in loop.bubbles:
                cut = br * br - (z - loop.z - bz) ** 2
                if cut > 0:
                    bubble = np.hypot(reg.x - cx - bx * r, reg.y - cy - by * r) < math.sqrt(cut)
                    fill(reg, lumen & bubble, -800.0, GAS)


def _retroperitoneum(canvas: Canvas, p: Patient, z: float) -> None:
    """Paraspinal and psoas muscles, kidneys."""
    s = p.spine
    for side in (-1.0, 1.0):
        paint_ellipse(canvas, side * 24.0, s["canal_y"] + 6.0, 32.0, 24.0, p.hu["muscle"], MUSCLE,
                      within=(FAT, VISCERAL_FAT, MUSCLE))
        psoas = s["psoas"] * min(1.0, max(0.0, (0.3 * p.liver_height - z) / 80.0)) + 6.0
        paint_ellipse(canvas, side * (s["r"] + psoas * 0.7), s["y"] + 2.0, psoas, psoas * 0.9,
                      p.hu["muscle"], MUSCLE)
    for kid in p.kidneys:
        size = profile(z, kid["z"] - kid["h"], kid["z"] + kid["h"], 0.5)
        if size < 0.15:
            continue
        reg = canvas.region(kid["x"], kid["y"], kid["b"] * size, kid["b"] * size)
        if reg is None:
            continue
        u, v, rho = polar(reg, kid["x"], kid["y"], kid["a"] * size, kid["b"] * size, kid["rot"])
        fill(reg, rho <= 1.0, p.hu["cortex"], KIDNEY)
        # Medullary pyramids: darker blobs in a ring inside the cortex in this phase.
        angles = kid["phase"] + np.arange(5) * (2 * np.pi / 5)
        near = np.minimum.reduce([np.hypot(u - 0.55 * math.cos(a), v - 0.55 * math.sin(a)) for a in angles])
        fill(reg, (near < 0.24) & (rho <= 1.0), p.hu["medulla"], MEDULLA)
        side = math.copysign(1.0, kid["x"])  # the renal sinus (fat) opens medially
        sinus = np.hypot(reg.x - kid["x"] + side * 0.65 * kid["a"] * size, reg.y - kid["y"]) < 0.4 * kid["a"] * size
        fill(reg, sinus & (rho <= 1.0), -60.0, SINUS)


def _upper_organs(canvas: Canvas, p: Patient, z: float) -> None:
    """Spleen and stomach, upper left abdomen."""
    cav_x, cav_y = p.cavity
    sp = p.spleen
    size = profile(z, sp["lo"], sp["hi"], 0.5)
    if size > 0.1:
        paint_ellipse(canvas, 0.62 * cav_x, 0.3 * cav_y, sp["a"] * size, sp["b"] * size, p.hu["spleen"], SPLEEN,
                      rot=-0.6, within=(VISCERAL_FAT, BOWEL, GAS))
    st = p.stomach
    size = profile(z, st["lo"], st["hi"], 0.5)
    if size > 0.2:
        found = blob(canvas, 0.35 * cav_x, -0.1 * cav_y, st["a"] * size, st["b"] * size, 0.3)
        if found is not None:
            reg, rho = found
            inside = (rho <= 1.0) & np.isin(reg.tissue, (VISCERAL_FAT, BOWEL, GAS))
            fill(reg, inside, p.hu["bowel_wall"], STOMACH)
            lumen = inside & (rho < 0.85)
            fill(reg, lumen, st["content"], STOMACH)
            level = -0.1 * cav_y - st["b"] * size * (1.0 - 2.0 * st["air"])
            fill(reg, lumen & (reg.y < level), AIR_HU, STOMACH)


def _liver_outline(canvas: Canvas, p: Patient, z: float) -> tuple[Region, np.ndarray] | None:
    """The liver's cross-section at ``z`` before other organs cut into it: (region, boolean mask)."""
    u = z / p.liver_height
    lobe = p.lobe
    peak = lobe["peak"]
    right = (max(u, 0.0) / peak) ** 0.6 if u < peak else max(0.0, 1.0 - ((u - peak) / (1.02 - peak)) ** 2) ** 0.5
    if right <= 0.05:
        return None
    cav_x, cav_y = p.cavity
    reg = canvas.region(0.0, 0.0, cav_x, cav_y)
    if reg is None:
        return None
    twist = lobe["twist"] * (u - 0.5)
    rx, ry = lobe["right_x"] * right, lobe["right_y"] * right
    # The right lobe hugs the right wall (the cavity clips it flat there); its tip is anterolateral.
    _, _, rho = polar(reg, -cav_x + 0.8 * rx, -0.1 * cav_y - 0.25 * cav_y * (1.0 - right), rx, ry, twist,
                      p.liver_wobble)
    mask = rho <= 1.0
    left = profile(u, lobe["left_start"], 1.02, 0.6)
    if left > 0.05:
        lx, ly = lobe["left_x"] * left, lobe["left_y"] * left
        _, _, rho = polar(reg, -10.0 + 0.5 * lx, -cav_y + ly + 4.0, lx, ly, 0.15 + twist, p.left_lobe_wobble)
        mask |= rho <= 1.0
    caudate = profile(u, 0.45, 0.9, 0.5)
    if caudate > 0.05:
        s = p.spine
        _, _, rho = polar(reg, s["ivc_x"] + 8.0, s["y"] - s["r"] - 18.0, 22.0 * caudate, 16.0 * caudate)
        mask |= rho <= 1.0
    _, _, rho = polar(reg, 0.0, 0.0, cav_x - 2.0, cav_y - 2.0)  # the liver stays inside the cavity
    mask &= rho <= 1.0
    return reg, mask


def _liver(canvas: Canvas, p: Patient, z: float) -> None:
    """Liver with its portal and hepatic vessels, and the gallbladder under it."""
    found = _liver_outline(canvas, p, z)
    if found is None:
        return
    reg, mask = found
    # The liver pushes bowel aside but not the stomach, kidney, spleen or muscles.
    fill(reg, mask & np.isin(reg.tissue, (VISCERAL_FAT, BOWEL, GAS)), p.hu["liver"], LIVER)
    for seg in p.vessels:
        _paint_segment(canvas, seg, z)
    gb = p.gallbladder
    if gb is not None:
        size = profile(z, gb["z"] - gb["h"] / 2, gb["z"] + gb["h"] / 2, 0.5)
        cav_x, cav_y = p.cavity
        paint_ellipse(canvas, -0.2 * cav_x, -0.4 * cav_y, gb["a"] * size, gb["b"] * size, p.hu["bile"],
                      GALLBLADDER, rot=0.5, within=(LIVER, HEPATIC_VESSEL, VISCERAL_FAT, BOWEL))


def _paint_segment(canvas: Canvas, seg: Segment, z: float) -> None:
    """The cut of a vessel tube by the plane at ``z``, painted over liver only."""
    a, b, r = seg.start, seg.end, seg.radius
    lo, hi = sorted((a[2], b[2]))
    if not lo - r <= z <= hi + r:
        return
    d = b - a
    # Part of the axis within r of the plane: where the tube can meet it.
    if abs(d[2]) > 1e-6:
        t0, t1 = sorted(((z - r - a[2]) / d[2], (z + r - a[2]) / d[2]))
        t0, t1 = max(t0, 0.0), min(t1, 1.0)
    else:
        t0, t1 = 0.0, 1.0
    p0, p1 = a + t0 * d, a + t1 * d
    reg = canvas.region((p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2, abs(p1[0] - p0[0]) / 2 + r,
                        abs(p1[1] - p0[1]) / 2 + r)
    if reg is None:
        return
    length2 = float(d @ d)
    t = ((reg.x - a[0]) * d[0] + (reg.y - a[1]) * d[1] + (z - a[2]) * d[2]) / length2
    t = np.clip(t, 0.0, 1.0)
    dist2 = (reg.x - a[0] - t * d[0]) ** 2 + (reg.y - a[1] - t * d[1]) ** 2 + (z - a[2] - t * d[2]) ** 2
    fill(reg, (dist2 <= r * r) & (reg.tissue == LIVER), seg.hu, HEPATIC_VESSEL)


def _great_vessels(canvas: Canvas, p: Patient, z: float) -> None:
    s = p.spine
    paint_ellipse(canvas, s["aorta_x"], s["y"] - s["r"] - s["aorta_r"] - 2.0, s["aorta_r"], s["aorta_r"],
                  p.hu["blood"], VESSEL)
    paint_ellipse(canvas, s["ivc_x"], s["y"] - s["r"] - 4.0, s["ivc_rx"], s["ivc_ry"], p.hu["ivc"], VESSEL)
    if z < 0.35 * p.liver_height:  # superior mesenteric artery and vein, in the mesenteric fat
        front = s["y"] - s["r"] - 2.0 * s["aorta_r"] - 12.0
        paint_ellipse(canvas, s["aorta_x"], front, 4.0, 4.0, p.hu["blood"], VESSEL)
        paint_ellipse(canvas, s["aorta_x"] - 13.0, front - 2.0, 6.0, 5.5, p.hu["portal"], VESSEL)


def _spine(canvas: Canvas, p: Patient, z: float) -> None:
    """Vertebral body (or disc), canal, arch and spinous process."""
    s = p.spine
    r = s["r"]
    disc = (z - s["phase"]) % s["period"] < s["disc"]
    if disc:
        paint_ellipse(canvas, 0.0, s["y"], r * 1.15, r, 90.0, DISC)
    else:
        paint_ellipse(canvas, 0.0, s["y"], r * 1.15, r, p.hu["cortical"], BONE)
        paint_ellipse(canvas, 0.0, s["y"], r * 1.15 - 2.0, r - 2.0, p.hu["cancellous"], MARROW)
    paint_ellipse(canvas, 0.0, s["canal_y"], 13.0, 12.0, p.hu["cortical"] * 0.8, BONE)  # arch around the canal
    paint_ellipse(canvas, 0.0, s["canal_y"] + 16.0, 4.0, 14.0, p.hu["cortical"] * 0.8, BONE)  # spinous process
    paint_ellipse(canvas, 0.0, s["canal_y"] + 16.0, 2.0, 11.0, p.hu["cancellous"], MARROW)
    paint_ellipse(canvas, 0.0, s["canal_y"], 9.0, 8.0, 20.0, CANAL)
    for side in (-1.0, 1.0):  # pedicles joining arch and body
        paint_ellipse(canvas, side * 9.0, (s["y"] + s["canal_y"]) / 2, 4.0, 7.0, p.hu["cortical"] * 0.7, BONE,
                      within=(MUSCLE, FAT, VISCERAL_FAT, DISC, CANAL))


def _ribs_and_lungs(canvas: Canvas, p: Patient, z: float) -> None:
    """Rib cuts along the wall (reaching further forward higher up) and the lung bases behind the liver."""
    a = p.half_width - p.fat_sc - p.wall / 2
    b = p.half_depth - 0.8 * p.fat_sc - p.wall / 2
    # phi: angle around one side of the body, 0 at the back, pi at the front.
    reach = 1.2 + 1.6 * min(1.0, max(0.0, (z + 0.2 * p.liver_height) / (1.1 * p.liver_height)))
    for side, phi0, tilt in p.ribs:
        phi = phi0 + tilt * z
        if phi > reach:
            continue
        theta = math.pi / 2 - side * phi  # image angle: x to the patient's left, y posterior
        cx, cy = a * math.cos(theta), b * math.sin(theta)
        if cy > 0:
            cy /= 1.0 + p.back_flat
        cartilage = phi > reach - 0.35  # anterior rib ends: costal cartilage, barely calcified
        paint_ellipse(canvas, cx, cy, 8.0, 5.0, 150.0 if cartilage else 0.8 * p.hu["cortical"], BONE,
                      rot=theta + math.pi / 2)
        if not cartilage:
            paint_ellipse(canvas, cx, cy, 6.0, 3.0, p.hu["cancellous"], MARROW, rot=theta + math.pi / 2)
    if z > p.lung_start:
        grow = min(1.0, (z - p.lung_start) / 35.0)
        cav_x, cav_y = p.cavity
        for side in (-1.0, 1.0):
            paint_ellipse(canvas, side * 0.62 * cav_x, 0.85 * cav_y, 0.5 * cav_x * grow, 0.5 * cav_y * grow,
                          p.hu["lung"], LUNG, rot=side * 0.6,
                          within=(LIVER, HEPATIC_VESSEL, SPLEEN, VISCERAL_FAT, KIDNEY, MEDULLA, BOWEL, STOMACH))


def smooth_field(rng: np.random.Generator, size: int, scale_px: float) -> np.ndarray:
    """Unit-SD random field with features of about ``scale_px`` pixels (made on a coarse grid)."""
    step = max(1, int(scale_px // 2))
    coarse = ndimage.gaussian_filter(rng.standard_normal((size // step + 2,) * 2, dtype=np.float32), 1.0)
    field_ = ndimage.zoom(coarse, step, order=1, prefilter=False)[:size, :size]
    return field_ / max(float(field_.std()), 1e-6)


def finish(canvas: Canvas, p: Patient, rng: np.random.Generator) -> np.ndarray:
    """Texture, partial-volume blur and CT-like correlated noise; returns HU rounded, float32."""
    hu = canvas.hu + _TEXTURE_HU[canvas.tissue] * smooth_field(rng, canvas.size, 12.0 * 512 / canvas.size)
    hu = ndimage.gaussian_filter(hu, p.blur_px)
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), p.noise_grain_px)
    hu += noise * (p.noise_sd / max(float(noise.std()), 1e-6))
    return np.rint(np.clip(hu, *HU_RANGE, out=hu), out=hu)


def liver_mask(canvas: Canvas) -> np.ndarray:
    """Pixels that carry the liver label (parenchyma, its vessels, its lesions)."""
    return np.isin(canvas.tissue, LIVER_TISSUES)
