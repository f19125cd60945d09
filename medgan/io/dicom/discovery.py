"""Find DICOM files under a folder, read their headers and group them into series.

Only headers are read here: :func:`medgan.io.dicom.header.parse_header` (fast, no pydicom) for the
common files, pydicom for the rest; pixels are decoded later, for the selected series only (and for
files that repeat one SOPInstanceUID, to tell identical copies from conflicting images). A
multi-frame (enhanced) object yields one :class:`SliceRecord` per frame, so the geometry code sees
single-frame and enhanced series alike.

Problems are attached to the series they concern, so ``medgan series`` lists them and converting
that series refuses with the file named: files that are truncated or lack pixel data, files that
cannot be read (attached to every series with files in the same folder, since their series is
unknown), and files a DICOMDIR/DIRFILE lists but that are missing.

Patient attributes (name, ID, birth date) are never read into these records, so they cannot end up
in a log line or an error message.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from medgan.errors import DicomSeriesError
from medgan.io.dicom.header import Header, HeaderFallback, NotDicom, iter_records, parse_header

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# SOP classes that hold cross-sectional images we can stack into a volume.
VOLUME_SOP_CLASSES: Dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.128": "PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.20": "NM Image Storage",
}
# Names of UIDs met in CT/MR archives (pydicom's names), so listing a folder needs no pydicom import.
UID_NAMES: Dict[str, str] = {
    **VOLUME_SOP_CLASSES,
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline (Process 1)",
    "1.2.840.10008.1.2.4.51": "JPEG Extended (Process 2 and 4)",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless, Non-Hierarchical (Process 14)",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless, Non-Hierarchical, First-Order Prediction "
                              "(Process 14 [Selection Value 1])",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless Image Compression",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Lossy (Near-Lossless) Image Compression",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Image Compression (Lossless Only)",
    "1.2.840.10008.1.2.4.91": "JPEG 2000 Image Compression",
    "1.2.840.10008.1.2.4.201": "High-Throughput JPEG 2000 Image Compression (Lossless Only)",
    "1.2.840.10008.1.2.4.202": "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)",
    "1.2.840.10008.1.2.4.203": "High-Throughput JPEG 2000 Image Compression",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.3.10": "Media Storage Directory Storage",
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.2": "MR Spectroscopy Storage",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.11.1": "Grayscale Softcopy Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.66": "Raw Data Storage",
    "1.2.840.10008.5.1.4.1.1.66.1": "Spatial Registration Storage",
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose SR Storage",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF Storage",
    "1.2.840.10008.5.1.4.1.1.481.1": "RT Image Storage",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose Storage",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set Storage",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT Plan Storage",
}
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
# Tolerance on direction cosines when checking that slices share an orientation.
ORIENTATION_TOLERANCE = 1e-4
# Relative tolerance on pixel spacing when checking that slices share it.
PIXEL_SPACING_RTOL = 1e-4


@dataclass(frozen=True)
class SliceRecord:
    """Header facts of one 2D image (a single-frame file, or one frame of a multi-frame file).

    Positions and directions are in DICOM patient coordinates (LPS, mm).
    """

    path: str
    frame: Optional[int]  # None for single-frame files, 0-based frame index otherwise
    sop_instance_uid: str
    instance_number: Optional[int]
    position: Tuple[float, float, float]  # ImagePositionPatient
    orientation: Tuple[float, float, float, float, float, float]  # ImageOrientationPatient
    pixel_spacing: Tuple[float, float]  # (between rows, between columns), mm
    rows: int
    columns: int
    rescale_slope: float
    rescale_intercept: float
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    samples_per_pixel: int
    transfer_syntax: str
    pixel_offset: Optional[int] = None  # byte offset of uncompressed PixelData in the file, when known
    n_frames: int = 1  # frames in the file


@dataclass
class SeriesInfo:
    """One series as found on disk, with what :func:`scan_series` could tell from headers alone.

    Attributes:
        key: selects this series; the SeriesInstanceUID, or ``UID#SeriesNumber`` when several series
            numbers share one UID (``no-uid:<folder>`` stands in for a blank UID).
        usable: whether it can become a 3D volume; ``reason`` says why not, or what reading it needs.
        records: the slices, in file-discovery order (unsorted).
    """

    key: str
    series_instance_uid: str
    series_number: Optional[int]
    modality: str
    description: str
    kernel: str
    sop_class: str
    transfer_syntax: str
    study_instance_uid: str
    frame_of_reference_uid: str
    image_type: Tuple[str, ...]
    slice_thickness_mm: Optional[float]
    gantry_tilt_tag_deg: Optional[float]
    folder: str
    n_files: int
    records: List[SliceRecord] = field(default_factory=list, repr=False)
    usable: bool = False
    reason: str = ""
    fix: str = ""  # what the user can do when the series is not usable
    # Filled by geometry analysis when the header geometry can be judged.
    pixel_spacing_mm: Optional[Tuple[float, float]] = None
    slice_spacing_mm: Optional[float] = None
    tilt_deg: Optional[float] = None

    @property
    def n_slices(self) -> int:
        """Slices (frames) of an image series; files for a series that is not one."""
        return len(self.records) or self.n_files

    def summary(self) -> Dict[str, object]:
        """A JSON-friendly description (no patient attributes)."""
        return {
            "key": self.key,
            "series_instance_uid": self.series_instance_uid,
            "series_number": self.series_number,
            "modality": self.modality,
            "description": self.description,
            "kernel": self.kernel,
            "sop_class": self.sop_class,
            "image_type": list(self.image_type),
            "n_slices": self.n_slices,
            "n_files": self.n_files,
            "slice_thickness_mm": self.slice_thickness_mm,
            "pixel_spacing_mm": None if self.pixel_spacing_mm is None else list(self.pixel_spacing_mm),
            "slice_spacing_mm": self.slice_spacing_mm,
            "tilt_deg": self.tilt_deg,
            "gantry_tilt_tag_deg": self.gantry_tilt_tag_deg,
            "transfer_syntax": self.transfer_syntax,
            "usable": self.usable,
            "reason": self.reason,
            "folder": self.folder,
        }


@dataclass
class SkippedFile:
    """A file under the scanned folder that is not part of any image series, and why."""

    path: str
    reason: str
    damaged: bool = False  # a DICOM file (or an unreadable one) that may belong to a series


def iter_files(root: PathLike, skipped: Optional[List[SkippedFile]] = None) -> Iterator[Path]:
    """Every regular file under ``root`` (or ``root`` itself), sorted, each once.

    Symbolic links are followed, but a link back into a folder already walked (a loop) is not, and a
    file reached twice through links is yielded once. Loops and folders that cannot be listed are
    appended to ``skipped`` when given.
    """
    root = Path(root)
    if root.is_file():
        yield root
        return
    seen_dirs, seen_files = set(), set()

    def _unlistable(err: OSError) -> None:
        if skipped is not None:
            skipped.append(SkippedFile(str(err.filename), f"folder cannot be listed ({err.strerror})", damaged=True))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=_unlistable):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop (or a second link to one folder): do not descend twice
            dirnames[:] = []
            if skipped is not None:
                skipped.append(SkippedFile(dirpath, f"symbolic link to {real}, already walked: not followed again"))
            continue
        seen_dirs.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            try:
                status = os.stat(path)
            except OSError:
                if skipped is not None and os.path.islink(path):
                    skipped.append(SkippedFile(path, "broken or looping symbolic link"))
                continue
            identity = (status.st_dev, status.st_ino)
            if not stat.S_ISREG(status.st_mode) or identity in seen_files:
                continue
            seen_files.add(identity)
            yield Path(path)


# Values larger than this are not read with the header (pixel data, big private blobs).
_DEFER_BYTES = 4096


def read_header(path: PathLike) -> Any:
    """Read a DICOM header up to the pixel data (which is not read).

    Returns a :class:`~medgan.io.dicom.header.Header` from the fast parser, or a pydicom ``Dataset``
    (large values deferred) for files the fast parser leaves to pydicom. Both answer ``get``,
    ``in`` and attribute access by keyword. Files without the 128-byte preamble (old ACR-NEMA
    style) are accepted when they parse to a dataset with a SOP class.

    Raises:
        NotDicom: not a DICOM file.
        OSError: the file cannot be read.
    """
    try:
        return parse_header(path)
    except HeaderFallback as why:
        logger.debug("%s: read with pydicom (%s)", path, why)
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(os.fspath(path), defer_size=_DEFER_BYTES)
    except InvalidDicomError:
        pass
    try:
        ds = pydicom.dcmread(os.fspath(path), defer_size=_DEFER_BYTES, force=True)
    except (ValueError, EOFError, KeyError, TypeError, AttributeError, NotImplementedError) as err:
        raise NotDicom(f"not a DICOM file ({type(err).__name__})") from None
    if not sop_class_uid(ds):
        raise NotDicom("no SOP class")
    return ds


def uid_name(uid: str) -> str:
    """The name of a DICOM UID (SOP class, transfer syntax); pydicom is asked only for rare ones."""
    if not uid:
        return ""
    if uid in UID_NAMES:
        return UID_NAMES[uid]
    from pydicom.uid import UID

    return UID(uid).name


def _float_or_none(value: object) -> Optional[float]:
    try:
        return None if value is None or value == "" else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _int_or_none(value: object) -> Optional[int]:
    try:
        return None if value is None or value == "" else int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _functional_item(ds: Any, frame: int, sequence: str) -> Any:
    """The item of a functional-group ``sequence`` for ``frame``: per-frame first, then shared."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        group = per_frame[frame]
        if sequence in group and len(group[sequence].value):
            return group[sequence].value[0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        group = shared[0]
        if sequence in group and len(group[sequence].value):
            return group[sequence].value[0]
    return None


def _pixel_offset(ds: Any) -> Optional[int]:
    """File offset of the PixelData value when it was deferred and is not encapsulated."""
    if isinstance(ds, Header):
        return ds.pixel_offset if ds.pixel_length is not None else None
    if "PixelData" not in ds:
        return None
    element = ds.get_item("PixelData", keep_deferred=True)
    tell = getattr(element, "value_tell", None)
    if getattr(element, "value", b"") is not None or tell is None or element.length == 0xFFFFFFFF:
        return None
    return int(tell)


def _common_pixel_facts(ds: Any, transfer_syntax: str) -> Dict[str, object]:
    return {
        "pixel_offset": _pixel_offset(ds),
        "n_frames": _int_or_none(ds.get("NumberOfFrames")) or 1,
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "bits_allocated": int(ds.get("BitsAllocated", 16)),
        "bits_stored": int(ds.get("BitsStored", ds.get("BitsAllocated", 16))),
        "pixel_representation": int(ds.get("PixelRepresentation", 0)),
        "samples_per_pixel": int(ds.get("SamplesPerPixel", 1)),
        "transfer_syntax": transfer_syntax,
    }


def slice_records(ds: Any, path: str) -> List[SliceRecord]:
    """The per-frame geometry and rescale facts of one image object.

    Raises:
        DicomSeriesError: the object lacks pixel data or the geometry a volume needs.
    """
    if "PixelData" not in ds:
        raise DicomSeriesError("the image has no pixel data", path,
                               "the file is incomplete: copy it again from the archive, or move it out of the folder")
    transfer_syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    common = _common_pixel_facts(ds, transfer_syntax)
    sop_uid = str(ds.get("SOPInstanceUID", ""))
    instance = _int_or_none(ds.get("InstanceNumber"))
    n_frames = _int_or_none(ds.get("NumberOfFrames")) or 1
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        records = []
        for frame in range(n_frames):
            position_item = _functional_item(ds, frame, "PlanePositionSequence")
            orientation_item = _functional_item(ds, frame, "PlaneOrientationSequence")
            measures = _functional_item(ds, frame, "PixelMeasuresSequence")
            rescale = _functional_item(ds, frame, "PixelValueTransformationSequence")
            if position_item is None or orientation_item is None or measures is None:
                raise DicomSeriesError(
                    f"frame {frame + 1} of this multi-frame object has no plane position, orientation or "
                    "pixel measures in its functional groups", path,
                    "this object cannot be stacked into a volume; export the series as single-frame images")
            records.append(SliceRecord(
                path=path, frame=frame, sop_instance_uid=sop_uid, instance_number=instance,
                position=tuple(float(v) for v in position_item.ImagePositionPatient),  # type: ignore[arg-type]
                orientation=tuple(float(v) for v in orientation_item.ImageOrientationPatient),  # type: ignore[arg-type]
                pixel_spacing=tuple(float(v) for v in measures.PixelSpacing),  # type: ignore[arg-type]
                rescale_slope=float((rescale or ds).get("RescaleSlope", 1.0)),
                rescale_intercept=float((rescale or ds).get("RescaleIntercept", 0.0)),
                **common))  # type: ignore[arg-type]
        return records
    missing = [name for name in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if name not in ds]
    if missing:
        raise DicomSeriesError(f"the image has no {', '.join(missing)}", path,
                               "this image has no patient geometry and cannot be part of a volume")
    if n_frames > 1:
        raise DicomSeriesError(
            f"a legacy multi-frame image ({n_frames} frames) without per-frame functional groups", path,
            "its slice positions are unknown; export the series as single-frame or enhanced images")
    return [SliceRecord(
        path=path, frame=None, sop_instance_uid=sop_uid, instance_number=instance,
        position=tuple(float(v) for v in ds.ImagePositionPatient),  # type: ignore[arg-type]
        orientation=tuple(float(v) for v in ds.ImageOrientationPatient),  # type: ignore[arg-type]
        pixel_spacing=tuple(float(v) for v in ds.PixelSpacing),  # type: ignore[arg-type]
        rescale_slope=float(ds.get("RescaleSlope", 1.0) or 1.0),
        rescale_intercept=float(ds.get("RescaleIntercept", 0.0) or 0.0),
        **common)]  # type: ignore[arg-type]


def sop_class_uid(ds: Any) -> str:
    """SOPClassUID of the dataset, or MediaStorageSOPClassUID of its file meta when absent."""
    value = ds.get("SOPClassUID")
    if not value and hasattr(ds, "file_meta"):
        value = ds.file_meta.get("MediaStorageSOPClassUID")
    return str(value or "")


def _skip_reason(ds: Any) -> Optional[str]:
    """Why an object is not a volume slice, judged from its header alone; None if it may be one."""
    sop_class = sop_class_uid(ds)
    if sop_class not in VOLUME_SOP_CLASSES:
        name = uid_name(sop_class) if sop_class else "unknown SOP class"
        if "Rows" not in ds:
            return f"not an image ({name})"
        return f"{name}: not a cross-sectional image (secondary captures and dose reports are skipped)"
    image_type = [str(v).upper() for v in ds.get("ImageType", [])]
    if "LOCALIZER" in image_type:
        return "scout/localizer image (ImageType LOCALIZER)"
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        return f"colour image (SamplesPerPixel {ds.get('SamplesPerPixel')})"
    return None


def _series_fields(ds: Any) -> Dict[str, object]:
    kernel = ds.get("ConvolutionKernel", "")
    if kernel is not None and not isinstance(kernel, (str, bytes)):  # multi-valued
        kernel = "\\".join(str(k) for k in kernel)
    return {
        "series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
        "series_number": _int_or_none(ds.get("SeriesNumber")),
        "modality": str(ds.get("Modality", "")),
        "description": str(ds.get("SeriesDescription", "")),
        "kernel": str(kernel),
        "sop_class": uid_name(sop_class_uid(ds)),
        "transfer_syntax": (uid_name(str(ds.file_meta.get("TransferSyntaxUID")))
                            if hasattr(ds, "file_meta") and "TransferSyntaxUID" in ds.file_meta else ""),
        "study_instance_uid": str(ds.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
        "image_type": tuple(str(v) for v in ds.get("ImageType", [])),
        "slice_thickness_mm": _float_or_none(ds.get("SliceThickness")),
        "gantry_tilt_tag_deg": _float_or_none(ds.get("GantryDetectorTilt")),
    }


def scan_series(root: PathLike) -> Tuple[List[SeriesInfo], List[SkippedFile]]:
    """Find every series under ``root`` (recursively; DICOMDIR folders included) from headers alone.

    Image series get their geometry judged (slice spacing, tilt, gaps) so ``usable``/``reason``/``fix``
    say whether, and how, they become a volume. Non-image objects, scouts and secondary captures are
    returned as unusable series with the reason. Identical copies of one image (same SOPInstanceUID,
    position and pixels) are dropped with a warning. A series is not usable when one of its files is
    truncated or lacks pixel data, when a file in its folder cannot be read, or when a DICOMDIR lists
    files of it that are missing (these are also logged as warnings).

    Args:
        root: a folder or a single DICOM file.

    Returns:
        ``(series, skipped_files)``: series sorted by (SeriesNumber, UID); files that are not part
        of a series (not DICOM, DICOMDIR indexes, unreadable), with the reason.

    Raises:
        DicomSeriesError: ``root`` does not exist.
    """
    from medgan.io.dicom.geometry import judge_series  # geometry imports this module

    root = Path(root)
    if not root.exists():
        raise DicomSeriesError("no such file or folder", root, "check the path")
    groups: Dict[Tuple[str, Optional[int]], List[Tuple[str, Any]]] = defaultdict(list)
    damaged_members: Dict[Tuple[str, Optional[int]], List[str]] = defaultdict(list)
    skipped: List[SkippedFile] = []
    missing: List[Tuple[str, str, Optional[Dict[str, Any]]]] = []  # (missing file, DICOMDIR, SERIES record)
    for path in iter_files(root, skipped):
        try:
            ds = read_header(path)
        except NotDicom:
            skipped.append(SkippedFile(str(path), "not a DICOM file"))
            continue
        except OSError as err:
            skipped.append(SkippedFile(str(path), f"cannot be read ({err.strerror or type(err).__name__})", True))
            continue
        except (ValueError, EOFError, KeyError, TypeError, AttributeError, NotImplementedError) as err:
            skipped.append(SkippedFile(str(path), f"damaged DICOM header ({type(err).__name__})", True))
            continue
        if sop_class_uid(ds) == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds or \
                getattr(ds, "records", None) is not None:
            skipped.append(SkippedFile(str(path), "DICOMDIR/DIRFILE index (the files it lists are scanned directly)"))
            missing.extend((lost, str(path), series) for lost, series in _missing_references(path, ds))
            continue
        group = (str(ds.get("SeriesInstanceUID", "")), _int_or_none(ds.get("SeriesNumber")))
        if getattr(ds, "truncated", False):
            if group[0]:
                damaged_members[group].append(f"{path}: {ds.problem}")
            else:
                skipped.append(SkippedFile(str(path), ds.problem, True))
            continue
        groups[group].append((str(path), ds))
    numbers_per_uid = Counter(uid for uid, _ in set(groups) | set(damaged_members))
    series_list = []
    for group in list(groups) + [g for g in damaged_members if g not in groups]:
        uid, number = group
        members = groups.get(group, [])
        info = _new_series(uid, number, members, damaged_members.get(group, []), numbers_per_uid[uid] > 1)
        if damaged_members.get(group):
            _refuse(info, f"{len(damaged_members[group])} file(s) of this series are damaged: "
                    + _first(damaged_members[group]), _FIX_DAMAGED)
        elif members:
            reason = _skip_reason(members[0][1])
            try:
                for path, ds in members:
                    other = _skip_reason(ds)
                    if reason is None and other is not None:
                        reason = f"mixed series: {path} is a {other}"
                    if reason is None:
                        info.records.extend(slice_records(ds, path))
            except DicomSeriesError as err:
                _refuse(info, f"{err.problem} ({err.path})", err.fix or "")
            if reason is not None:
                _refuse(info, reason, "select an image series (see `medgan series`)")
        series_list.append(info)
    _attach_unreadable(series_list, [s for s in skipped if s.damaged])
    series_list.extend(_attach_missing(series_list, missing))
    for info in series_list:
        if info.reason:
            continue
        duplicates = _drop_identical_copies(info)
        info.usable, info.reason = judge_series(info)
        if duplicates and info.usable:
            info.reason = "; ".join(part for part in (info.reason, duplicates) if part)
    series_list.sort(key=lambda s: (s.series_number if s.series_number is not None else -1, s.series_instance_uid))
    for item in skipped:
        if item.damaged:
            logger.warning("%s: %s", item.path, item.reason)
    return series_list, skipped


_FIX_DAMAGED = "copy the damaged file(s) again from the archive, or move them out of the folder if they do not belong"
_FIX_UNREADABLE = ("copy the file(s) again from the archive or make them readable (permissions, e.g. chmod a+r), "
                   "or move them out of the folder if they do not belong: their series is unknown, so any series "
                   "in that folder may be incomplete")
_FIX_MISSING = ("copy the missing file(s) from the archive (the DICOMDIR lists them), or remove the DICOMDIR "
                "if the folder was deliberately reduced")


def describe_skipped(skipped: Sequence[SkippedFile], limit: int = 3) -> str:
    """`` (N file(s) or link(s) skipped: path: reason; ...)`` for an error message about a folder."""
    if not skipped:
        return " (the folder holds no files)"
    shown = "; ".join(f"{item.path}: {item.reason}" for item in skipped[:limit])
    return f" ({len(skipped)} file(s) or link(s) skipped: {shown}{'; ...' if len(skipped) > limit else ''})"


def _first(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _new_series(uid: str, number: Optional[int], members: List[Tuple[str, Any]], damaged: List[str],
                several_numbers: bool) -> SeriesInfo:
    paths = [p for p, _ in members] + [entry.split(": ", 1)[0] for entry in damaged]
    folder = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    key = uid or f"no-uid:{folder}"  # anonymised exports may blank the UID
    if several_numbers:
        key = f"{key}#{number}"
    if members:
        return SeriesInfo(key=key, folder=folder, n_files=len(paths), **_series_fields(members[0][1]))  # type: ignore[arg-type]
    return _placeholder(key, uid, number, folder, len(paths), {})


def _placeholder(key: str, uid: str, number: Optional[int], folder: str, n_files: int,
                 record: Dict[str, Any]) -> SeriesInfo:
    """A series known only from damaged files or from a DICOMDIR record."""
    return SeriesInfo(key=key, series_instance_uid=uid, series_number=number, modality=str(record.get("Modality", "")),
                      description=str(record.get("SeriesDescription", "")), kernel="", sop_class="",
                      transfer_syntax="", study_instance_uid="", frame_of_reference_uid="", image_type=(),
                      slice_thickness_mm=None, gantry_tilt_tag_deg=None, folder=folder, n_files=n_files)


def _refuse(info: SeriesInfo, reason: str, fix: str) -> None:
    """Mark ``info`` unusable; the first problem found is the one reported."""
    info.usable = False
    if not info.reason:
        info.reason, info.fix = reason, fix


def _member_dirs(info: SeriesInfo) -> set:
    return {os.path.dirname(r.path) for r in info.records} or {info.folder}


def _attach_unreadable(series: List[SeriesInfo], unreadable: Sequence[SkippedFile]) -> None:
    """Files whose series is unknown make every series with files in their folder unusable."""
    for info in series:
        dirs = _member_dirs(info)
        near = [f"{item.path} ({item.reason})" for item in unreadable if os.path.dirname(item.path) in dirs]
        if near:
            _refuse(info, f"{len(near)} file(s) in its folder cannot be read, and may be slices of it: {_first(near)}",
                    _FIX_UNREADABLE)


def _attach_missing(series: List[SeriesInfo], missing: Sequence[Tuple[str, str, Optional[Dict[str, Any]]]],
                    ) -> List[SeriesInfo]:
    """Attach files a DICOMDIR lists but that are missing to their series; new entries for lost series."""
    by_key: Dict[str, Tuple[SeriesInfo, List[str], str]] = {}
    extra: List[SeriesInfo] = []
    for lost, dicomdir, record in missing:
        uid = str((record or {}).get("SeriesInstanceUID", "") or "")
        targets = [s for s in series if uid and s.series_instance_uid == uid]
        if not uid:
            targets = [s for s in series if os.path.dirname(lost) in _member_dirs(s) and s.records]
        if not targets:
            key = uid or f"missing:{os.path.dirname(lost)}"
            known = next((s for s in extra if s.key == key), None)
            if known is None:
                known = _placeholder(key, uid, _int_or_none((record or {}).get("SeriesNumber")), os.path.dirname(lost),
                                     0, record or {})
                extra.append(known)
            targets = [known]
        for info in targets:
            entry = by_key.setdefault(info.key, (info, [], dicomdir))
            entry[1].append(lost)
    for info, lost_files, dicomdir in by_key.values():
        logger.warning("%s lists %d file(s) of series %s that are missing: %s", dicomdir, len(lost_files), info.key,
                       _first(lost_files))
        info.usable = False
        info.reason = (f"{len(lost_files)} file(s) listed in {dicomdir} are missing: {_first(lost_files)}"
                       + (f"; also {info.reason}" if info.reason else ""))
        info.fix = _FIX_MISSING
    return extra


def _directory_records(ds: Any) -> List[Dict[str, Any]]:
    """DICOMDIR records as dicts with ``_parent`` (fast parser or pydicom dataset)."""
    if isinstance(ds, Header):
        return list(iter_records(ds))
    items = []
    for item in ds.get("DirectoryRecordSequence", []):
        record = {keyword: item.get(keyword) for keyword in
                  ("OffsetOfTheNextDirectoryRecord", "OffsetOfReferencedLowerLevelDirectoryEntity",
                   "DirectoryRecordType", "ReferencedFileID", "SeriesInstanceUID", "SeriesNumber", "Modality",
                   "SeriesDescription") if keyword in item}
        record["_offset"] = item.seq_item_tell
        items.append(record)
    return list(iter_records(Header(path="", values={}, file_meta={}, records=items)))


def _missing_references(path: Path, ds: Any) -> List[Tuple[str, Optional[Dict[str, Any]]]]:
    """``(file, SERIES record)`` for every file ``ds`` (a DICOMDIR/DIRFILE) lists that does not exist.

    ReferencedFileID is relative to the DICOMDIR's folder by the standard; some scanners (Philips
    DIRFILE) write it relative to a folder higher up. The base under which most references exist is
    used, the DICOMDIR's own folder when none does.
    """
    references = []
    for record in _directory_records(ds):
        parts = record.get("ReferencedFileID")
        if not parts:
            continue
        parts = [parts] if isinstance(parts, str) else [str(p) for p in parts]
        series = record
        while series is not None and str(series.get("DirectoryRecordType", "")).upper() != "SERIES":
            series = series.get("_parent")
        references.append((parts, series))
    if not references:
        return []
    bases = [path.parent, *list(path.parent.parents)[:3]]
    found = [[_existing(base, parts) for parts, _ in references] for base in bases]
    best = max(range(len(bases)), key=lambda i: (sum(found[i]), -i))
    return [(str(bases[best].joinpath(*parts)), series)
            for (parts, series), exists in zip(references, found[best]) if not exists]


def _existing(base: Path, parts: Sequence[str]) -> bool:
    """Whether ``base/parts`` exists, matching each part case-insensitively (CD exports change case)."""
    if base.joinpath(*parts).exists():
        return True
    folder = base
    for part in parts:
        try:
            names = {name.upper(): name for name in os.listdir(folder)}
        except OSError:
            return False
        if part.upper() not in names:
            return False
        folder = folder / names[part.upper()]
    return True


def _drop_identical_copies(info: SeriesInfo) -> str:
    """Drop records that repeat one SOPInstanceUID/frame at one position with identical pixels.

    Copies whose pixels differ are kept: the geometry check then refuses the series (two images at
    one position). Returns a note for ``reason`` ("" when nothing was dropped).
    """
    seen: Dict[Tuple[str, Optional[int]], List[SliceRecord]] = defaultdict(list)
    for record in info.records:
        if record.sop_instance_uid:
            seen[(record.sop_instance_uid, record.frame)].append(record)
    repeated = [copies for copies in seen.values() if len(copies) > 1]
    if not repeated:
        return ""
    from medgan.io.dicom.reader import decode_frames  # the reader imports this module

    dropped: List[str] = []
    for copies in repeated:
        kept = copies[0]
        try:
            pixels = decode_frames(kept.path, kept)
        except DicomSeriesError:
            continue
        for copy in copies[1:]:
            same_header = (copy.position, copy.orientation, copy.pixel_spacing, copy.rescale_slope,
                           copy.rescale_intercept) == (kept.position, kept.orientation, kept.pixel_spacing,
                                                       kept.rescale_slope, kept.rescale_intercept)
            try:
                same = same_header and np.array_equal(decode_frames(copy.path, copy)[copy.frame or 0],
                                                      pixels[kept.frame or 0])
            except DicomSeriesError:
                same = False
            if same:
                dropped.append(copy.path)
                logger.warning("%s is an identical copy of %s (SOPInstanceUID %s): ignored", copy.path, kept.path,
                               kept.sop_instance_uid)
    if not dropped:
        return ""
    gone = set(dropped)
    info.records = [r for r in info.records if r.path not in gone]
    return f"{len(dropped)} identical duplicate file(s) ignored: {_first(dropped)}"


def select_series(series: Sequence[SeriesInfo], root: PathLike, selection: Optional[Union[str, int]] = None,
                  ) -> SeriesInfo:
    """Pick one series by UID, key or SeriesNumber; with no selection the folder must hold one volume.

    Raises:
        DicomSeriesError: nothing matches, the match is ambiguous, or no selection was given and the
            folder holds zero or several usable volumes. The message lists the candidates; when the
            only image series is unusable it says why and how to fix that.
    """
    usable = [s for s in series if s.usable]
    if selection is None:
        if len(usable) == 1:
            return usable[0]
        if not series:
            raise DicomSeriesError("no DICOM series found in this folder", root,
                                   "point at the folder that holds the DICOM files (see `medgan series`)")
        images = [s for s in series if s.sop_class in VOLUME_SOP_CLASSES.values() or not s.sop_class]
        if not usable and len(images) == 1:
            only = images[0]
            raise DicomSeriesError(f"series {only.key} is not a usable volume: {only.reason}", root,
                                   only.fix or "select an image series (see `medgan series`)")
        if not usable:
            raise DicomSeriesError("no usable image volume found" + _listing(series), root,
                                   "point at a folder that holds a CT or MR image series")
        raise DicomSeriesError(f"{len(usable)} image volumes found and none was selected" + _listing(usable), root,
                               "choose one with --series UID or --series NUMBER (or convert them all with --all)")
    text = str(selection).strip()
    matches = [s for s in series if text in (s.key, s.series_instance_uid)]
    if not matches and text.lstrip("-").isdigit():
        matches = [s for s in series if s.series_number == int(text)]
        if len(matches) > 1:
            matches = [s for s in matches if s.usable] or matches
    if not matches:
        raise DicomSeriesError(f"no series matches {text!r}" + _listing(series), root,
                               "use a SeriesInstanceUID or SeriesNumber from `medgan series`")
    if len(matches) > 1:
        raise DicomSeriesError(f"{len(matches)} series match {text!r}" + _listing(matches), root,
                               "select by SeriesInstanceUID instead of SeriesNumber")
    chosen = matches[0]
    if not chosen.usable:
        raise DicomSeriesError(f"series {chosen.key} is not a usable volume: {chosen.reason}", root,
                               chosen.fix or "select an image series (see `medgan series`)")
    return chosen


def _listing(series: Sequence[SeriesInfo]) -> str:
    lines = [f"\n  #{s.series_number} {s.key} {s.modality} {s.description!r} {s.n_slices} slices"
             + ("" if s.usable else f" [not usable: {s.reason}]") for s in series]
    return ":" + "".join(lines) if lines else ""


def positions_array(records: Sequence[SliceRecord]) -> np.ndarray:
    """``(N, 3)`` ImagePositionPatient of ``records`` (LPS, mm)."""
    return np.array([r.position for r in records], dtype=np.float64)
