"""TensorRT engines: plan a build for (TensorRT version, options, manifest), build it, record it.

The decisions live in :mod:`.plan` as plain, tested data; :mod:`.build` carries them
out with the tensorrt module, imported only when a build runs. :mod:`.records`
says which recorded engine runs on which machine; :mod:`.gpu` finds the GPU
without risking a crash where there is no driver.
"""

from ..machine.gpu import GpuInfo, detect_gpu
from ..machine.runtimes import tensorrt_installed
from .int8_calibrator import CalibrationBatches, make_entropy_calibrator, read_cache, write_cache
from .plan import BuildOptions, BuildPlan, CalibratorPlan, ShapeProfile, engine_file_name, plan_build
from .records import (
    EngineRecord,
    add_engine_record,
    engine_compatibility,
    engine_records,
    make_record,
    select_engine,
)
from .versions import TrtVersion, import_tensorrt, installed_tensorrt_version

__all__ = [
    "BuildOptions", "BuildPlan", "CalibrationBatches", "CalibratorPlan", "EngineRecord", "GpuInfo",
    "ShapeProfile", "TrtVersion", "add_engine_record", "detect_gpu", "engine_compatibility",
    "engine_file_name", "engine_records", "import_tensorrt", "installed_tensorrt_version",
    "make_entropy_calibrator", "make_record", "plan_build", "read_cache", "select_engine",
    "tensorrt_installed", "write_cache",
]
