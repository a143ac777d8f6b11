"""Axial slices of a NIfTI volume in the LiTS reader's orientation: :func:`open_nifti_volume`, :func:`read_nifti_slice`.

The same convention as ``liverlesion.data.lits``, from the same nibabel functions
(``io_orientation``, ``apply_orientation``, ``voxel_sizes``): ``index`` counts axial
slices from the patient's feet to head, and the slice comes back in the radiological
view (rows anterior -> posterior, columns patient right -> left). The header is checked
once, when the volume is opened, before any voxel is read. Only one slice is kept, never
the whole volume: where the feet-head axis is the file's slowest axis (the usual layout)
the slice is one contiguous read; otherwise its voxels are scattered through the whole
file, which is read in blocks of at most :data:`liverlesion.input_limits.NIFTI_READ_BYTES`.

A .nii.gz cannot be read from the middle: each read would inflate it from its start, so a
whole volume read slice by slice would cost its size times its slices (364 ms a slice at
150 x 512 x 512). An open volume therefore inflates it once, on demand and front to back,
into a private temporary copy (under ``tempfile.gettempdir()``, i.e. ``TMPDIR``) that its
slices are read from in any order; the copy is deleted when the volume is closed. A single
:func:`read_nifti_slice` reads through the gzip stream itself, up to its slice.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, NoReturn

import numpy as np

from ... import input_limits
from ...errors import DataFormatError, InputError, LiverLesionError, require
from ...grid import Spacing, check_spacing
from ...input_limits import regular_file
from ...nifti_header import check_pixdims, check_plane_size, oriented_axes
from ..geometry import MAX_TILT_DEG, check_axial
from .hu import check_hu_array
from .slice import SliceInput

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Bytes inflated per step while a .nii.gz is copied out to its temporary file.
SPOOL_CHUNK_BYTES = 1 << 20


def is_nifti_path(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_nifti_slice(path: str | os.PathLike[str], index: Any, *, max_tilt_deg: float = MAX_TILT_DEG,
                     allow_non_hu: bool = False, max_side: int | None = None) -> SliceInput:
    """Axial slice ``index`` (feet -> head) of a NIfTI volume as a :class:`SliceInput`.

    The header (pixdims, affine, size; ``input_limits.MAX_SIDE`` or ``max_side``) is checked
    before the slice is read; the values must be plausible HU unless ``allow_non_hu``.
    For many slices of one volume, :func:`open_nifti_volume` reads its header and inflates it once.
    """
    with _open(path, max_tilt_deg, allow_non_hu, max_side, spool=False) as volume:
        return volume.slice(index)


def open_nifti_volume(path: str | os.PathLike[str], *, max_tilt_deg: float | None = MAX_TILT_DEG,
                      allow_non_hu: bool = False, max_side: int | None = None) -> NiftiVolume:
    """A NIfTI volume whose header is checked now and whose slices are read by :meth:`NiftiVolume.slice`.

    The checks and keywords are :func:`read_nifti_slice`'s; ``max_tilt_deg=None`` describes a volume
    of any orientation, refusing none (for listing). Close it (or use ``with``) to delete its copy.
    """
    return _open(path, max_tilt_deg, allow_non_hu, max_side, spool=True)


class NiftiVolume:
    """An open NIfTI volume: its checked geometry, and its axial slices read one at a time, from any thread.

    ``shape`` (rows, cols) and ``spacing_mm`` (row_mm, col_mm) are those of every slice as
    :meth:`slice` returns it; ``positions_mm`` places slice k (0 = feet) along the slice normal
    turned feet -> head (+S); ``direction_cosines`` are the stored in-plane axes (RAS, unit).
    """

    def __init__(self, header: _Header, source: _Direct | _Spool, *, allow_non_hu: bool,
                 max_side: int | None) -> None:
        self.path = header.path
        self.count = header.count
        self.shape = header.slice_shape
        self.spacing_mm = header.spacing
        self.positions_mm = header.positions
        self.slice_mm = header.slice_mm
        self.direction_cosines = header.direction_cosines
        self._header = header
        self._source = source
        self._allow_non_hu = allow_non_hu
        self._max_side = max_side
        self._lock = threading.Lock()  # one file position and one temporary copy, shared by every reader
        self._close = weakref.finalize(self, source.close)  # a volume dropped unclosed still deletes its copy

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"NiftiVolume({str(self.path)!r}, {self.count} slices of {self.shape[0]} x {self.shape[1]}, {state})"

    @property
    def closed(self) -> bool:
        return not self._close.alive

    def close(self) -> None:
        """Close the file and delete the temporary copy; later reads raise :class:`InputError`."""
        with self._lock:
            self._close()

    def __enter__(self) -> NiftiVolume:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def slice(self, index: Any) -> SliceInput:
        """Axial slice ``index`` (0 = feet) in the radiological view, its HU checked."""
        header, what = self._header, self._header.what
        if self.closed:
            raise InputError(f"{what} is closed; accepted: slices of an open volume (open_nifti_volume again)")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < self.count:
            raise InputError(f"{what}: slice index {index!r} is out of range; accepted: an integer "
                             f"0..{self.count - 1} (feet to head)")
        stored_index = int(index) if header.ornt[header.axis, 1] > 0 else self.count - 1 - int(index)
        with self._lock:
            if self.closed:  # closed by another thread since the check above
                raise InputError(f"{what} is closed; accepted: slices of an open volume (open_nifti_volume again)")
            try:
                proxy = self._source.proxy_upto(header.end_of(stored_index))
                stored = _read_slice(proxy, header.stored_shape[:3], header.axis, stored_index,
                                     len(header.stored_shape) == 4)
            except LiverLesionError:
                raise
            except Exception as exc:  # noqa: BLE001 - truncated gzip streams and short files fail here
                raise DataFormatError(f"{self.path}: slice {index} could not be read, the file may be truncated "
                                      f"({type(exc).__name__}: {exc})") from None
        nib = require("nibabel", "nifti", "reading NIfTI volumes")
        canonical = nib.orientations.apply_orientation(stored, header.ornt[header.plane])  # axes point R, A
        hu = check_hu_array(np.ascontiguousarray(canonical[::-1, ::-1].T), what, error=DataFormatError,
                            allow_non_hu=self._allow_non_hu, max_side=self._max_side)
        info = {"kind": "nifti", "path": str(self.path), "index": int(index), "slices": self.count}
        return SliceInput(hu=hu, spacing_mm=self.spacing_mm, source=info)


# -- the header, checked once ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Header:
    """What a checked header says: where each slice lies in the file and in the patient."""

    path: Path
    what: str
    proxy_spec: tuple[Any, ...]  # (shape, dtype, offset, slope, inter) of nibabel's ArrayProxy
    order: str
    stored_shape: tuple[int, ...]
    ornt: np.ndarray  # per stored axis: (RAS axis it runs along, +1 / -1)
    axis: int  # the stored axis that runs feet-head
    plane: list[int]  # the two other stored axes
    count: int
    slice_shape: tuple[int, int]
    spacing: Spacing
    positions: tuple[float, ...]
    slice_mm: float
    direction_cosines: tuple[float, ...]

    @property
    def data_end(self) -> int:
        """The file offset where the voxels end (the size of the uncompressed file)."""
        shape, dtype, offset = self.proxy_spec[:3]
        return int(offset) + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize

    def end_of(self, stored_index: int) -> int:
        """The file offset up to which stored slice ``stored_index`` lies."""
        shape, dtype, offset = self.proxy_spec[:3]
        if self.axis == 2:  # the slowest axis: the slice ends with its plane
            return int(offset) + (stored_index + 1) * shape[0] * shape[1] * np.dtype(dtype).itemsize
        return self.data_end  # its voxels are scattered through the whole file


def _check_header(path: Path, max_tilt_deg: float | None, max_side: int | None) -> _Header:
    """The header of ``path`` checked (sizes before any allocation, voxel type, pixdims, affine, axial, spacing)."""
    nib = require("nibabel", "nifti", "reading NIfTI volumes")
    what = f"NIfTI volume {path}"
    try:
        image = nib.load(str(path))
        shape = tuple(int(v) for v in image.shape)
        affine = image.affine
        dtype = image.header.get_data_dtype()
        proxy = image.dataobj
        spec = (shape, dtype, int(proxy.offset), float(proxy.slope), float(proxy.inter))
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds for damaged headers
        raise DataFormatError(f"{path} is not a readable NIfTI volume ({type(exc).__name__}: {exc})") from None
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)) or min(shape) < 1:
        raise DataFormatError(f"{path}: volume shape {shape} is not 3D; accepted: a 3D CT volume in HU")
    if dtype.kind not in "iuf" or dtype.itemsize > 8:
        raise DataFormatError(f"{path}: its voxels are of type {dtype}, which is not HU; accepted: integer or "
                              "floating-point voxels of at most 8 bytes")
    check_pixdims(image, what)
    affine, ornt = oriented_axes(affine, what)
    check_plane_size(shape, ornt, what, max_side=max_side)
    axis = int(np.flatnonzero(ornt[:, 0] == 2)[0])
    plane = [a for a in range(3) if a != axis]
    cols_dir, rows_dir = affine[:3, plane[0]], affine[:3, plane[1]]
    if max_tilt_deg is not None:
        check_axial(rows_dir, cols_dir, max_tilt_deg=max_tilt_deg, what=what, error=DataFormatError, unit=False)
    count = shape[axis]
    if count > input_limits.MAX_FRAMES:
        raise DataFormatError(f"{what}: its header claims {count} axial slices; accepted: at most "
                              f"{input_limits.MAX_FRAMES} (liverlesion.input_limits.MAX_FRAMES)")
    zooms = nib.affines.voxel_sizes(affine)
    canonical = {int(ornt[a, 0]): (float(zooms[a]), shape[a]) for a in plane}  # RAS axis -> (mm, voxels)
    try:
        spacing = check_spacing((canonical[1][0], canonical[0][0]))  # rows run A-P, columns R-L
    except InputError as exc:
        raise DataFormatError(f"{what}: {exc} (read from the NIfTI affine)") from None
    step = affine[:3, axis] * ornt[axis, 1]  # one slice towards the head
    normal = np.cross(cols_dir, rows_dir)
    normal = normal / np.linalg.norm(normal) * (1.0 if float(normal @ step) > 0 else -1.0)
    stored = np.arange(count) if ornt[axis, 1] > 0 else np.arange(count)[::-1]
    positions = (affine[:3, 3] @ normal) + stored * float(affine[:3, axis] @ normal)
    cosines = (*(cols_dir / np.linalg.norm(cols_dir)), *(rows_dir / np.linalg.norm(rows_dir)))
    return _Header(path, what, spec, str(proxy.order), shape, ornt, axis, plane, count,
                   (canonical[1][1], canonical[0][1]), spacing, tuple(float(z) for z in positions),
                   abs(float(affine[:3, axis] @ normal)), tuple(float(c) for c in cosines))


def _open(path: str | os.PathLike[str], max_tilt_deg: float | None, allow_non_hu: bool, max_side: int | None,
          *, spool: bool) -> NiftiVolume:
    path = regular_file(path, "an existing NIfTI volume (.nii or .nii.gz)")
    header = _check_header(path, max_tilt_deg, max_side)
    try:
        raw = open(path, "rb")  # held by the volume until it is closed
    except OSError as exc:
        raise InputError(f"{path} cannot be opened ({exc.strerror or exc}); give an existing, readable NIfTI "
                         "volume (.nii or .nii.gz)") from None
    compressed = str(path).lower().endswith(".gz")
    try:
        source = _Spool(raw, header) if compressed and spool else _Direct(raw, header, compressed)
    except BaseException:
        raw.close()
        raise
    return NiftiVolume(header, source, allow_non_hu=allow_non_hu, max_side=max_side)


# -- where the voxels are read from --------------------------------------------------------------------
def _proxy(handle: Any, header: _Header) -> Any:
    from nibabel.arrayproxy import ArrayProxy

    return ArrayProxy(handle, header.proxy_spec, mmap=False, order=header.order)


class _Direct:
    """The file itself: a .nii, or a .nii.gz read once through its gzip stream (one slice)."""

    def __init__(self, raw: BinaryIO, header: _Header, compressed: bool) -> None:
        self._raw = raw
        self._stream: Any = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        self._proxy = _proxy(self._stream, header)

    def proxy_upto(self, end: int) -> Any:
        return self._proxy

    def close(self) -> None:
        self._stream.close()
        self._raw.close()


class _Spool:
    """A .nii.gz inflated on demand, front to back and once, into a temporary copy read in any order."""

    def __init__(self, raw: BinaryIO, header: _Header) -> None:
        self._raw = raw
        self._stream = gzip.GzipFile(fileobj=raw, mode="rb")
        self._header = header
        self._folder: str | None = None
        self._writer: BinaryIO | None = None
        self._reader: BinaryIO | None = None
        self._proxy: Any = None
        self._inflated = 0  # bytes of the uncompressed file copied so far
        self._broken: str | None = None  # why the copy cannot go on (it is then deleted)

    def proxy_upto(self, end: int) -> Any:
        """The copy's proxy, once the file is inflated up to offset ``end``."""
        if self._broken:
            raise InputError(self._broken)
        if self._proxy is None:
            self._start()
        assert self._writer is not None
        while self._inflated < end:
            chunk = self._stream.read(min(SPOOL_CHUNK_BYTES, end - self._inflated))
            if not chunk:
                raise EOFError(f"the uncompressed data ends at byte {self._inflated}, before byte {end}")
            try:
                self._writer.write(chunk)
            except OSError as exc:
                self._fail(exc)
            self._inflated += len(chunk)
        try:
            self._writer.flush()
        except OSError as exc:
            self._fail(exc)
        return self._proxy

    def _start(self) -> None:
        try:
            self._folder = tempfile.mkdtemp(prefix="liverlesion-nifti-")
            copy = os.path.join(self._folder, "volume.nii")
            self._writer = open(copy, "wb")  # both closed with the volume
            self._reader = open(copy, "rb")
        except OSError as exc:
            self._fail(exc)
        self._proxy = _proxy(self._reader, self._header)

    def _fail(self, exc: OSError) -> NoReturn:
        folder = self._folder or tempfile.gettempdir()
        self._broken = (f"{self._header.what} could not be inflated into a temporary copy in {folder} "
                        f"({type(exc).__name__}: {exc.strerror or exc}); accepted: a temporary folder with room for "
                        f"{self._header.data_end / 2**20:.0f} MiB (set TMPDIR), or the "
                        "volume uncompressed (.nii)")
        self._delete()
        raise InputError(self._broken) from None

    def _delete(self) -> None:
        for handle in (self._writer, self._reader):
            if handle is not None:
                handle.close()
        self._writer = self._reader = self._proxy = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def close(self) -> None:
        self._delete()
        self._stream.close()
        self._raw.close()


def _read_slice(dataobj: Any, shape: tuple[int, ...], axis: int, index: int, four_d: bool) -> np.ndarray:
    """Stored slice ``index`` along stored ``axis`` (the other two axes in stored order), read in bounded blocks.

    The file holds voxels axis 0 fastest. Along axis 2 the slice is one contiguous read; along
    axis 1 or 0 each block read spans at most ``NIFTI_READ_BYTES`` (as read, and as scaled to
    float64 where the header scales), in file order.
    """
    n0, n1, n2 = shape
    tail: tuple[int, ...] = (0,) if four_d else ()

    def read(*key: Any) -> np.ndarray:
        return np.asarray(dataobj[key + tail])

    budget = input_limits.NIFTI_READ_BYTES
    scaled = float(dataobj.slope) != 1.0 or float(dataobj.inter) != 0.0
    itemsize = 8 if scaled else dataobj.dtype.itemsize
    if axis == 2:
        return read(slice(None), slice(None), index)
    plane = n0 * n1 * itemsize  # the bytes of one index along axis 2
    if plane <= budget:  # blocks of whole planes; keep the slice's part of each
        step = max(1, budget // plane)
        parts = []
        for k in range(0, n2, step):
            ks = slice(k, min(k + step, n2))
            if axis == 1:  # each plane holds one contiguous run of the slice: nibabel reads just the runs
                parts.append(read(slice(None), index, ks))
            else:
                parts.append(read(slice(None), slice(None), ks)[index].copy())  # not a view
        return np.concatenate(parts, axis=1)
    if axis == 1:  # a plane beyond the budget: one run of n0 voxels per plane
        return np.stack([read(slice(None), index, k) for k in range(n2)], axis=1)
    rows = max(1, budget // (n0 * itemsize))  # axis 0: blocks of rows within each plane
    columns = []
    for k in range(n2):
        runs = [read(slice(None), slice(j, min(j + rows, n1)), k)[index].copy()
                for j in range(0, n1, rows)]
        columns.append(np.concatenate(runs))
    return np.stack(columns, axis=1)
