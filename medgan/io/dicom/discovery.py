"""Find DICOM files under a folder, read their headers and group them into series.

Only headers are read here (``stop_before_pixels``); pixels are decoded later, for the selected
series only. A multi-frame (enhanced) object yields one :class:`SliceRecord` per frame, so the
geometry code sees single-frame and enhanced series alike.

Patient attributes (name, ID, birth date) are never read into these records, so they cannot end up
in a log line or an error message.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from medgan.errors import DicomSeriesError

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


def iter_files(root: PathLike) -> Iterator[Path]:
    """Every regular file under ``root`` (or ``root`` itself), sorted, following no symlink loops."""
    root = Path(root)
    if root.is_file():
        yield root
        return
    seen_dirs = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop: do not descend twice
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.is_file():
                yield path


# Values larger than this are not read with the header (pixel data, big private blobs).
_DEFER_BYTES = 4096


def read_header(path: PathLike) -> Dataset:
    """Read a DICOM header; large values (pixel data) are deferred, not read.

    Files without the 128-byte preamble (old ACR-NEMA style) are accepted when they parse to a
    dataset with a SOP class.

    Raises:
        InvalidDicomError: not a DICOM file.
    """
    try:
        return pydicom.dcmread(os.fspath(path), defer_size=_DEFER_BYTES)
    except InvalidDicomError:
        ds = pydicom.dcmread(os.fspath(path), defer_size=_DEFER_BYTES, force=True)
        if not sop_class_uid(ds):
            raise
        return ds


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


def _functional_item(ds: Dataset, frame: int, sequence: str) -> Optional[Dataset]:
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


def _pixel_offset(ds: Dataset) -> Optional[int]:
    """File offset of the PixelData value when it was deferred and is not encapsulated."""
    if "PixelData" not in ds:
        return None
    element = ds.get_item("PixelData", keep_deferred=True)
    tell = getattr(element, "value_tell", None)
    if getattr(element, "value", b"") is not None or tell is None or element.length == 0xFFFFFFFF:
        return None
    return int(tell)


def _common_pixel_facts(ds: Dataset, transfer_syntax: str) -> Dict[str, object]:
    return {
        "pixel_offset": _pixel_offset(ds),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "bits_allocated": int(ds.get("BitsAllocated", 16)),
        "bits_stored": int(ds.get("BitsStored", ds.get("BitsAllocated", 16))),
        "pixel_representation": int(ds.get("PixelRepresentation", 0)),
        "samples_per_pixel": int(ds.get("SamplesPerPixel", 1)),
        "transfer_syntax": transfer_syntax,
    }


def slice_records(ds: Dataset, path: str) -> List[SliceRecord]:
    """The per-frame geometry and rescale facts of one image object.

    Raises:
        DicomSeriesError: the object lacks the geometry a volume needs.
    """
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


def sop_class_uid(ds: Dataset) -> str:
    """SOPClassUID of the dataset, or MediaStorageSOPClassUID of its file meta when absent."""
    value = ds.get("SOPClassUID")
    if not value and hasattr(ds, "file_meta"):
        value = ds.file_meta.get("MediaStorageSOPClassUID")
    return str(value or "")


def _skip_reason(ds: Dataset) -> Optional[str]:
    """Why an object is not a volume slice, judged from its header alone; None if it may be one."""
    sop_class = sop_class_uid(ds)
    if sop_class not in VOLUME_SOP_CLASSES:
        name = UID(sop_class).name if sop_class else "unknown SOP class"
        if "Rows" not in ds:
            return f"not an image ({name})"
        return f"{name}: not a cross-sectional image (secondary captures and dose reports are skipped)"
    image_type = [str(v).upper() for v in ds.get("ImageType", [])]
    if "LOCALIZER" in image_type:
        return "scout/localizer image (ImageType LOCALIZER)"
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        return f"colour image (SamplesPerPixel {ds.get('SamplesPerPixel')})"
    return None


def _series_fields(ds: Dataset) -> Dict[str, object]:
    kernel = ds.get("ConvolutionKernel", "")
    if isinstance(kernel, (list, tuple, pydicom.multival.MultiValue)):
        kernel = "\\".join(str(k) for k in kernel)
    return {
        "series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
        "series_number": _int_or_none(ds.get("SeriesNumber")),
        "modality": str(ds.get("Modality", "")),
        "description": str(ds.get("SeriesDescription", "")),
        "kernel": str(kernel),
        "sop_class": VOLUME_SOP_CLASSES.get(sop_class_uid(ds), UID(sop_class_uid(ds)).name),
        "transfer_syntax": (UID(str(ds.file_meta.TransferSyntaxUID)).name
                            if hasattr(ds, "file_meta") and "TransferSyntaxUID" in ds.file_meta else ""),
        "study_instance_uid": str(ds.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
        "image_type": tuple(str(v) for v in ds.get("ImageType", [])),
        "slice_thickness_mm": _float_or_none(ds.get("SliceThickness")),
        "gantry_tilt_tag_deg": _float_or_none(ds.get("GantryDetectorTilt")),
    }


def scan_series(root: PathLike) -> Tuple[List[SeriesInfo], List[SkippedFile]]:
    """Find every series under ``root`` (recursively; DICOMDIR folders included) from headers alone.

    Image series get their geometry judged (slice spacing, tilt, gaps) so ``usable``/``reason`` say
    whether, and how, they become a volume. Non-image objects, scouts and secondary captures are
    returned as unusable series with the reason.

    Args:
        root: a folder or a single DICOM file.

    Returns:
        ``(series, skipped_files)``: series sorted by (SeriesNumber, UID); files that are not DICOM
        or cannot be parsed, with the reason.

    Raises:
        DicomSeriesError: ``root`` does not exist.
    """
    from medgan.io.dicom.geometry import judge_series  # geometry imports this module

    root = Path(root)
    if not root.exists():
        raise DicomSeriesError("no such file or folder", root, "check the path")
    groups: Dict[Tuple[str, Optional[int]], List[Tuple[str, Dataset]]] = defaultdict(list)
    skipped: List[SkippedFile] = []
    for path in iter_files(root):
        try:
            ds = read_header(path)
        except InvalidDicomError:
            skipped.append(SkippedFile(str(path), "not a DICOM file"))
            continue
        except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as err:
            skipped.append(SkippedFile(str(path), f"unreadable DICOM header ({type(err).__name__})"))
            continue
        if sop_class_uid(ds) == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
            skipped.append(SkippedFile(str(path), "DICOMDIR/DIRFILE index (the files it lists are scanned directly)"))
            continue
        groups[(str(ds.get("SeriesInstanceUID", "")), _int_or_none(ds.get("SeriesNumber")))].append((str(path), ds))
    numbers_per_uid = Counter(uid for uid, _ in groups)
    series_list = []
    for (uid, number), members in groups.items():
        first = members[0][1]
        folder = (os.path.commonpath([p for p, _ in members]) if len(members) > 1
                  else os.path.dirname(members[0][0]))
        key = uid or f"no-uid:{folder}"  # anonymised exports may blank the UID
        if numbers_per_uid[uid] > 1:
            key = f"{key}#{number}"
        info = SeriesInfo(key=key, folder=folder, n_files=len(members), **_series_fields(first))  # type: ignore[arg-type]
        reason = _skip_reason(first)
        if reason is None:
            try:
                for path, ds in members:
                    other = _skip_reason(ds)
                    if other is not None:
                        reason = f"mixed series: {path} is a {other}"
                        break
                    info.records.extend(slice_records(ds, path))
            except DicomSeriesError as err:
                reason = err.problem + f" ({err.path})"
        if reason is None:
            info.usable, info.reason = judge_series(info)
        else:
            info.reason = reason
        series_list.append(info)
    series_list.sort(key=lambda s: (s.series_number if s.series_number is not None else -1, s.series_instance_uid))
    return series_list, skipped


def select_series(series: Sequence[SeriesInfo], root: PathLike, selection: Optional[Union[str, int]] = None,
                  ) -> SeriesInfo:
    """Pick one series by UID, key or SeriesNumber; with no selection the folder must hold one volume.

    Raises:
        DicomSeriesError: nothing matches, the match is ambiguous, or no selection was given and the
            folder holds zero or several usable volumes. The message lists the candidates.
    """
    usable = [s for s in series if s.usable]
    if selection is None:
        if len(usable) == 1:
            return usable[0]
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
                               "select an image series (see `medgan series`)")
    return chosen


def _listing(series: Sequence[SeriesInfo]) -> str:
    lines = [f"\n  #{s.series_number} {s.key} {s.modality} {s.description!r} {s.n_slices} slices"
             + ("" if s.usable else f" [not usable: {s.reason}]") for s in series]
    return ":" + "".join(lines) if lines else ""


def positions_array(records: Sequence[SliceRecord]) -> np.ndarray:
    """``(N, 3)`` ImagePositionPatient of ``records`` (LPS, mm)."""
    return np.array([r.position for r in records], dtype=np.float64)
