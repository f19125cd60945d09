"""NIfTI in and out with the geometry kept exactly.

A volume read here is a :class:`monai.data.MetaTensor` of shape ``(X, Y, Z)`` whose ``.affine`` is the
file's voxel -> RAS millimetre transform (nibabel's best affine: the sform when its code is set, else
the qform), as MONAI's ``NibabelReader`` gives. Stored integers stay integers (no float conversion),
so ``write_nifti(read_nifti(f))`` reproduces every voxel and every affine entry of ``f``.

Writing sets both the qform and the sform with codes (the codes read from the input when known,
otherwise ``scanner``), millimetre units, no intensity scaling, and goes through
:func:`medgan.utils.atomic.atomic_path`, so a failed or killed write leaves no file behind.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Union

import nibabel as nib
import numpy as np

from medgan.errors import ImageFileError, OutputError
from medgan.utils.atomic import atomic_path

if TYPE_CHECKING:  # torch and MONAI are imported only where a MetaTensor is built: writing stays light
    from monai.data import MetaTensor

PathLike = Union[str, "os.PathLike[str]"]
DTypeLike = Union[str, np.dtype, type, None]

logger = logging.getLogger(__name__)

#: Key under ``meta["medgan"]`` holding what :func:`read_nifti` found in the header.
NIFTI_META_KEY = "nifti"
#: NIfTI xform code written when none is known ("scanner anatomical").
DEFAULT_XFORM_CODE = 1
#: Largest uncompressed data block :func:`read_nifti` allocates unless told otherwise (bytes).
DEFAULT_MAX_BYTES = 16 * 1024**3
#: The NIfTI ``descrip`` field holds at most this many bytes.
_DESCRIP_BYTES = 80
#: torch has no full support for these unsigned types: they are widened losslessly on reading.
_WIDEN = {np.dtype(np.uint16): np.dtype(np.int32), np.dtype(np.uint32): np.dtype(np.int64)}
_INT_CANDIDATES = (np.dtype(np.int16), np.dtype(np.int32), np.dtype(np.int64))


def _is_nifti_name(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_nifti(
    path: PathLike,
    validate: bool = False,
    spatial_dims: int = 3,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> MetaTensor:
    """Read a NIfTI-1/2 file into a ``MetaTensor`` with its voxel -> RAS affine.

    Integer data without scaling keep their stored dtype (``uint16``/``uint32`` are widened to
    ``int32``/``int64`` because torch lacks them); scaled data (``scl_slope``/``scl_inter`` set) are
    returned as ``float32`` with the scaling applied. Trailing singleton dimensions beyond the third
    are dropped (``(X, Y, Z, 1)`` -> ``(X, Y, Z)``).

    Always refused, with :class:`ImageFileError` naming the file: a missing or unreadable file, a
    corrupted gzip stream or truncated data, a header with a zero-size dimension, a header declaring
    more data than the file holds or more than ``max_bytes`` (refused before allocating).

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        validate: also run :func:`validate_volume` (finite values, ``spatial_dims`` dimensions).
        spatial_dims: the dimensionality ``validate`` demands.
        max_bytes: refuse headers declaring a larger uncompressed data block than this.

    Returns:
        ``MetaTensor`` of shape ``(X, Y, Z)`` (or ``(X, Y, Z, T)``), ``.affine`` float64 ``(4, 4)``
        voxel -> RAS mm; ``meta["medgan"]["nifti"]`` records the stored dtype and the header's
        qform/sform codes and description.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageFileError("file not found or not a regular file", path, "check the path")
    if not _is_nifti_name(path):
        raise ImageFileError("not a NIfTI file name (expected .nii or .nii.gz)", path,
                             "convert the image to NIfTI first, or pass a DICOM folder to a command that reads DICOM")
    try:
        img = nib.load(str(path))
    except (OSError, EOFError, zlib.error, ValueError, struct.error, nib.filebasedimages.ImageFileError) as err:
        raise ImageFileError(f"cannot read the NIfTI header ({type(err).__name__}: {err})", path,
                             "the file is corrupted or not NIfTI; re-export or re-download it") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ImageFileError(f"not a NIfTI image ({type(img).__name__})", path, "convert it to NIfTI first")
    header = img.header
    shape = tuple(int(n) for n in img.shape)
    if len(shape) < 3:
        raise ImageFileError(f"the image is {len(shape)}D with shape {shape}; a 3D volume is needed", path,
                             "pass a 3D volume")
    if any(n == 0 for n in shape):
        raise ImageFileError(f"the header declares a zero-size dimension (shape {shape})", path,
                             "the file is empty or its header is corrupted; re-export it")
    _check_declared_size(path, header, shape, max_bytes)

    stored = np.dtype(header.get_data_dtype())
    # nibabel moves the scaling from the loaded header into the data proxy
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    scaled = slope != 1.0 or inter != 0.0
    try:
        if scaled or stored.kind not in "iub":
            data = np.asarray(img.get_fdata(dtype=np.float32 if stored.itemsize <= 4 else np.float64))
        else:
            data = np.asarray(img.dataobj)
    except (OSError, EOFError, zlib.error, ValueError) as err:
        raise ImageFileError(f"the image data are unreadable ({type(err).__name__}: {err})", path,
                             "the file is truncated or its compressed stream is corrupted; re-export it") from None
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    data = data.astype(_WIDEN.get(data.dtype, data.dtype), copy=False)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]

    affine = np.asarray(img.affine, dtype=np.float64)
    nifti_meta = {
        "stored_dtype": str(stored),
        "scaled": bool(scaled),
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
        "descrip": header["descrip"].item().decode("latin-1", "replace").strip("\x00 "),
    }
    image = _to_meta_tensor(np.ascontiguousarray(data), affine, path, nifti_meta)
    if validate:
        validate_volume(image, path, spatial_dims=spatial_dims)
    logger.debug("read %s: shape %s dtype %s", path, tuple(image.shape), data.dtype)
    return image


def _to_meta_tensor(data: np.ndarray, affine: np.ndarray, path: Path, nifti_meta: Dict[str, Any]) -> MetaTensor:
    import torch
    from monai.data import MetaTensor
    from monai.utils import MetaKeys, SpaceKeys

    meta = {
        "filename_or_obj": str(path),
        MetaKeys.ORIGINAL_AFFINE: affine.copy(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(data.shape[:3]),
        MetaKeys.SPACE: SpaceKeys.RAS,
        "medgan": {NIFTI_META_KEY: nifti_meta},
    }
    return MetaTensor(torch.from_numpy(data), affine=torch.from_numpy(affine.copy()), meta=meta)


def _check_declared_size(path: Path, header: Any, shape: Sequence[int], max_bytes: int) -> None:
    """Refuse a header declaring more data than allowed or than the file can hold, before reading."""
    itemsize = np.dtype(header.get_data_dtype()).itemsize
    declared = int(np.prod(np.asarray(shape, dtype=np.float64))) * itemsize
    if declared > max_bytes:
        raise ImageFileError(
            f"the header declares {declared / 1024**3:.1f} GiB of voxel data (shape {tuple(shape)}), more than "
            f"the {max_bytes / 1024**3:.1f} GiB limit", path,
            "the header is probably corrupted; if the image is really this large, raise max_bytes")
    offset = int(header.get_data_offset())
    if path.name.lower().endswith(".gz"):
        # Count the stream rather than trust the gzip size field (modulo 2**32, and a file can lie);
        # reading to the end also verifies the CRC, which nibabel skips when it stops at the data's end.
        available = gzip_stream_size(path, offset + declared)
    else:
        available = path.stat().st_size
    if offset + declared > available:
        raise ImageFileError(
            f"the header declares {declared} bytes of voxel data but the file holds only "
            f"{max(available - offset, 0)}", path, "the file is truncated or its header is corrupted; re-export it")


def gzip_stream_size(path: Path, limit: int, chunk_bytes: int = 1 << 24) -> int:
    """Uncompressed bytes of a gzip file counted by streaming (memory: one chunk), stopping past ``limit``.

    A stream of at most ``limit`` bytes is read to its end, so its CRC and length fields are checked.

    Raises:
        ImageFileError: the stream is damaged, truncated or not gzip.
    """
    import gzip

    total = 0
    try:
        with gzip.open(path, "rb") as handle:
            while total <= limit:
                block = handle.read(chunk_bytes)
                if not block:
                    break
                total += len(block)
    except (OSError, EOFError, zlib.error) as err:
        raise ImageFileError(f"the compressed stream is damaged ({type(err).__name__}: {err})", path,
                             "the file is truncated or corrupted; re-export or re-download it") from None
    return total


def validate_volume(image: Any, path: Optional[PathLike] = None, spatial_dims: int = 3) -> None:
    """Refuse a volume a 3D pipeline cannot use: wrong dimensionality or non-finite values.

    Args:
        image: array-like of shape ``(X, Y, Z)`` (``spatial_dims`` dimensions).
        path: the file it came from, named in the error.
        spatial_dims: the number of dimensions required.

    Raises:
        ImageFileError: with the file, the problem and the fix.
    """
    shape = tuple(int(n) for n in image.shape)
    if len(shape) != spatial_dims:
        raise ImageFileError(f"expected a {spatial_dims}D volume but the image has shape {shape}", path,
                             "extract one 3D volume (e.g. one time point or channel) and pass that")
    if any(n == 0 for n in shape):
        raise ImageFileError(f"the image has a zero-size dimension (shape {shape})", path, "re-export the image")
    values = _as_numpy(image)
    if values.dtype.kind in "fc":
        finite = np.isfinite(values)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise ImageFileError(f"{bad} voxel(s) are NaN or infinite", path,
                                 "fix the program that wrote this image, or replace non-finite voxels before use")


def write_nifti(
    image: Any,
    path: PathLike,
    dtype: DTypeLike = None,
    description: Optional[str] = None,
    affine: Optional[Any] = None,
    overwrite: bool = True,
) -> Path:
    """Write a volume to NIfTI atomically, with qform and sform both set.

    The on-disk dtype, when ``dtype`` is None: the dtype recorded by :func:`read_nifti` if the values
    fit it exactly (a read/write round trip keeps the file's dtype, e.g. ``int32``); else ``int16``
    for integer values that fit it (HU), a wider integer type for larger integers, and the float type
    of the data (at least ``float32``) otherwise. An explicit integer ``dtype`` rounds float data to the
    nearest integer; values outside its range are refused, never clipped.

    Args:
        image: ``MetaTensor``, tensor or array of shape ``(X, Y, Z)`` (or more dimensions).
        path: destination ``.nii`` or ``.nii.gz``.
        dtype: on-disk data type; None chooses as described above.
        description: the NIfTI ``descrip`` text (at most 80 bytes, longer text is cut with a warning).
        affine: voxel -> RAS mm ``(4, 4)``; required when ``image`` has none (not a ``MetaTensor``).
        overwrite: replace an existing file (else :class:`OutputError`).

    Returns:
        the written path.
    """
    path = Path(path)
    if not _is_nifti_name(path):
        raise OutputError("the output name must end in .nii or .nii.gz", path, "rename the output")
    if affine is None:
        if getattr(image, "affine", None) is None:
            raise OutputError("no affine: the image is not a MetaTensor and no affine was given", path,
                              "pass affine=<4x4 voxel-to-RAS matrix>")
        affine = image.affine
    affine_np = np.asarray(_as_numpy(affine), dtype=np.float64)
    if affine_np.shape != (4, 4) or not np.all(np.isfinite(affine_np)) or abs(np.linalg.det(affine_np[:3, :3])) < 1e-12:
        raise OutputError(f"the affine is not a finite invertible 4x4 matrix:\n{affine_np}", path,
                          "fix the image geometry before writing")
    data = _as_numpy(image)
    nifti_meta = _nifti_meta(image)
    out_dtype = _choose_dtype(data, dtype, nifti_meta.get("stored_dtype"), path)
    data = _cast(data, out_dtype, path)

    header = nib.Nifti1Header()
    header.set_data_dtype(out_dtype)
    header.set_xyzt_units("mm", "sec")
    img = nib.Nifti1Image(data, affine_np, header=header)
    sform_code = nifti_meta.get("sform_code") or DEFAULT_XFORM_CODE
    qform_code = nifti_meta.get("qform_code") or sform_code
    img.set_sform(affine_np, code=int(sform_code))
    if _has_shear(affine_np):
        # the qform (rotation + zooms) cannot hold a sheared affine; readers then use the sform
        logger.warning("%s: the affine is sheared (e.g. gantry tilt): written in the sform only, qform code 0", path)
        img.set_qform(affine_np, code=0, strip_shears=True)
    else:
        img.set_qform(affine_np, code=int(qform_code))
    img.header.set_slope_inter(1.0, 0.0)
    if description:
        encoded = description.encode("latin-1", "replace")
        if len(encoded) > _DESCRIP_BYTES:
            logger.warning("%s: description cut to %d bytes (NIfTI limit)", path, _DESCRIP_BYTES)
        img.header["descrip"] = encoded[:_DESCRIP_BYTES]
    with atomic_path(path, overwrite=overwrite) as tmp:
        nib.save(img, str(tmp))
    logger.debug("wrote %s: shape %s dtype %s", path, data.shape, out_dtype)
    return path


def _as_numpy(value: Any) -> np.ndarray:
    """A NumPy view of an array, tensor or MetaTensor (moved to the CPU), without importing torch."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if hasattr(value, "as_tensor"):  # MetaTensor: drop the metadata before converting
            value = value.as_tensor()
        return value.numpy()
    return np.asarray(value)


def _nifti_meta(image: Any) -> Dict[str, Any]:
    meta = getattr(image, "meta", None) or {}
    medgan_meta = meta.get("medgan") if isinstance(meta, dict) else None
    return dict(medgan_meta.get(NIFTI_META_KEY, {})) if isinstance(medgan_meta, dict) else {}


def _integer_valued(data: np.ndarray) -> bool:
    if data.dtype.kind in "iub":
        return True
    return bool(np.all(np.isfinite(data))) and bool(np.array_equal(np.round(data), data))


def _fits(data: np.ndarray, dtype: np.dtype) -> bool:
    if data.size == 0:
        return True
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return _integer_valued(data) and info.min <= data.min() and data.max() <= info.max
    if dtype.kind == "f":
        return data.dtype.kind in "iub" and data.dtype.itemsize < dtype.itemsize or data.dtype == dtype
    return False


def _choose_dtype(data: np.ndarray, dtype: DTypeLike, recorded: Optional[str], path: Path) -> np.dtype:
    if dtype is not None:
        return np.dtype(dtype)
    if recorded is not None and _fits(data, np.dtype(recorded)):
        return np.dtype(recorded)
    if _integer_valued(data):
        for candidate in _INT_CANDIDATES:
            if _fits(data, candidate):
                return candidate
    if data.dtype.kind == "f" and data.dtype.itemsize > 4:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _cast(data: np.ndarray, dtype: np.dtype, path: Path) -> np.ndarray:
    if data.dtype == dtype:
        return np.ascontiguousarray(data)
    if dtype.kind in "iu":
        values = data
        if data.dtype.kind == "f":
            if not np.all(np.isfinite(data)):
                raise OutputError(f"the image holds NaN or infinite values that {dtype} cannot store", path,
                                  "replace non-finite voxels, or write a float dtype")
            values = np.rint(data)
        info = np.iinfo(dtype)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise OutputError(f"values {values.min()}..{values.max()} do not fit {dtype}", path,
                              "choose a wider dtype (or dtype=None to choose one)")
        return values.astype(dtype)
    return data.astype(dtype)


def _has_shear(affine: np.ndarray, tol: float = 1e-6) -> bool:
    columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    gram = columns.T @ columns
    return bool(np.abs(gram - np.eye(3)).max() > tol)
