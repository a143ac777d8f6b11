"""The wire contract between the Triton models this SDK serves and :class:`RemoteAnalyzer`: names, types, shapes.

One definition for ``liverlesion serve`` (PyTriton), ``liverlesion triton-repo`` (NGC Triton's model
repository) and the client. Plain data: no Triton import here.

Two models, both with dynamic batching (the batcher groups requests of one shape):

- :data:`PIPELINE_MODEL` runs the whole SDK: a slice's HU as stored and its spacing in; the label map, the
  lesion components and the rest of the Prediction (as JSON) out.
- :data:`NETWORK_MODEL` runs the fused network alone: HU on the model grid in; labels and probabilities out,
  for clients that resample themselves.

Each model's config carries :data:`PARAMETER_KEYS` (package name, version, digest), which the client checks
against what it was told to expect before the first request.
"""

from __future__ import annotations

from dataclasses import dataclass

PIPELINE_MODEL = "liverlesion_pipeline"
NETWORK_MODEL = "liverlesion_network"


@dataclass(frozen=True)
class Tensor:
    """One input or output of a served model; shapes exclude the batch dimension (-1: dynamic)."""

    name: str
    dtype: str  # numpy dtype name; Triton's type is its TYPE_ counterpart (``TRITON_TYPES``)
    shape: tuple[int, ...]
    meaning: str
    optional: bool = False


#: numpy dtype name -> Triton config data type.
TRITON_TYPES = {"float32": "TYPE_FP32", "float64": "TYPE_FP64", "int32": "TYPE_INT32", "int16": "TYPE_INT16",
                "uint16": "TYPE_UINT16", "uint8": "TYPE_UINT8", "bytes": "TYPE_STRING", "bool": "TYPE_BOOL"}

PIPELINE_INPUTS = (
    # Exactly one of hu / hu_int16 (HU_INPUTS): a slice of whole HU (every CT series whose rescale keeps integers)
    # travels as int16, half the bytes; bytes dominate a served request's cost (docs/serving.md).
    Tensor("hu", "float32", (-1, -1), "the slice in HU as stored (rows x cols)", optional=True),
    Tensor("hu_int16", "int16", (-1, -1), "the same, for a slice whose HU are all whole numbers", optional=True),
    # float64: the spacing as the client holds it, so that the geometry and every area and diameter in mm are the
    # in-process ones to the bit (float32 turns 0.7 mm into 0.69999999 and moves nearest-neighbour ties).
    Tensor("spacing_mm", "float64", (2,), "pixel spacing (row_mm, col_mm)"),
    Tensor("orientation", "uint8", (3,), "transpose, flip_rows, flip_cols of the stored slice (0/1); "
           "absent: stored in the radiological view", optional=True),
)
PIPELINE_OUTPUTS = (
    Tensor("label_map", "uint8", (-1, -1), "labels.TARGET_LABELS per input pixel"),
    Tensor("lesion_components", "uint16", (-1, -1), "0 none, k: lesion k of the JSON (at most "
           "MAX_WIRE_LESIONS); 1 x 1 zeros when no slice of the request has a lesion"),
    Tensor("prediction_json", "bytes", (1,), "Prediction.to_dict(masks='none') as UTF-8 JSON; for a slice the "
           "SDK refused, {ERROR_KEY: {type, message}} and 1 x 1 maps (the other requests of its batch are served)"),
)
#: The pipeline's slice inputs, of which a request carries exactly one.
HU_INPUTS = ("hu", "hu_int16")
#: Most lesions one served slice may have (uint16 lesion ids); a slice with more is refused, to predict in-process.
MAX_WIRE_LESIONS = 65535
#: Key of ``prediction_json`` for a refused slice: {"type": the liverlesion error class, "message": why}.
ERROR_KEY = "error"
#: Request parameters the pipeline reads (Triton request parameters): take values outside the plausible-HU rules
#: as HU anyway (``allow_non_hu`` of ``predict``).
REQUEST_PARAMETERS = ("allow_non_hu",)


def network_tensors(rows: int, cols: int, labels: int) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """The fused network's inputs and outputs for a package's grid (rows x cols) and number of labels."""
    inputs = (Tensor("hu", "float32", (1, rows, cols), "HU on the model grid"),)
    outputs = (Tensor("labels", "int32", (rows, cols), "argmax label per model-grid pixel (the package's order)"),
               Tensor("probabilities", "float32", (labels, rows, cols), "softmax over the package's labels"))
    return inputs, outputs


#: Keys of the model config parameters that identify the package a server runs.
PARAMETER_KEYS = ("liverlesion.package.name", "liverlesion.package.version", "liverlesion.package.digest")
#: Further model config parameters (not identity): the package's default spacing (JSON [row_mm, col_mm]), used by
#: the client for arrays given without one, as ``LesionAnalyzer`` uses it.
DEFAULT_SPACING_KEY = "liverlesion.input.default_spacing_mm"
#: Largest slice side (pixels) a server accepts, checked from the request's shape before anything is allocated.
MAX_SIDE = 2048
