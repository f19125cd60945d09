"""Read one DICOM series into a volume: decode, rescale to HU, sort, resample tilt/uneven spacing.

:func:`read_dicom_volume` works on NumPy only (no torch/MONAI import: the CLI stays quick);
:func:`read_dicom_series` wraps it into a :class:`monai.data.MetaTensor`; :class:`MedganDicomReader`
lets ``monai.transforms.LoadImage(reader=MedganDicomReader())`` use it.

Output: shape ``(X, Y, Z)`` = (columns, rows, slices sorted along the slice normal), affine voxel ->
RAS mm, ``int16`` when the rescaled values are integers that fit, else ``float32``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from medgan.errors import DicomSeriesError
from medgan.io.dicom.discovery import (SeriesInfo, SliceRecord, describe_skipped, scan_series, select_series,
                                       uid_name)
from medgan.io.dicom.geometry import (StackGeometry, analyze_stack, lps_to_ras, resample_to_orthogonal,
                                      sheared_affine_lps)

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

TILT_MODES = ("resample", "shear")
# Uncompressed transfer syntaxes (explicit VR LE, implicit VR LE, explicit VR BE) and their byte order.
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2.1": "<", "1.2.840.10008.1.2": "<", "1.2.840.10008.1.2.2": ">"}
_INT16 = np.iinfo(np.int16)


@dataclass
class DicomVolume:
    """A volume read from DICOM, before it becomes a MetaTensor.

    Attributes:
        array: ``(X, Y, Z)`` HU (CT) or scanner units, int16 or float32.
        affine: ``(4, 4)`` voxel -> RAS mm, float64.
        meta: metadata (see :func:`read_dicom_volume`).
    """

    array: np.ndarray
    affine: np.ndarray
    meta: Dict[str, Any]


def _raw_dtype(records: Sequence[SliceRecord]) -> np.dtype:
    bits = max(r.bits_allocated for r in records)
    signed = {r.pixel_representation for r in records}
    if bits <= 8:
        return np.dtype(np.int16) if len(signed) > 1 else np.dtype(np.int8 if 1 in signed else np.uint8)
    if bits <= 16:
        return np.dtype(np.int32) if len(signed) > 1 else np.dtype(np.int16 if 1 in signed else np.uint16)
    return np.dtype(np.float64) if len(signed) > 1 else np.dtype(np.int32 if 1 in signed else np.uint32)


def _mask_stored_bits(frames: np.ndarray, record: SliceRecord) -> np.ndarray:
    """Clear bits above BitsStored (unsigned) or sign-extend from BitsStored (signed)."""
    unused = record.bits_allocated - record.bits_stored
    if unused <= 0 or frames.dtype.kind not in "iu":
        return frames
    if record.pixel_representation == 0:
        return frames & frames.dtype.type((1 << record.bits_stored) - 1)
    signed = frames.astype(frames.dtype.newbyteorder("=").str.replace("u", "i"), copy=False)
    return (signed << unused) >> unused


def decode_frames(path: str, record: SliceRecord) -> np.ndarray:
    """Decode every frame of one DICOM file into ``(frames, rows, columns)`` stored values.

    Uncompressed little/big endian data is read straight from the file at the offset found while
    scanning headers; compressed transfer syntaxes (JPEG lossless, JPEG-LS, JPEG 2000, RLE) go
    through pydicom's pixel handlers (pylibjpeg/openjpeg/GDCM).

    Raises:
        DicomSeriesError: the file is truncated, lacks pixel data, or its compression cannot be decoded.
    """
    endian = _NATIVE_SYNTAXES.get(record.transfer_syntax)
    native = endian is not None and record.bits_allocated in (8, 16, 32) and record.samples_per_pixel == 1
    if native and record.pixel_offset is not None:
        dtype = np.dtype(f"{endian}{'i' if record.pixel_representation else 'u'}{record.bits_allocated // 8}")
        return _mask_stored_bits(_read_native(path, record, dtype, record.n_frames), record)
    import pydicom  # compressed data: pydicom's pixel handlers

    try:
        ds = pydicom.dcmread(path)
    except (OSError, EOFError, ValueError) as err:
        raise DicomSeriesError(f"cannot read the file ({type(err).__name__}: {err})", path,
                               "the file is damaged or truncated; copy it again from the archive") from None
    if "PixelData" not in ds:
        raise DicomSeriesError("the image has no pixel data", path,
                               "the file is incomplete; copy it again from the archive")
    shape = (int(ds.get("NumberOfFrames", 1) or 1), record.rows, record.columns)
    try:
        frames = np.asarray(ds.pixel_array).reshape(shape)
    except (RuntimeError, ValueError, NotImplementedError, AttributeError, TypeError) as err:
        raise DicomSeriesError(
            f"cannot decode pixel data with transfer syntax {uid_name(record.transfer_syntax)} ({err})", path,
            "install the DICOM extras (pip install medgan[dicom]: pylibjpeg, openjpeg, GDCM), or the file is damaged"
        ) from None
    return _mask_stored_bits(frames, record)


def _read_native(path: str, record: SliceRecord, dtype: np.dtype, n_frames: int) -> np.ndarray:
    """Uncompressed frames read from the file at ``record.pixel_offset`` (no second header parse)."""
    count = n_frames * record.rows * record.columns
    try:
        with open(path, "rb") as handle:
            handle.seek(record.pixel_offset or 0)
            data = handle.read(count * dtype.itemsize)
    except OSError as err:
        raise DicomSeriesError(f"cannot read the file ({err.strerror})", path,
                               "check that the file is readable") from None
    if len(data) < count * dtype.itemsize:
        raise DicomSeriesError(
            f"pixel data holds {len(data)} bytes, the header needs {count * dtype.itemsize}", path,
            "the file is truncated; copy it again from the archive")
    frames = np.frombuffer(data, dtype=dtype).reshape(n_frames, record.rows, record.columns)
    return frames.astype(dtype.newbyteorder("=")) if dtype.byteorder == ">" else frames


def _declared_int16(records: Sequence[SliceRecord]) -> bool:
    """Whether every possible stored value, rescaled, is an integer that fits int16."""
    for record in records:
        slope, intercept = record.rescale_slope, record.rescale_intercept
        if slope != round(slope) or intercept != round(intercept):
            return False
        bits = record.bits_stored
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if record.pixel_representation else (0, (1 << bits) - 1)
        ends = (low * slope + intercept, high * slope + intercept)
        if min(ends) < _INT16.min or max(ends) > _INT16.max:
            return False
    return True


def _stored_fits_int16(record: SliceRecord) -> bool:
    return record.bits_stored <= (16 if record.pixel_representation else 15)


def _decode_stack(records: Sequence[SliceRecord], rescale_to_int16: bool) -> np.ndarray:
    """``(N, rows, columns)`` values of ``records`` in the given order, each file decoded once.

    With ``rescale_to_int16`` the slices are rescaled to int16 as they are decoded (one pass);
    otherwise the stored values are returned for :func:`_rescale`.
    """
    first = records[0]
    dtype = np.dtype(np.int16) if rescale_to_int16 else _raw_dtype(records)
    stack = np.empty((len(records), first.rows, first.columns), dtype=dtype)
    by_file: "OrderedDict[str, List[int]]" = OrderedDict()
    for index, record in enumerate(records):
        by_file.setdefault(record.path, []).append(index)
    for path, indices in by_file.items():
        if rescale_to_int16 and len(indices) == 1 and _read_hu_into(path, records[indices[0]], stack[indices[0]]):
            continue
        frames = decode_frames(path, records[indices[0]])
        for index in indices:
            record = records[index]
            frame = record.frame or 0
            if frame >= frames.shape[0]:
                raise DicomSeriesError(f"frame {frame + 1} is missing from the pixel data", path,
                                       "the file is truncated; copy it again from the archive")
            if rescale_to_int16 and record.rescale_slope == 1 and _stored_fits_int16(record):
                np.add(frames[frame], np.int16(record.rescale_intercept), out=stack[index], dtype=np.int16,
                       casting="unsafe")  # one pass; no overflow: the declared range was checked
            elif rescale_to_int16:
                stack[index] = (frames[frame].astype(np.int32) * int(record.rescale_slope)
                                + int(record.rescale_intercept))
            else:
                stack[index] = frames[frame]
    return stack


def _read_hu_into(path: str, record: SliceRecord, out: np.ndarray) -> bool:
    """Read one uncompressed little-endian 16-bit slice straight into ``out`` (int16) and rescale it there.

    Covers the common CT file (slope 1, integer intercept, stored values that fit int16): one read
    into the output buffer, then masking/sign extension and the intercept in place. Returns False,
    touching nothing, for anything else (the general path handles it).
    """
    if (sys.byteorder != "little" or record.pixel_offset is None or record.frame is not None
            or record.bits_allocated != 16
            or _NATIVE_SYNTAXES.get(record.transfer_syntax) != "<" or record.samples_per_pixel != 1
            or record.rescale_slope != 1 or not _stored_fits_int16(record) or not out.flags.c_contiguous):
        return False
    try:
        with open(path, "rb") as handle:
            handle.seek(record.pixel_offset)
            got = handle.readinto(memoryview(out).cast("B"))
    except OSError as err:
        raise DicomSeriesError(f"cannot read the file ({err.strerror})", path,
                               "check that the file is readable") from None
    if got < out.nbytes:
        raise DicomSeriesError(f"pixel data holds {got} bytes, the header needs {out.nbytes}", path,
                               "the file is truncated; copy it again from the archive")
    unused = 16 - record.bits_stored
    if unused and record.pixel_representation:
        np.left_shift(out, unused, out=out)  # sign-extend from BitsStored
        np.right_shift(out, unused, out=out)
    elif unused:
        np.bitwise_and(out, np.int16((1 << record.bits_stored) - 1), out=out)  # drop bits above BitsStored
    if record.rescale_intercept:
        np.add(out, np.int16(record.rescale_intercept), out=out)  # no overflow: the declared range was checked
    return True


def _rescale(stack: np.ndarray, slopes: np.ndarray, intercepts: np.ndarray, chunk: int = 32) -> np.ndarray:
    """Apply per-slice RescaleSlope/Intercept; int16 when every result is an integer that fits."""
    integer = bool(np.all(slopes == np.round(slopes)) and np.all(intercepts == np.round(intercepts)))
    if integer:
        lows = stack.min(axis=(1, 2)).astype(np.float64)
        highs = stack.max(axis=(1, 2)).astype(np.float64)
        ends = np.stack([lows * slopes + intercepts, highs * slopes + intercepts])
        if ends.min() >= _INT16.min and ends.max() <= _INT16.max:
            if stack.dtype == np.int16 and np.all(slopes == 1) and np.all(intercepts == 0):
                return stack
            out = np.empty(stack.shape, dtype=np.int16)
            for start in range(0, stack.shape[0], chunk):
                part = slice(start, start + chunk)
                out[part] = (stack[part].astype(np.int32) * slopes[part, None, None].astype(np.int32)
                             + intercepts[part, None, None].astype(np.int32))
            return out
    out = np.empty(stack.shape, dtype=np.float32)
    for start in range(0, stack.shape[0], chunk):
        part = slice(start, start + chunk)
        out[part] = stack[part] * slopes[part, None, None] + intercepts[part, None, None]
    return out


def _check_options(tilt: str, slice_spacing_mm: Optional[float]) -> None:
    if tilt not in TILT_MODES:
        raise ValueError(f"tilt must be one of {TILT_MODES}, got {tilt!r}")
    if slice_spacing_mm is not None and not slice_spacing_mm > 0:
        raise ValueError(f"slice_spacing_mm must be positive, got {slice_spacing_mm}")


def _plan(info: SeriesInfo, geometry: StackGeometry, tilt: str, resample_uneven: bool,
          slice_spacing_mm: Optional[float]) -> Tuple[bool, str, str]:
    """Decide ``(resample, tilt_handling, spacing_handling)``, refusing uneven spacing unless allowed."""
    problem = geometry.spacing_problem()
    if problem and not resample_uneven:
        raise DicomSeriesError(
            f"series {info.key} (#{info.series_number}): {problem}. Stacking it as a regular grid would "
            "put slices in the wrong place", info.folder,
            "resample onto even spacing (resample_uneven=True, CLI --resample-uneven; the spacing used is "
            "recorded in the metadata), or find the missing files")
    if problem and geometry.sheared and tilt == "shear":
        raise DicomSeriesError(f"series {info.key}: {problem}, and tilted; a sheared affine cannot describe it",
                               info.folder, "use tilt='resample' (the default) with resample_uneven")
    resample_tilt = geometry.sheared and tilt == "resample"
    resample = resample_tilt or bool(problem) or slice_spacing_mm is not None
    tilt_handling = "none" if not geometry.sheared else ("resampled_orthogonal" if resample_tilt else "sheared_affine")
    spacing_handling = "resampled_even" if (problem or slice_spacing_mm is not None) else "even"
    return resample, tilt_handling, spacing_handling


def read_dicom_volume(path: PathLike, series: Optional[Union[str, int]] = None, tilt: str = "resample",
                      resample_uneven: bool = False, slice_spacing_mm: Optional[float] = None,
                      scanned: Optional[Sequence[SeriesInfo]] = None) -> DicomVolume:
    """Read one DICOM series under ``path`` into a volume (NumPy; no torch).

    Args:
        path: a folder (searched recursively, DICOMDIR folders included) or one DICOM file.
        series: SeriesInstanceUID, series key or SeriesNumber; required when the folder holds more
            than one image volume.
        tilt: gantry tilt handling: ``"resample"`` onto an orthogonal grid with axes (row, column,
            slice normal) covering every slice (like dcm2niix's ``_Tilt_`` file; linear interpolation),
            or ``"shear"``: keep the voxels exactly and put the shear in the affine.
        resample_uneven: resample an unevenly spaced stack (gaps, mixed steps) onto even spacing
            along the normal (linear); otherwise such a series is refused.
        slice_spacing_mm: output spacing along the normal when resampling; default the median
            step between input slices.
        scanned: the result of :func:`scan_series` for ``path`` if already at hand.

    Returns:
        A :class:`DicomVolume`; ``meta`` holds ``affine``, ``spatial_shape``, ``space`` ("RAS"),
        SeriesInstanceUID, StudyInstanceUID, FrameOfReferenceUID, Modality, SeriesNumber,
        SeriesDescription, ConvolutionKernel, SliceThickness, ``spacing_mm`` ``(dx, dy, dz)``,
        ``tilt_deg``, ``tilt_handling`` ("none", "resampled_orthogonal", "sheared_affine"),
        ``spacing_handling`` ("even", "resampled_even") and a ``medgan`` provenance dict.

    Raises:
        DicomSeriesError: no usable series, several and none selected, inconsistent or damaged slices,
            duplicate positions, missing slices or uneven spacing without ``resample_uneven``.
    """
    _check_options(tilt, slice_spacing_mm)
    if scanned is None:
        scanned, skipped = scan_series(path)
        if not scanned:
            raise DicomSeriesError("no DICOM series found" + describe_skipped(skipped), path,
                                   "point at the folder (or file) that holds the DICOM images; `medgan series "
                                   "--show-skipped` lists what was found")
    info = select_series(scanned, path, series)
    geometry = analyze_stack(info.records, info.folder)
    resample, tilt_handling, spacing_handling = _plan(info, geometry, tilt, resample_uneven, slice_spacing_mm)
    records = [info.records[i] for i in geometry.order]
    if _declared_int16(records):
        values = _decode_stack(records, rescale_to_int16=True)
    else:
        stack = _decode_stack(records, rescale_to_int16=False)
        slopes = np.array([r.rescale_slope for r in records], dtype=np.float64)
        intercepts = np.array([r.rescale_intercept for r in records], dtype=np.float64)
        values = _rescale(stack, slopes, intercepts)
        del stack
    fill_value = float(values.min()) if resample else None
    if resample:
        values, affine_lps = resample_to_orthogonal(values, geometry, fill_value, slice_spacing_mm,
                                                    dtype=np.int16 if values.dtype == np.int16 else np.float32)
    elif geometry.sheared:
        affine_lps = sheared_affine_lps(geometry)
    else:
        affine_lps = sheared_affine_lps(geometry)
        affine_lps[:3, 2] = geometry.normal * np.linalg.norm(affine_lps[:3, 2])  # drop rounding-level drift
    array = values.transpose(2, 1, 0)  # (Z, Y, X) -> (X, Y, Z)
    affine = lps_to_ras(affine_lps)
    spacing = [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]
    meta: Dict[str, Any] = {
        "affine": affine,
        "original_affine": affine.copy(),
        "spatial_shape": np.array(array.shape),
        "space": "RAS",
        "SeriesInstanceUID": info.series_instance_uid,
        "StudyInstanceUID": info.study_instance_uid,
        "FrameOfReferenceUID": info.frame_of_reference_uid,
        "Modality": info.modality,
        "SeriesNumber": info.series_number,
        "SeriesDescription": info.description,
        "ConvolutionKernel": info.kernel,
        "SliceThickness": info.slice_thickness_mm,
        "GantryDetectorTilt": info.gantry_tilt_tag_deg,
        "spacing_mm": spacing,
        "tilt_deg": geometry.tilt_deg,
        "tilt_handling": tilt_handling,
        "spacing_handling": spacing_handling,
        "medgan": {
            "reader": "medgan.io.dicom",
            "source": os.fspath(path),
            "series_key": info.key,
            "n_source_slices": geometry.n_slices,
            "transfer_syntax": info.transfer_syntax,
            "source_slice_steps_mm": [round(float(s), 4) for s in geometry.steps_mm],
            "source_slice_spacing_mm": float(geometry.slice_spacing_mm),
            "tilt_deg": geometry.tilt_deg,
            "tilt_handling": tilt_handling,
            "spacing_handling": spacing_handling,
            "resampled": resample,
            "interpolation": "linear" if resample else "none",
            "fill_value": fill_value if resample else None,
        },
    }
    if geometry.sheared or resample:
        logger.info("series %s: tilt %.2f deg (%s), spacing %s, %d slices -> %s", info.key, geometry.tilt_deg,
                    tilt_handling, spacing_handling, geometry.n_slices, array.shape)
    return DicomVolume(array=array, affine=affine, meta=meta)


def read_dicom_series(path: PathLike, series: Optional[Union[str, int]] = None, tilt: str = "resample",
                      resample_uneven: bool = False, slice_spacing_mm: Optional[float] = None) -> Any:
    """Read one DICOM series into a :class:`monai.data.MetaTensor` of shape ``(X, Y, Z)``, affine RAS.

    Arguments and metadata as :func:`read_dicom_volume`.
    """
    import torch
    from monai.data import MetaTensor

    volume = read_dicom_volume(path, series=series, tilt=tilt, resample_uneven=resample_uneven,
                               slice_spacing_mm=slice_spacing_mm)
    meta = {key: value for key, value in volume.meta.items() if key != "affine"}
    data = torch.from_numpy(np.ascontiguousarray(volume.array.transpose(2, 1, 0)).transpose(2, 1, 0))
    return MetaTensor(data, affine=torch.as_tensor(volume.affine, dtype=torch.float64), meta=meta)


def looks_like_dicom(path: PathLike) -> bool:
    """A folder, or a file with a DICOM preamble (``DICM`` at byte 128) or a ``.dcm`` suffix."""
    path = Path(path)
    if path.is_dir():
        return True
    if path.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False
