"""The lesion-slice dataset: single CT slices with 5-label masks and a slice-level lesion class.

On disk (format ``liverlesion-lesion-slices``, version 1)::

    root/dataset.json
    root/images/<id>.npy    int16, (rows, cols), HU (rounded to whole HU)
    root/masks/<id>.npy     uint8, same shape, labels.TARGET_LABELS: 0 background,
                            1 liver, 2 cyst, 3 hemangioma, 4 metastasis

``dataset.json``::

    {"format": "liverlesion-lesion-slices", "version": 1,
     "labels": ["background", "liver", "cyst", "hemangioma", "metastasis"],
     "classes": ["cyst", "hemangioma", "metastasis"],
     "cases": [{"id": "P001-1", "patient_id": "P001", "image": "images/P001-1.npy",
                "mask": "masks/P001-1.npy", "spacing_mm": [0.7, 0.7], "class": "cyst"}, ...]}

Arrays are oriented as :mod:`liverlesion.data.lits` returns slices (rows anterior ->
posterior, columns patient right -> left); ``spacing_mm`` is (row, col). ``class`` is
the slice's lesion type and its label must appear in the mask. Ids are file names
(letters, digits, ``_ . -``); ``patient_id`` groups slices so that splits can be by
patient. The ``.npy`` files are read with ``allow_pickle=False``. Numpy only: no
torch, no nibabel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import folder_swap
from ..errors import DataFormatError, InputError
from ..grid import check_spacing
from ..labels import FIRST_LESION_LABEL, LESION_CLASSES, TARGET_LABELS

FORMAT = "liverlesion-lesion-slices"
VERSION = 1
INDEX_FILE = "dataset.json"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_INT16 = np.iinfo(np.int16)


@dataclass
class LesionSlice:
    """One annotated slice: HU, its 5-label mask, spacing, patient and slice-level class."""

    case_id: str
    patient_id: str
    hu: np.ndarray  # float32 (rows, cols), HU
    mask: np.ndarray  # uint8 (rows, cols), labels.TARGET_LABELS
    spacing_mm: tuple[float, float]
    lesion_class: str  # one of labels.LESION_CLASSES


def write_lesion_slices(root: str | Path, slices: Iterable[LesionSlice]) -> Path:
    """Validate and write a dataset folder at ``root`` atomically (replacing an older dataset there)."""
    root = Path(root)
    with folder_swap(root, lambda p: (p / INDEX_FILE).is_file(), "a lesion-slice dataset") as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        cases: list[dict[str, Any]] = []
        seen: set[str] = set()
        for item in slices:
            image, mask, spacing = _validated(item, seen)
            np.save(tmp / "images" / f"{item.case_id}.npy", image, allow_pickle=False)
            np.save(tmp / "masks" / f"{item.case_id}.npy", mask, allow_pickle=False)
            cases.append({"id": item.case_id, "patient_id": item.patient_id,
                          "image": f"images/{item.case_id}.npy", "mask": f"masks/{item.case_id}.npy",
                          "spacing_mm": list(spacing), "class": item.lesion_class})
        if not cases:
            raise InputError("no slices to write: a lesion-slice dataset needs at least one")
        index = {"format": FORMAT, "version": VERSION, "labels": list(TARGET_LABELS),
                 "classes": list(LESION_CLASSES), "cases": cases}
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
    return root


def read_lesion_slices(root: str | Path) -> list[LesionSlice]:
    """Read and check a dataset folder; every inconsistency raises DataFormatError naming the file."""
    root = Path(root)
    index_path = root / INDEX_FILE
    try:
        index = json.loads(index_path.read_text())
    except FileNotFoundError:
        raise DataFormatError(f"{index_path} does not exist: {root} is not a lesion-slice dataset") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"{index_path} cannot be read as JSON: {exc}") from None
    _check_index(index, index_path)
    slices = []
    seen: set[str] = set()
    for number, case in enumerate(index["cases"]):
        slices.append(_read_case(root, index_path, number, case, seen))
    return slices


def _validated(item: LesionSlice, seen: set[str]) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """The int16 image, uint8 mask and spacing to write, or InputError saying what is wrong."""
    name = f"lesion slice {item.case_id!r}"
    if not isinstance(item.case_id, str) or not _ID_RE.match(item.case_id):
        raise InputError(f"{name}: case_id must be 1-128 letters, digits, '_', '.' or '-' "
                         "(it names the slice's files)")
    if item.case_id in seen:
        raise InputError(f"{name}: case_id is used twice; ids must be unique")
    seen.add(item.case_id)
    if not isinstance(item.patient_id, str) or not item.patient_id:
        raise InputError(f"{name}: patient_id must be a non-empty string")
    if item.lesion_class not in LESION_CLASSES:
        raise InputError(f"{name}: class {item.lesion_class!r} is unknown; accepted: {', '.join(LESION_CLASSES)}")
    spacing = check_spacing(item.spacing_mm)
    hu = np.asarray(item.hu)
    if hu.ndim != 2 or hu.dtype.kind not in "iuf":
        raise InputError(f"{name}: hu must be a 2D array of numbers (HU), got {hu.dtype} of shape {hu.shape}")
    if not np.all(np.isfinite(hu)):
        raise InputError(f"{name}: hu holds NaN or infinite values")
    image = np.rint(hu)
    if image.min() < _INT16.min or image.max() > _INT16.max:
        raise InputError(f"{name}: hu values must fit int16 ({_INT16.min}..{_INT16.max} HU)")
    mask = np.asarray(item.mask)
    if mask.shape != hu.shape or mask.dtype.kind not in "iu":
        raise InputError(f"{name}: mask must be an integer array of the image's shape {hu.shape}, "
                         f"got {mask.dtype} of shape {mask.shape}")
    _check_mask(mask, item.lesion_class, lambda msg: InputError(f"{name}: {msg}"))
    return image.astype(np.int16), mask.astype(np.uint8), spacing


def _check_mask(mask: np.ndarray, lesion_class: str, error: Any) -> None:
    """Labels within 0..4, and the slice's own class present."""
    if mask.size and (mask.min() < 0 or mask.max() >= len(TARGET_LABELS)):
        bad = np.unique(mask[(mask < 0) | (mask >= len(TARGET_LABELS))])
        raise error(f"mask has label values {bad[:8].tolist()}; accepted: 0..{len(TARGET_LABELS) - 1} "
                    f"({', '.join(TARGET_LABELS)})")
    label = FIRST_LESION_LABEL + LESION_CLASSES.index(lesion_class)
    if not np.any(mask == label):
        raise error(f"class is {lesion_class!r} but the mask has no pixel of label {label} ({lesion_class})")


def _check_index(index: Any, path: Path) -> None:
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        found = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise DataFormatError(f"{path}: format is {found!r}; expected {FORMAT!r}")
    if index.get("version") != VERSION:
        raise DataFormatError(f"{path}: version {index.get('version')!r} is not supported; this reader "
                              f"reads version {VERSION}")
    if index.get("labels") != list(TARGET_LABELS):
        raise DataFormatError(f"{path}: labels {index.get('labels')!r} differ from {list(TARGET_LABELS)}")
    if index.get("classes") != list(LESION_CLASSES):
        raise DataFormatError(f"{path}: classes {index.get('classes')!r} differ from {list(LESION_CLASSES)}")
    if not isinstance(index.get("cases"), list) or not index["cases"]:
        raise DataFormatError(f"{path}: 'cases' must be a non-empty list")


def _read_case(root: Path, index_path: Path, number: int, case: Any, seen: set[str]) -> LesionSlice:
    where = f"{index_path}, case {number}"
    keys = ("id", "patient_id", "image", "mask", "spacing_mm", "class")
    if not isinstance(case, dict) or any(key not in case for key in keys):
        raise DataFormatError(f"{where}: each case needs the keys {', '.join(keys)}")
    case_id = case["id"]
    if not isinstance(case_id, str) or not _ID_RE.match(case_id) or case_id in seen:
        raise DataFormatError(f"{where}: id {case_id!r} is not a valid, unique slice id")
    seen.add(case_id)
    if not isinstance(case["patient_id"], str) or not case["patient_id"]:
        raise DataFormatError(f"{where}: patient_id must be a non-empty string")
    if case["class"] not in LESION_CLASSES:
        raise DataFormatError(f"{where}: class {case['class']!r} is unknown; accepted: {', '.join(LESION_CLASSES)}")
    try:
        spacing = check_spacing(case["spacing_mm"])
    except InputError as exc:
        raise DataFormatError(f"{where}: {exc}") from None
    image = _load_npy(root, case["image"], np.int16, where)
    mask = _load_npy(root, case["mask"], np.uint8, where)
    if image.ndim != 2 or mask.shape != image.shape:
        raise DataFormatError(f"{root / case['mask']}: shape {mask.shape} does not match image "
                              f"{root / case['image']} of shape {image.shape} (both must be 2D and equal)")
    _check_mask(mask, case["class"], lambda msg: DataFormatError(f"{root / case['mask']}: {msg}"))
    return LesionSlice(case_id=case_id, patient_id=case["patient_id"], hu=image.astype(np.float32),
                       mask=mask, spacing_mm=spacing, lesion_class=case["class"])


def _load_npy(root: Path, relative: Any, dtype: type, where: str) -> np.ndarray:
    """Load one array file inside ``root`` with the documented dtype."""
    if not isinstance(relative, str):
        raise DataFormatError(f"{where}: file path {relative!r} must be a string")
    path = root / relative
    if not path.resolve().is_relative_to(root.resolve()):
        raise DataFormatError(f"{where}: {relative!r} points outside the dataset folder {root}")
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataFormatError(f"{path} does not exist ({where})") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataFormatError(f"{path} cannot be read as a .npy array: {exc}") from None
    if not isinstance(array, np.ndarray) or array.dtype != dtype:
        found = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise DataFormatError(f"{path} holds {found}; expected {np.dtype(dtype)}")
    return array
