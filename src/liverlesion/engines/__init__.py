"""TensorRT engines: plan a build for (TensorRT version, options, manifest), build it, record it.

The decisions live in :mod:`.plan` as plain, tested data; :mod:`.build` carries them
out with the tensorrt module, imported only when a build runs. :mod:`.onnx_gate` asks NVIDIA's
ONNX parser and builder whether they accept an exported file (export's gate). :mod:`.records`
says which recorded engine runs on which machine. The GPU and the installed TensorRT are
found by ``liverlesion.machine``. The names below are imported on first use (PEP 562), so
the CLI's parser reads the plan's defaults without numpy.
"""

from __future__ import annotations

from ..lazy import lazy_exports

#: Names importable from here, and the module each lives in.
_LAZY = {
    **dict.fromkeys(("CalibrationBatches", "make_entropy_calibrator", "read_cache", "write_cache"),
                    "liverlesion.engines.int8_calibrator"),
    **dict.fromkeys(("BuildOptions", "BuildPlan", "CalibratorPlan", "ShapeProfile", "engine_file_name",
                     "plan_build"), "liverlesion.engines.plan"),
    **dict.fromkeys(("EngineRecord", "add_engine_record", "engine_compatibility", "engine_records", "make_record",
                     "select_engine"), "liverlesion.engines.records"),
    **dict.fromkeys(("import_tensorrt", "installed_tensorrt_version"), "liverlesion.engines.versions"),
    **dict.fromkeys(("ParserVerdict", "check_onnx_for_tensorrt", "nvidia_parser_available"),
                    "liverlesion.engines.onnx_gate"),
    "TrtVersion": "liverlesion.engine_tags",
}
__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
