"""Shared by the SDK tests: a package whose answer is known (an HU-threshold graph) and drawn slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from liverlesion.grid import ModelGrid
from liverlesion.labels import LESION_CLASSES, TARGET_LABELS
from liverlesion.package import (
    SCHEMA_NAME,
    SCHEMA_VERSION,
    file_identity,
    for_file,
    make_binding,
    set_onnx_binding,
    write_manifest,
)
from liverlesion.package.store import file_record
from liverlesion.preprocessing import Preprocessing

#: HU each label of the threshold graph stands for (background twice: soft tissue and air).
THRESHOLD_HU = {"background": (200.0, -1000.0), "liver": 100.0, "cyst": 0.0, "hemangioma": 600.0,
                "metastasis": -300.0}
THRESHOLD_GRID = ModelGrid((128, 128), (2.0, 2.0))
#: The manifest record fields (role, precision, form) of each ONNX file name, as export and quantize write them.
RECORDS = {"model_fp32.onnx": {"role": "onnx", "precision": "fp32", "form": "float"},
           "model_fp16.onnx": {"role": "onnx", "precision": "fp16", "form": "float"},
           "model_int8_qdq_s8s8.onnx": {"role": "onnx", "precision": "int8", "form": "qdq-s8s8"},
           "model_int8_qdq_u8s8.onnx": {"role": "onnx", "precision": "int8", "form": "qdq-u8s8"}}


def threshold_binding(grid: ModelGrid = THRESHOLD_GRID, default_spacing_mm=None) -> dict:
    """What a threshold graph on ``grid`` is exported for (the manifest of its package must agree)."""
    return make_binding(input_name="hu", grid=grid, labels=TARGET_LABELS, lesion_classes=LESION_CLASSES,
                        preprocessing=Preprocessing(), default_spacing_mm=default_spacing_mm)


def threshold_graph(path: Path, width: float = 50.0, *, grid: ModelGrid = THRESHOLD_GRID,
                    binding: dict | None = None, record: dict | None = None, doc: str = "") -> Path:
    """A fused-graph stand-in: each pixel gets the label of the nearest HU in ``THRESHOLD_HU``.

    Its metadata records ``binding`` (by default :func:`threshold_binding` of ``grid``) with the
    identity of ``record``, the fields of its manifest record (by default ``RECORDS`` of its
    file name, else an FP32 float graph); ``doc`` tells apart graphs that are otherwise the same.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    tissue, air = THRESHOLD_HU["background"]
    centres = np.array([tissue, THRESHOLD_HU["liver"], THRESHOLD_HU["cyst"], THRESHOLD_HU["hemangioma"],
                        THRESHOLD_HU["metastasis"], air], np.float32).reshape(1, 6, 1, 1)
    consts = {"centres": centres, "inv_width": np.array(1.0 / width, np.float32),
              "s0": np.array([0], np.int64), "s1": np.array([1], np.int64), "s5": np.array([5], np.int64),
              "s6": np.array([6], np.int64), "axis": np.array([1], np.int64)}
    nodes = [
        helper.make_node("Sub", ["hu", "centres"], ["d"]),
        helper.make_node("Mul", ["d", "inv_width"], ["z"]),
        helper.make_node("Mul", ["z", "z"], ["z2"]),
        helper.make_node("Neg", ["z2"], ["l6"]),
        helper.make_node("Slice", ["l6", "s0", "s1", "axis"], ["bg_tissue"]),
        helper.make_node("Slice", ["l6", "s5", "s6", "axis"], ["bg_air"]),
        helper.make_node("Max", ["bg_tissue", "bg_air"], ["bg"]),
        helper.make_node("Slice", ["l6", "s1", "s5", "axis"], ["rest"]),
        helper.make_node("Concat", ["bg", "rest"], ["logits"], axis=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["argmax"], axis=1, keepdims=0),
        helper.make_node("Cast", ["argmax"], ["labels"], to=TensorProto.INT32),
    ]
    rows, cols = grid.size
    graph = helper.make_graph(
        nodes, "threshold",
        [helper.make_tensor_value_info("hu", TensorProto.FLOAT, ["N", 1, rows, cols])],
        [helper.make_tensor_value_info("labels", TensorProto.INT32, ["N", rows, cols]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 5, rows, cols])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.doc_string = doc
    record = record or RECORDS.get(Path(path).name, RECORDS["model_fp32.onnx"])
    set_onnx_binding(model, for_file(threshold_binding(grid) if binding is None else binding,
                                     file_identity(**record)))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_threshold_package(root: Path) -> Path:
    """A valid package (FP32 ONNX only, no weights) running :func:`threshold_graph`."""
    root.mkdir(parents=True, exist_ok=True)
    threshold_graph(root / "model_fp32.onnx")
    rows, cols = THRESHOLD_GRID.size
    record = file_record(root, "model_fp32.onnx", **RECORDS["model_fp32.onnx"], opset=17)
    write_manifest(root, {
        "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION,
        "model": {"name": "threshold", "version": "0", "arch": "joint", "config": {}},
        "input": {"name": "hu", "units": "HU", "dtype": "float32", "shape": ["N", 1, rows, cols],
                  "grid": THRESHOLD_GRID.to_dict()},
        "outputs": {"labels": {"dtype": "int32", "shape": ["N", rows, cols]},
                    "probabilities": {"dtype": "float32", "shape": ["N", 5, rows, cols]}},
        "preprocessing": Preprocessing().to_dict(),
        "labels": list(TARGET_LABELS), "lesion_classes": list(LESION_CLASSES),
        "files": [record.to_dict()], "engines": [],
    })
    return root


#: Discs drawn by :func:`drawn_slice`: (row_mm, col_mm) centre offset, radius_mm, HU.
LIVER_DISC = ((0.0, 0.0), 80.0, THRESHOLD_HU["liver"])
CYST_DISCS = (((-20.0, 25.0), 20.0, THRESHOLD_HU["cyst"]), ((35.0, -30.0), 12.0, THRESHOLD_HU["cyst"]))


def drawn_slice(spacing_mm: float, field_mm: float = 400.0) -> np.ndarray:
    """Soft tissue (200 HU) with a liver disc holding two cysts, sampled at pixel centres (int16 HU).

    Air (-1000 HU) beyond 190 mm from the centre, as around any body: outside the model grid's field.
    """
    n = round(field_mm / spacing_mm)
    mm = (np.arange(n) - (n - 1) / 2.0) * spacing_mm
    rr, cc = np.meshgrid(mm, mm, indexing="ij")
    hu = np.full((n, n), THRESHOLD_HU["background"][0])
    hu[rr ** 2 + cc ** 2 > 190.0 ** 2] = THRESHOLD_HU["background"][1]
    for (row, col), radius, value in (LIVER_DISC, *CYST_DISCS):
        hu[(rr - row) ** 2 + (cc - col) ** 2 <= radius ** 2] = value
    return hu.astype(np.int16)
