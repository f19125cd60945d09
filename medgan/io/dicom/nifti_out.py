"""Write a volume read from DICOM as a NIfTI-1 file, fast and without importing nibabel.

Importing nibabel costs about 0.2 s of CPU (it loads every format it knows), as much as reading a
300-slice series; ``medgan convert`` writes its single-file NIfTI-1 with this module instead. The
header follows the conventions of :func:`medgan.io.nifti.write_nifti` (and of nibabel's
``set_qform``/``set_sform``): sform code 1 with the affine; qform code 1 with the rotation as a
quaternion, or code 0 when the affine is sheared (gantry tilt kept exactly), since a qform cannot
hold a shear; units mm and s; no intensity scaling. The voxel data of an ``(X, Y, Z)`` volume held as
a transposed ``(Z, Y, X)`` C-ordered array is already in NIfTI's order and is written without a copy.
``tests/io/test_dicom_nifti_out.py`` checks the files against nibabel's.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Tuple, Union

import numpy as np

from medgan.errors import OutputError
from medgan.utils.atomic import atomic_path

PathLike = Union[str, "os.PathLike[str]"]

#: NIfTI-1 datatype codes of the dtypes the DICOM reader produces (and a few more).
DATATYPE_CODES = {np.dtype(np.uint8): 2, np.dtype(np.int16): 4, np.dtype(np.int32): 8, np.dtype(np.float32): 16,
                  np.dtype(np.float64): 64, np.dtype(np.int8): 256, np.dtype(np.uint16): 512,
                  np.dtype(np.uint32): 768}
XFORM_SCANNER = 1
_UNITS_MM_SEC = 2 | 8
_HEADER_BYTES, _VOX_OFFSET = 348, 352
_SHEAR_TOLERANCE = 1e-6
#: gzip level for ``.nii.gz`` (nibabel's default: fast, most of the gain).
GZIP_LEVEL = 1


def is_sheared(affine: np.ndarray, tolerance: float = _SHEAR_TOLERANCE) -> bool:
    """Whether the columns of ``affine[:3, :3]`` are not orthogonal."""
    columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return bool(np.abs(columns.T @ columns - np.eye(3)).max() > tolerance)


def _rotation_to_quaternion(rotation: np.ndarray) -> Tuple[float, float, float, float]:
    """``(w, x, y, z)`` of a proper rotation matrix, with ``w >= 0`` (the NIfTI convention)."""
    m = rotation
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = (0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s)
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = ((m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s)
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = ((m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s)
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = ((m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s)
    quaternion = np.array(q, dtype=np.float64)
    quaternion /= np.linalg.norm(quaternion)
    if quaternion[0] < 0:
        quaternion = -quaternion
    return tuple(float(v) for v in quaternion)  # type: ignore[return-value]


def qform_parameters(affine: np.ndarray) -> Tuple[float, Tuple[float, float, float], Tuple[float, float, float]]:
    """``(qfac, (b, c, d), zooms)`` of the qform closest to ``affine`` (shears stripped).

    The rotation is the orthogonal matrix nearest to the normalised columns (polar decomposition),
    so a sheared affine gives the qform of its rotation part, as nibabel's ``strip_shears`` does.
    """
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    u, _, vt = np.linalg.svd(affine[:3, :3] / zooms)
    rotation = u @ vt
    qfac = 1.0
    if np.linalg.det(rotation) < 0:
        qfac = -1.0
        rotation[:, 2] *= -1
    _, b, c, d = _rotation_to_quaternion(rotation)
    return qfac, (b, c, d), (float(zooms[0]), float(zooms[1]), float(zooms[2]))


def nifti1_header(shape: Tuple[int, ...], dtype: np.dtype, affine: np.ndarray, description: str = "") -> bytes:
    """The 348-byte NIfTI-1 header (plus the 4-byte empty extension flag) of a single-file image.

    Args:
        shape: ``(X, Y, Z)`` voxels.
        dtype: the voxel dtype (a key of :data:`DATATYPE_CODES`).
        affine: ``(4, 4)`` voxel -> RAS mm.
        description: the ``descrip`` text (cut to 80 bytes).
    """
    dtype = np.dtype(dtype)
    if dtype.newbyteorder("=") not in DATATYPE_CODES:
        raise ValueError(f"no NIfTI-1 datatype for {dtype}")
    affine = np.asarray(affine, dtype=np.float64)
    qfac, (b, c, d), zooms = qform_parameters(affine)
    dims = [len(shape), *shape] + [1] * (7 - len(shape))
    pixdim = [qfac, *zooms] + [1.0] * 4
    sheared = is_sheared(affine)
    parts = [
        struct.pack("<i10s18sihcb", _HEADER_BYTES, b"", b"", 0, 0, b"\x00", 0),
        struct.pack("<8h", *dims),
        struct.pack("<3fhhhh", 0.0, 0.0, 0.0, 0, DATATYPE_CODES[dtype.newbyteorder("=")], dtype.itemsize * 8, 0),
        struct.pack("<8f", *pixdim),
        struct.pack("<3fhbB4f2i", _VOX_OFFSET, 1.0, 0.0, 0, 0, _UNITS_MM_SEC, 0.0, 0.0, 0.0, 0.0, 0, 0),
        struct.pack("<80s24s", description.encode("latin-1", "replace")[:80], b""),
        struct.pack("<2h", 0 if sheared else XFORM_SCANNER, XFORM_SCANNER),
        struct.pack("<6f", b, c, d, *affine[:3, 3]),
        struct.pack("<12f", *affine[:3, :].ravel()),
        struct.pack("<16s4s", b"", b"n+1\x00"),
    ]
    header = b"".join(parts)
    assert len(header) == _HEADER_BYTES
    return header + b"\x00\x00\x00\x00"


def write_volume_nifti(array: np.ndarray, affine: np.ndarray, path: PathLike, description: str = "",
                       overwrite: bool = False, gzip_level: int = GZIP_LEVEL) -> Path:
    """Write an ``(X, Y, Z)`` array with its voxel -> RAS affine as ``.nii`` or ``.nii.gz``, atomically.

    Args:
        array: ``(X, Y, Z)`` voxels; written in its dtype (int16 HU stays int16).
        affine: ``(4, 4)`` voxel -> RAS mm.
        path: destination ending in ``.nii`` or ``.nii.gz``.
        description: NIfTI ``descrip`` (at most 80 bytes).
        overwrite: replace an existing file (else :class:`OutputError`).
        gzip_level: compression level for ``.nii.gz``.

    Returns:
        the written path.
    """
    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise OutputError("the output name must end in .nii or .nii.gz", path, "rename the output")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise OutputError(f"the affine is not a finite invertible 4x4 matrix:\n{affine}", path,
                          "fix the image geometry before writing")
    data = np.asfortranarray(array)  # no copy for the reader's transposed (Z, Y, X) arrays
    if data.dtype.str[0] == ">":  # NIfTI is written little endian here
        data = data.astype(data.dtype.newbyteorder("<"))
    header = nifti1_header(data.shape, data.dtype, affine, description)
    payload = memoryview(data.T.reshape(-1)).cast("B")
    with atomic_path(path, overwrite=overwrite) as tmp:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(tmp, "wb", compresslevel=gzip_level, mtime=0) as handle:
                handle.write(header)
                handle.write(payload)
        else:
            with open(tmp, "wb") as handle:
                handle.write(header)
                handle.write(payload)
    return path
