"""INT8 calibration for TensorRT 8.x: fixed-size batches over the package's saved slices.

The slices (``calibration/slices.npy``: float32 HU, N x 1 x H x W on the model grid)
are the same ones the export used for the Q/DQ model, so both INT8 paths see the
same data. :class:`CalibrationBatches` is plain numpy; :func:`make_entropy_calibrator`
wraps it in TensorRT's ``IInt8EntropyCalibrator2`` (8.x only: removed in 11.0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import ChecksumError, EngineError

if TYPE_CHECKING:
    from ..machine.cuda_memory import CudaMemory

PARTIAL_MODES = ("pad", "drop")


class CalibrationBatches:
    """Batches of exactly ``batch_size`` slices, in file order, for a static calibration profile.

    TensorRT calibrates with the calibration profile's one shape, so every batch has the
    same size. The last, partial batch is either padded with slices from the start
    (``partial="pad"``: every slice is seen, a few twice) or dropped (``"drop"``).
    """

    def __init__(self, slices: np.ndarray, batch_size: int, *, partial: str = "pad",
                 source: str = "slices") -> None:
        if partial not in PARTIAL_MODES:
            raise EngineError(f"partial batch mode {partial!r} is unknown; accepted: "
                              f"{', '.join(PARTIAL_MODES)}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise EngineError(f"calibration batch size must be an integer >= 1, got {batch_size!r}")
        if not isinstance(slices, np.ndarray) or slices.dtype != np.float32 or slices.ndim != 4 \
                or slices.shape[1] != 1 or slices.shape[0] < 1:
            got = f"{getattr(slices, 'dtype', type(slices).__name__)} {getattr(slices, 'shape', '')}"
            raise EngineError(f"{source}: calibration slices must be float32 HU of shape N x 1 x H x W with "
                              f"N >= 1, got {got}")
        if not np.isfinite(slices).all():
            raise EngineError(f"{source}: calibration slices contain NaN or infinite values")
        if partial == "drop" and slices.shape[0] < batch_size:
            raise EngineError(f"{source}: {slices.shape[0]} calibration slices make no full batch of "
                              f"{batch_size}; use a smaller batch or partial='pad'")
        self.slices = slices
        self.batch_size = batch_size
        self.partial = partial

    @classmethod
    def from_file(cls, path: str | Path, batch_size: int, *, grid_size: tuple[int, int] | None = None,
                  partial: str = "pad") -> CalibrationBatches:
        """Read ``slices.npy`` (no pickle) and check it against the model grid."""
        try:
            slices = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise EngineError(f"{path}: not a readable .npy array of calibration slices ({exc})") from None
        batches = cls(slices, batch_size, partial=partial, source=str(path))
        if grid_size is not None and tuple(slices.shape[2:]) != tuple(grid_size):
            raise EngineError(f"{path}: calibration slices are {slices.shape[2]} x {slices.shape[3]}, "
                              f"the model grid is {grid_size[0]} x {grid_size[1]}; re-export them")
        return batches

    @property
    def batch_shape(self) -> tuple[int, int, int, int]:
        _, channels, rows, cols = self.slices.shape
        return (self.batch_size, int(channels), int(rows), int(cols))

    @property
    def batch_nbytes(self) -> int:
        return int(np.prod(self.batch_shape)) * 4

    def __len__(self) -> int:
        count = self.slices.shape[0]
        return -(-count // self.batch_size) if self.partial == "pad" else count // self.batch_size

    def indices(self, index: int) -> np.ndarray:
        """Which slices (rows of the file) make batch ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range 0..{len(self) - 1}")
        start = index * self.batch_size
        return np.arange(start, start + self.batch_size) % self.slices.shape[0]

    def batch(self, index: int) -> np.ndarray:
        return np.ascontiguousarray(self.slices[self.indices(index)], dtype=np.float32)

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(len(self)):
            yield self.batch(index)


def read_cache(path: str | Path, sha256: str | None = None) -> bytes | None:
    """A calibration cache's bytes, or None when there is none (missing or empty).

    ``sha256``: the cache's manifest record; bytes that do not match it raise ChecksumError
    (the cache is device-built, outside the package digest, and TensorRT trusts its scales).
    """
    path = Path(path)
    if not path.is_file():
        return None
    data = path.read_bytes()
    if data and sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ChecksumError(f"calibration cache {path} does not match the sha256 of its manifest record; it "
                            "was modified after it was written")
    return data or None


def write_cache(path: str | Path, data: bytes) -> Path:
    """Write a calibration cache atomically, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, bytes(data))
    return path


def make_entropy_calibrator(trt: Any, batches: CalibrationBatches, cache_path: str | Path, memory: CudaMemory,
                            *, input_name: str, reuse_cache: bool = True, cache_sha256: str | None = None,
                            log: Callable[[str], None] | None = None, kind: str = "entropy2") -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding ``batches`` through one device buffer (TensorRT 8.x).

    The class is defined here, at call time, because its base class lives in the
    tensorrt module. ``memory`` must be active (its CUDA context current) while TensorRT
    calibrates. Set the calibration profile's shape to ``batches.batch_shape``. ``cache_sha256``:
    the cache's manifest record, checked before it is reused (a cache that fails it is recalibrated).
    """
    # Both bases exist from TensorRT 8.5 to 10.x; 11 removed calibrators (the plan never asks there).
    base = trt.IInt8EntropyCalibrator2 if kind == "entropy2" else trt.IInt8MinMaxCalibrator
    say = log or (lambda message: None)

    class EntropyCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)  # pybind trampolines must be initialised explicitly
            self._iter = iter(batches)
            self._done = 0
            self._host = memory.pinned_empty(batches.batch_shape, np.float32)
            self._device = memory.device_alloc(batches.batch_nbytes)
            self._stream = memory.create_stream()

        def get_batch_size(self) -> int:
            # Explicit-batch networks take the batch from the calibration profile (trtexec returns 1 too).
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if list(names) != [input_name]:
                say(f"calibrator: TensorRT asked for inputs {list(names)}, expected [{input_name!r}]")
                return None
            try:
                batch = next(self._iter)
            except StopIteration:
                return None
            np.copyto(self._host, batch)
            memory.copy_htod_async(self._device, self._host, self._stream)
            memory.synchronize(self._stream)
            self._done += 1
            say(f"calibration batch {self._done}/{len(batches)}")
            return [self._device]

        def read_calibration_cache(self) -> bytes | None:
            try:
                data = read_cache(cache_path, cache_sha256) if reuse_cache else None
            except ChecksumError as exc:  # never raise into TensorRT's callback: calibrate anew instead
                say(f"{exc}; not used, calibrating anew")
                return None
            if data:
                say(f"using calibration cache {cache_path}")
            return data

        def write_calibration_cache(self, cache: Any) -> None:
            write_cache(cache_path, bytes(cache))
            say(f"wrote calibration cache {cache_path}")

    return EntropyCalibrator()
