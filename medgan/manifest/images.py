"""What a manifest check needs to know about an image, from its header and a sparse intensity sample.

NIfTI headers are read with nibabel, DICOM headers with ``medgan.io.dicom.discovery`` (pydicom,
``stop_before_pixels``). No volume is loaded whole except float NIfTI files, which are scanned for
NaN/Inf. torch is never imported.

Modality detection (documented in ``docs/manifests.md``):

1. DICOM: the ``Modality`` tag of the series.
2. NIfTI with a BIDS/dcm2niix JSON sidecar (same name, ``.json``) holding ``Modality``: that value.
3. NIfTI otherwise, from the values of a strided sample of about :data:`SAMPLE_VOXELS` voxels:
   ``CT`` when at least :data:`CT_AIR_FRACTION` of the sample is at or below
   :data:`CT_AIR_THRESHOLD_HU` (air is about -1000 HU and every CT field of view holds some air or
   lung) and nothing is below :data:`CT_MIN_PLAUSIBLE_HU`; ``MR`` when the minimum is at or above
   :data:`MR_MIN_VALUE` (magnitude MR is non-negative; reconstruction and interpolation leave small
   negative values); ``SEG`` (a label map or mask) when the values are integers with at most
   :data:`LABEL_MAX_LEVELS` distinct levels; otherwise unknown (for example data already
   normalised to [-1, 1]).
   A CT stored without its HU rescale (air at 0, as in Cormack-unit templates) looks like MR: that
   is intended, such a file is not HU and a CT model must not take it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from medgan.manifest.schema import ImageRef

logger = logging.getLogger(__name__)

#: Voxels sampled (by striding) to judge the intensity range of a NIfTI image.
SAMPLE_VOXELS = 2_000_000
#: Values at or below this (HU) count as air for CT detection.
CT_AIR_THRESHOLD_HU = -500.0
#: Fraction of sampled voxels that must be air for a NIfTI image to be detected as CT.
CT_AIR_FRACTION = 0.001
#: Values below this are not HU of a CT (padding values -2048 and -3024 are above it).
CT_MIN_PLAUSIBLE_HU = -4000.0
#: An image whose minimum is at or above this is detected as MR (magnitude images are >= 0).
MR_MIN_VALUE = -100.0
#: An integer image with at most this many distinct values is a label map / mask (modality ``SEG``).
LABEL_MAX_LEVELS = 16
#: Largest uncompressed NIfTI data block a check accepts (bytes); larger headers are refused unread.
MAX_IMAGE_BYTES = 16 * 1024**3


class ImageHeaderError(Exception):
    """An image cannot be used; ``problem`` and ``fix`` go into the validation report."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


@dataclass(frozen=True)
class ImageHeader:
    """Geometry and modality of one image.

    Attributes:
        shape: voxel counts ``(X, Y, Z)``.
        bbox_ras_mm: ``(2, 3)`` world bounding box (min row, max row) in RAS mm, voxel edges included.
        modality: ``CT``, ``MR``, another DICOM modality, or None when it cannot be told.
        evidence: how the modality was found (for the report).
        spacing_mm: voxel size ``(X, Y, Z)`` in mm.
    """

    shape: Tuple[int, int, int]
    bbox_ras_mm: np.ndarray
    modality: Optional[str]
    evidence: str
    spacing_mm: Tuple[float, float, float]


def read_image_header(ref: ImageRef) -> ImageHeader:
    """Header facts of the image a manifest cell names (a NIfTI file or a DICOM series).

    Raises:
        ImageHeaderError: the image is missing, unreadable, not a 3D volume, holds NaN/Inf, or its
            DICOM folder holds zero or several volumes and no selector picks one.
    """
    if not ref.path.exists():
        raise ImageHeaderError(f"{ref.text!r} not found ({ref.path})", "check the path and the data root")
    if ref.is_nifti:
        if ref.series is not None:
            raise ImageHeaderError(f"series selector '::{ref.series}' on a NIfTI file",
                                   "selectors are for DICOM folders; remove it")
        return _nifti_header(ref.path)
    return _dicom_header(ref)


def _nifti_header(path: Path) -> ImageHeader:
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for bad files  # noqa: BLE001
        raise ImageHeaderError(f"unreadable NIfTI header ({type(err).__name__}: {err})",
                               "re-export the image as NIfTI-1 (.nii/.nii.gz)") from None
    shape = tuple(int(n) for n in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ImageHeaderError(f"{len(shape)}D image of shape {shape}; a 3D volume is needed",
                               "split 4D series into 3D volumes (one per time point or echo)")
    if min(shape) < 1:
        raise ImageHeaderError(f"zero-size dimension in shape {shape}", "the file holds no voxels; re-export it")
    dtype = image.get_data_dtype()
    n_bytes = math.prod(shape) * dtype.itemsize
    if n_bytes > MAX_IMAGE_BYTES:
        raise ImageHeaderError(f"header declares {n_bytes / 1024**3:.1f} GiB of voxels", "the header is corrupt; "
                               "re-export the image")
    expected = int(image.header.get("vox_offset", 0)) + n_bytes
    if path.name.lower().endswith(".gz"):  # counted to the end: checks the CRC that sampling never reaches
        from medgan.errors import ImageFileError
        from medgan.io.nifti import gzip_stream_size

        try:
            held = gzip_stream_size(path, expected)
        except ImageFileError as err:
            raise ImageHeaderError(err.problem, err.fix or "copy or export it again") from None
    else:
        held = path.stat().st_size
    if held < expected:
        raise ImageHeaderError(f"file holds {held} bytes but its header declares {expected}",
                               "the file is truncated; copy or export it again")
    strides = _strides(shape, SAMPLE_VOXELS)
    try:
        proxy = image.dataobj
        if np.issubdtype(dtype, np.floating):
            data = np.asanyarray(proxy)
            if not np.all(np.isfinite(data)):
                raise ImageHeaderError(f"{int(np.size(data) - np.isfinite(data).sum())} voxels are NaN or Inf",
                                       "fix the export that produced the image (NaN/Inf break every model)")
            sample = data[tuple(slice(None, None, s) for s in strides)]
        else:
            sample = np.asanyarray(proxy[tuple(slice(None, None, s) for s in strides)])
    except ImageHeaderError:
        raise
    except Exception as err:  # zlib, EOF, OSError from a broken file  # noqa: BLE001
        raise ImageHeaderError(f"cannot read the voxel data ({type(err).__name__}: {err})",
                               "the file is corrupt or truncated; copy or export it again") from None
    affine = np.asarray(image.affine, dtype=np.float64)
    modality, evidence = sidecar_modality(path)
    if modality is None:
        modality, evidence = detect_modality(np.asarray(sample, dtype=np.float64))
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    return ImageHeader(shape=shape, bbox_ras_mm=grid_bbox(affine, shape), modality=modality,  # type: ignore[arg-type]
                       evidence=evidence, spacing_mm=spacing)  # type: ignore[arg-type]


def _strides(shape: Tuple[int, ...], max_voxels: int) -> Tuple[int, ...]:
    step = max(1, math.ceil((math.prod(shape) / max_voxels) ** (1 / len(shape))))
    return tuple(step for _ in shape)


def sidecar_modality(path: Path) -> Tuple[Optional[str], str]:
    from medgan.io.dicom.sidecar import sidecar_path

    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None, ""
    try:
        value = json.loads(sidecar.read_text(encoding="utf-8")).get("Modality")
    except (OSError, ValueError, AttributeError):
        logger.warning("%s: JSON sidecar unreadable; modality judged from intensities", sidecar)
        return None, ""
    return (str(value).upper(), f"JSON sidecar Modality={value}") if value else (None, "")


def detect_modality(values: np.ndarray) -> Tuple[Optional[str], str]:
    """Tell CT from MR by intensity (see the module docstring); returns ``(modality or None, evidence)``.

    Args:
        values: any array of voxel values (a sample is enough).
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None, "no finite values"
    low, high = float(finite.min()), float(finite.max())
    if np.all(finite == np.round(finite)):
        levels = np.unique(finite[:: max(1, finite.size // 200_000)])
        if levels.size <= LABEL_MAX_LEVELS and finite.size >= 10 * LABEL_MAX_LEVELS:
            return "SEG", f"label map ({levels.size} distinct integer values)"

    air = float(np.mean(finite <= CT_AIR_THRESHOLD_HU))
    span = f"values {low:.0f}..{high:.0f}"
    if air >= CT_AIR_FRACTION and low >= CT_MIN_PLAUSIBLE_HU:
        return "CT", f"{span}, {100 * air:.1f}% at or below {CT_AIR_THRESHOLD_HU:.0f} (air in HU)"
    if low >= MR_MIN_VALUE:
        return "MR", f"{span}: no HU air, minimum >= {MR_MIN_VALUE:.0f} (MR-like intensities)"
    return None, f"{span}: neither HU air nor non-negative intensities"


def grid_bbox(affine: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    """``(2, 3)`` RAS bounding box of a voxel grid, from the outer edges of its corner voxels.

    Args:
        affine: ``(4, 4)`` voxel -> RAS mm.
        shape: ``(X, Y, Z)`` voxel counts.
    """
    edges = [(-0.5, n - 0.5) for n in shape[:3]]
    corners = np.array([[i, j, k, 1.0] for i in edges[0] for j in edges[1] for k in edges[2]])
    world = corners @ np.asarray(affine, dtype=np.float64).T
    return np.stack([world[:, :3].min(axis=0), world[:, :3].max(axis=0)])


def _dicom_header(ref: ImageRef) -> ImageHeader:
    from medgan.errors import DicomSeriesError
    from medgan.io.dicom.discovery import scan_series, select_series

    try:
        series, _ = scan_series(ref.path)
        info = select_series(series, ref.path, ref.series)
    except DicomSeriesError as err:
        raise ImageHeaderError(err.problem, "select one series as FOLDER::SeriesInstanceUID or FOLDER::SeriesNumber "
                               "(list them with 'medgan series FOLDER')") from None
    if "resample_uneven" in (info.reason or ""):
        # readable, but the default loader of training and batch runs refuses it: say so now
        raise ImageHeaderError(info.reason.split(": needs resample_uneven")[0] + " (training and medgan run refuse it)",
                               "convert it with 'medgan convert --resample-uneven' and list the NIfTI instead, or "
                               "replace the missing files from the archive")
    corners = []
    for record in info.records:
        row_dir = np.array(record.orientation[:3])
        col_dir = np.array(record.orientation[3:])
        dy, dx = record.pixel_spacing
        origin = np.array(record.position)
        for a in (-0.5, record.columns - 0.5):
            for b in (-0.5, record.rows - 0.5):
                corners.append(origin + a * dx * row_dir + b * dy * col_dir)
    lps = np.array(corners)
    ras = lps * np.array([-1.0, -1.0, 1.0])
    first = info.records[0]
    shape = (first.columns, first.rows, info.n_slices)
    spacing = (first.pixel_spacing[1], first.pixel_spacing[0], info.slice_spacing_mm or float("nan"))
    modality = info.modality.upper() or None
    return ImageHeader(shape=shape, bbox_ras_mm=np.stack([ras.min(axis=0), ras.max(axis=0)]), modality=modality,
                       evidence=f"DICOM Modality={info.modality}", spacing_mm=spacing)


def overlap_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Volume of the intersection of two ``(2, 3)`` boxes over the volume of the smaller one (0 if disjoint)."""
    size = np.clip(np.minimum(a[1], b[1]) - np.maximum(a[0], b[0]), 0.0, None)
    smaller = min(float(np.prod(a[1] - a[0])), float(np.prod(b[1] - b[0])))
    return float(np.prod(size)) / smaller if smaller > 0 else 0.0
