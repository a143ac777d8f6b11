"""Synthetic abdominal CT phantoms, written in the two formats the data layer reads.

These phantoms exercise the pipeline (reading, training, export, deployment) on
machines where LiTS and clinical data cannot be had. They are NOT clinical data:
no result obtained on them says anything about patients.

:func:`generate_phantoms` writes, under ``out``:

- ``lits/volume-N.nii.gz`` + ``segmentation-N.nii.gz`` (N from 0): LiTS-style volumes
  in HU (int16) with labels 0 background, 1 liver, 2 tumor; a liver whose shape
  varies smoothly along z, present in most but not all slices, with 0-4 ellipsoidal
  tumours of mixed appearance; in-plane pixels of 0.6-0.95 mm at 512 px, slices of
  1-5 mm, a proper affine (stored LPS- or RAS-wise at random: both read the same).
- ``lesion_slices/``: the lesion-slice dataset (:mod:`.lesion_slices`), one lesion
  type per slice (1-4 lesions of it), classes balanced, 1-4 slices per simulated
  patient so that splits can be by patient.
- ``phantoms.json``: the summary that :func:`generate_phantoms` returns.

Anatomy and lesions are drawn in :mod:`.phantom_anatomy` and :mod:`.phantom_lesions`.
The same seed gives byte-identical files; each volume and each patient has its own
random stream, so changing one count does not change what the others hold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import folder_swap
from ..errors import InputError
from ..errors import require as require_module
from ..labels import FIRST_LESION_LABEL, LESION_CLASSES, LITS_TUMOR
from .lesion_slices import LesionSlice, write_lesion_slices
from .lits import LITS_FILE_RE
from .phantom_anatomy import Canvas, Patient, draw_patient, finish, liver_mask, render
from .phantom_lesions import Lesion, draw_lesion, lesion_count, paint, place

SUMMARY_FILE = "phantoms.json"
NOTE = "Synthetic phantoms from liverlesion: they exercise the pipeline and are NOT clinical data."
#: Slice thicknesses (mm) of the LiTS-style volumes and how often each is drawn.
_THICKNESS_MM = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
_THICKNESS_P = (0.05, 0.05, 0.1, 0.15, 0.15, 0.15, 0.35)
#: Slices per simulated patient in the lesion-slice dataset, and how often each is drawn.
_SLICES_PER_PATIENT_P = (0.2, 0.35, 0.3, 0.15)
# Stream ids under the seed: one stream per volume, one plan, one per patient.
_VOLUME, _PLAN, _PATIENT = 0, 1, 2


def generate_phantoms(out: str | Path, *, seed: int = 0, lits_volumes: int = 6, lits_slices: int = 32,
                      lesion_slices: int = 120, size: int = 512,
                      progress: Callable[[str], None] | None = None) -> dict:
    """Write LiTS-style volumes and a lesion-slice dataset under ``out``; returns a JSON-able summary."""
    for name, value, low in (("seed", seed, 0), ("lits_volumes", lits_volumes, 0), ("lits_slices", lits_slices, 1),
                             ("lesion_slices", lesion_slices, 0), ("size", size, 64)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"{name}={value!r} is not accepted: give an integer >= {low}")
    if size > 2048:
        raise InputError(f"size={size} is not accepted: phantoms are at most 2048 pixels wide")
    say = progress or (lambda message: None)
    out = Path(out)
    # phantoms.json marks a folder as ours: never replace real data someone keeps under the same names.
    for name in ("lits", "lesion_slices"):
        if (out / name).exists() and any((out / name).iterdir()) and not (out / SUMMARY_FILE).is_file():
            raise InputError(f"{out / name} exists but {out} holds no {SUMMARY_FILE}, so it was not written "
                             "by generate_phantoms; refusing to replace it: give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary: dict[str, Any] = {"note": NOTE, "seed": int(seed), "size": int(size)}
    if lits_volumes:
        summary["lits"] = _write_lits(out / "lits", seed, lits_volumes, lits_slices, size, say)
    if lesion_slices:
        summary["lesion_slices"] = _write_lesion_slices(out / "lesion_slices", seed, lesion_slices, size, say)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    summary["bytes"] = sum(f.stat().st_size for name in ("lits", "lesion_slices") if (out / name).is_dir()
                           for f in (out / name).rglob("*") if f.is_file())
    tmp = out / f".{SUMMARY_FILE}.tmp"
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    tmp.replace(out / SUMMARY_FILE)
    return summary


def lits_phantom(seed: int, index: int, *, slices: int = 32, size: int = 512
                 ) -> tuple[np.ndarray, np.ndarray, float, float, dict[str, Any]]:
    """One LiTS-style volume in memory: HU (slices, rows, cols) float32, labels uint8, spacing, thickness, facts.

    Oriented as :mod:`.lits` returns volumes; slice 0 is the most inferior.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, _VOLUME, index]))
    patient = draw_patient(rng, size)
    thickness = float(rng.choice(_THICKNESS_MM, p=_THICKNESS_P))
    coverage, height = slices * thickness, patient.liver_height
    # Liver-free slices below the liver's tip; never far above its dome (the chest is not modelled).
    if coverage > height:
        first = height + rng.uniform(0.0, 10.0) - coverage + thickness
    else:
        first = -rng.uniform(0.1, 0.3) * coverage
    heights = first + thickness * np.arange(slices)
    canvases = [render(patient, float(z)) for z in heights]
    tumours = _place_tumours(rng, patient, canvases, heights)
    hu = np.empty((slices, size, size), np.float32)
    labels = np.empty((slices, size, size), np.uint8)
    for k, (canvas, z) in enumerate(zip(canvases, heights)):
        for tumour in tumours:
            paint(canvas, tumour, float(z), LITS_TUMOR)
        hu[k] = finish(canvas, patient, rng)
        labels[k] = np.where(canvas.lesion > 0, LITS_TUMOR, liver_mask(canvas)).astype(np.uint8)
    facts = {"tumors": len(tumours), "tumor_kinds": [t.kind for t in tumours],
             "tumor_diameters_mm": [round(2 * t.radius, 1) for t in tumours]}
    return hu, labels, patient.spacing, thickness, facts


def lesion_slice_phantoms(seed: int, count: int, *, size: int = 512) -> list[LesionSlice]:
    """``count`` lesion slices, classes balanced, grouped into simulated patients of 1-4 slices."""
    plan = np.random.default_rng(np.random.SeedSequence([seed, _PLAN]))
    groups: list[tuple[str, int]] = []
    for number, kind in enumerate(LESION_CLASSES):
        left = count // len(LESION_CLASSES) + (number < count % len(LESION_CLASSES))
        while left:
            take = min(left, int(plan.choice(4, p=_SLICES_PER_PATIENT_P)) + 1)
            groups.append((kind, take))
            left -= take
    slices: list[LesionSlice] = []
    for number, group in enumerate(plan.permutation(len(groups))):
        kind, take = groups[group]
        slices.extend(_patient_slices(seed, number, kind, take, size))
    return slices


def _patient_slices(seed: int, number: int, kind: str, count: int, size: int) -> list[LesionSlice]:
    """The slices of one simulated patient, at distinct heights through the liver, all of one lesion type."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _PATIENT, number]))
    patient = draw_patient(rng, size)
    patient_id = f"P{number + 1:03d}"
    label = FIRST_LESION_LABEL + LESION_CLASSES.index(kind)
    heights = patient.liver_height * np.sort(rng.uniform(0.3, 0.85, count))
    out = []
    for index, z in enumerate(heights):
        for _attempt in range(8):  # a slice must show a lesion: retry where the liver is too small
            canvas = render(patient, float(z))
            wanted = [draw_lesion(rng, kind, patient) for _ in range(lesion_count(rng, kind))]
            for lesion in wanted:
                lesion.z = float(z)
            lesions = place(rng, canvas, wanted)
            painted = sum(paint(canvas, lesion, float(z), label) for lesion in lesions)
            if painted:
                break
            z = patient.liver_height * rng.uniform(0.4, 0.75)
        else:  # pragma: no cover - the liver at 40-75 % of its height always has room for 8 mm
            raise RuntimeError(f"phantom patient {patient_id}: no room for a lesion")
        mask = np.where(canvas.lesion > 0, canvas.lesion, liver_mask(canvas)).astype(np.uint8)
        out.append(LesionSlice(case_id=f"{patient_id}-{index + 1}", patient_id=patient_id,
                               hu=finish(canvas, patient, rng), mask=mask,
                               spacing_mm=(patient.spacing, patient.spacing), lesion_class=kind))
    return out


def _place_tumours(rng: np.random.Generator, patient: Patient, canvases: list[Canvas],
                   heights: np.ndarray) -> list[Lesion]:
    """0-4 tumours of mixed kinds, centred on slices where the liver is large."""
    areas = np.array([liver_mask(c).sum() for c in canvases], float)
    if areas.max() == 0:
        return []
    candidates = np.flatnonzero(areas >= 0.5 * areas.max())
    tumours: list[Lesion] = []
    for _ in range(int(rng.choice(5, p=(0.15, 0.3, 0.25, 0.18, 0.12)))):
        k = int(rng.choice(candidates))
        tumour = draw_lesion(rng, str(rng.choice(LESION_CLASSES)), patient)
        tumour.z = float(heights[k])
        near = [t for t in tumours if abs(t.z - tumour.z) < t.z_radius + tumour.z_radius]
        tumours.extend(place(rng, canvases[k], [tumour], near))
    return tumours


def _write_lits(root: Path, seed: int, volumes: int, slices: int, size: int, say: Callable[[str], None]) -> dict:
    nib = require_module("nibabel", "nifti", "Writing phantom NIfTI volumes")
    cases = []
    with folder_swap(root, lambda p: all(LITS_FILE_RE.match(f.name) for f in p.iterdir()),
                     "a folder of LiTS volumes") as tmp:
        for index in range(volumes):
            hu, labels, spacing, thickness, facts = lits_phantom(seed, index, slices=slices, size=size)
            ras = bool(np.random.default_rng([seed, _VOLUME, index, 1]).random() < 0.5)
            for name, data in ((f"volume-{index}.nii.gz", hu.astype(np.int16)),
                               (f"segmentation-{index}.nii.gz", labels)):
                nib.save(_nifti(nib, data, spacing, thickness, ras), str(tmp / name))
            per_slice = labels.reshape(slices, -1).max(axis=1)
            cases.append({"id": index, "slices": slices, "liver_slices": int((per_slice >= 1).sum()),
                          "tumor_slices": int((per_slice == LITS_TUMOR).sum()),
                          "spacing_mm": [round(spacing, 4)] * 2, "slice_thickness_mm": thickness,
                          "stored_as": "RAS" if ras else "LPS", **facts})
            say(f"LiTS-style volume {index + 1}/{volumes}: {slices} slices of {thickness} mm, "
                f"{facts['tumors']} tumour(s), liver in {cases[-1]['liver_slices']} slices")
    return {"root": root.name, "volumes": volumes, "cases": cases}


def _nifti(nib: Any, data: np.ndarray, spacing: float, thickness: float, ras: bool) -> Any:
    """A NIfTI image of a (slices, rows, cols) array in this package's orientation, with its true affine."""
    stored = data.transpose(2, 1, 0)  # axes: columns (to the patient's left), rows (posterior), slices (up)
    scale = np.array([-spacing, -spacing, thickness])
    if ras:  # the same voxels stored the other way round in-plane
        stored, scale = stored[::-1, ::-1, :], scale * [-1, -1, 1]
    affine = np.diag([*scale, 1.0])
    affine[:3, 3] = -scale * (np.array(stored.shape) - 1) / 2.0  # world origin at the volume's centre
    image = nib.Nifti1Image(np.ascontiguousarray(stored), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = b"liverlesion phantom: synthetic, not clinical"
    return image


def _write_lesion_slices(root: Path, seed: int, count: int, size: int, say: Callable[[str], None]) -> dict:
    slices = lesion_slice_phantoms(seed, count, size=size)
    write_lesion_slices(root, slices)
    say(f"lesion slices: {len(slices)} slices of {len({s.patient_id for s in slices})} patients")
    per_class = {kind: [s for s in slices if s.lesion_class == kind] for kind in LESION_CLASSES}
    return {"root": root.name, "slices": len(slices), "patients": len({s.patient_id for s in slices}),
            "classes": {kind: len(items) for kind, items in per_class.items()}}
