"""What travels between ``liverlesion serve`` and :class:`~liverlesion.serving.remote.RemoteAnalyzer`.

A slice goes out as its HU as stored, its spacing and its orientation (``contract.PIPELINE_INPUTS``); a
:class:`~liverlesion.sdk.prediction.Prediction` comes back as its two maps and ``to_dict(masks="none")`` as
JSON (``contract.PIPELINE_OUTPUTS``). Both sides use these functions, so the two ends cannot drift. Plain
numpy and json: no Triton import here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError, LiverLesionError
from ..grid import check_spacing
from ..sdk.diameters import AxialDiameters
from ..sdk.geometry import Orientation
from ..sdk.inputs import SliceInput
from ..sdk.prediction import Lesion, Prediction
from .contract import ERROR_KEY


class WireError(InputError):
    """A tensor or JSON document does not follow the wire contract (``serving.contract``)."""


def orientation_tensor(orientation: Orientation) -> np.ndarray:
    """Transpose, flip_rows, flip_cols as the uint8 (3,) of the contract."""
    return np.array([orientation.transpose, orientation.flip_rows, orientation.flip_cols], dtype=np.uint8)


def orientation_from(values: Any) -> Orientation:
    """The Orientation of a (3,) tensor of 0/1 values; anything else is a :class:`WireError`."""
    array = np.asarray(values)
    if array.shape != (3,) or not np.isin(array, (0, 1)).all():
        raise WireError(f"orientation must be 3 values of 0 or 1 (transpose, flip_rows, flip_cols); got "
                        f"{array.ravel()[:6].tolist()} of shape {array.shape}")
    return Orientation(*(bool(v) for v in array))


def request_tensors(slices: Sequence[SliceInput]) -> dict[str, np.ndarray]:
    """One request's inputs for slices of one shape (the batch dimension first)."""
    shapes = {s.shape for s in slices}
    if len(shapes) != 1:
        raise WireError(f"one request carries slices of one shape; got {sorted(shapes)}")
    hu = np.stack([np.asarray(s.hu, dtype=np.float32) for s in slices])
    whole = hu.astype(np.int16)  # the SDK accepts HU within int16's range only (inputs.hu), so this cannot wrap
    pixels = {"hu_int16": whole} if np.array_equal(whole, hu) else {"hu": hu}
    return {**pixels,
            "spacing_mm": np.array([s.spacing_mm for s in slices], dtype=np.float64),
            "orientation": np.stack([orientation_tensor(s.orientation) for s in slices])}


def prediction_payload(prediction: Prediction) -> bytes:
    """The JSON of a Prediction as the server sends it (``to_dict(masks="none")``, UTF-8)."""
    return json.dumps(prediction.to_dict(masks="none"), allow_nan=False, separators=(",", ":")).encode("utf-8")


def refusal_payload(error: BaseException) -> bytes:
    """The JSON of a refused slice: the error's class name and message."""
    return json.dumps({ERROR_KEY: {"type": type(error).__name__, "message": str(error)}}).encode("utf-8")


def parse_payload(raw: Any) -> dict[str, Any]:
    """A payload's JSON object (bytes as Triton returns them); a :class:`WireError` if it is not one."""
    if isinstance(raw, np.ndarray):
        raw = raw.reshape(-1)[0] if raw.size == 1 else raw
    try:
        data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (AttributeError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"prediction_json is not UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WireError(f"prediction_json must hold a JSON object; got a {type(data).__name__}")
    return data


def refusal(data: Mapping[str, Any]) -> tuple[str, str] | None:
    """(error type, message) when the payload says the server refused the slice, else None."""
    error = data.get(ERROR_KEY)
    if error is None:
        return None
    if not isinstance(error, dict):
        raise WireError(f"prediction_json {ERROR_KEY!r} must be an object with type and message; got {error!r:.80}")
    return str(error.get("type", "")), str(error.get("message", ""))


def prediction_from(data: Mapping[str, Any], label_map: np.ndarray, lesion_components: np.ndarray,
                    slice_: SliceInput) -> Prediction:
    """The Prediction the server made, rebuilt on the client's slice (its source and Dataset stay client-side).

    ``data`` is ``to_dict(masks="none")``; the maps must be the slice's shape. Every field is checked, so a
    server speaking another contract is a :class:`WireError`, not a wrong Prediction.
    """
    shape = slice_.shape
    if lesion_components.shape == (1, 1) and not data.get("lesions"):  # no lesion in the request: not sent whole
        lesion_components = np.zeros(shape, np.int32)
    if label_map.shape != shape or lesion_components.shape != shape:
        raise WireError(f"the server returned maps of shape {label_map.shape} / {lesion_components.shape} for a "
                        f"slice of {shape}")
    try:
        lesions = tuple(_lesion(item) for item in data["lesions"])
        spacing = check_spacing(data["spacing_mm"])
        if spacing != tuple(slice_.spacing_mm):
            raise WireError(f"the server used spacing {tuple(spacing)} for a slice sent with {slice_.spacing_mm}")
        probabilities = data["class_probabilities"]
        prediction = Prediction(
            label_map=np.ascontiguousarray(label_map, dtype=np.uint8),
            lesion_components=np.ascontiguousarray(lesion_components, dtype=np.int32),
            lesions=lesions, slice_class=_optional_str(data["slice_class"]),
            slice_class_probability=_optional_float(data["slice_class_probability"]),
            spacing_mm=slice_.spacing_mm,
            class_probabilities=None if probabilities is None else {str(k): float(v) for k, v in
                                                                     dict(probabilities).items()},
            timings={str(k): float(v) for k, v in dict(data["timings"]).items()},
            backend=str(data["backend"]), precision=str(data["precision"]),
            model={str(k): str(v) for k, v in dict(data["model"]).items()},
            source=dict(slice_.source), dataset=slice_.dataset)
    except WireError:
        raise
    except (KeyError, TypeError, ValueError, LiverLesionError) as exc:
        raise WireError(f"prediction_json does not describe a Prediction ({type(exc).__name__}: {exc})") from None
    if int(prediction.lesion_components.max(initial=0)) != len(lesions):
        raise WireError(f"the server's lesion map numbers {int(prediction.lesion_components.max(initial=0))} "
                        f"lesions and its JSON lists {len(lesions)}")
    return prediction


def _lesion(item: Mapping[str, Any]) -> Lesion:
    axes = item.get("axes")
    return Lesion(id=int(item["id"]), label=str(item["label"]), probability=float(item["probability"]),
                  area_mm2=float(item["area_mm2"]), pixels=int(item["pixels"]),
                  bbox=_ints(item["bbox"], 4), centroid=_floats(item["centroid"]),
                  measured_axes=None if axes is None else AxialDiameters(
                      long_mm=float(axes["long_mm"]), short_mm=float(axes["short_mm"]),
                      long_ends=(_floats(axes["long_ends"][0]), _floats(axes["long_ends"][1])),
                      short_ends=(_floats(axes["short_ends"][0]), _floats(axes["short_ends"][1]))))


def _ints(values: Sequence[Any], n: int) -> Any:
    if len(values) != n:
        raise ValueError(f"expected {n} integers, got {list(values)!r:.60}")
    return tuple(int(v) for v in values)


def _floats(values: Sequence[Any]) -> tuple[float, float]:
    if len(values) != 2:
        raise ValueError(f"expected 2 numbers, got {list(values)!r:.60}")
    first, second = float(values[0]), float(values[1])
    if not (math.isfinite(first) and math.isfinite(second)):
        raise ValueError(f"expected finite numbers, got {first}, {second}")
    return first, second


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
