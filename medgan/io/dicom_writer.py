"""A derived CT image series that a PACS or a planning system accepts.

:func:`write_derived_ct_series` turns a volume that medgan produced (``MetaTensor`` ``(X, Y, Z)``,
voxel -> RAS mm affine, HU values) into a classic CT Image Storage series, one file per slice along
the volume's third axis:

- new SeriesInstanceUID and SOPInstanceUIDs (never the reference's), ``DERIVED\\SECONDARY\\AXIAL``,
  a SeriesDescription and DerivationDescription that say the images are synthetic and which model
  made them, Contributing Equipment naming medgan as synthesizing equipment, BurnedInAnnotation NO;
- patient, study and frame-of-reference attributes copied from a reference series (the study's CT,
  or the MR whose grid a synthetic CT lives on), or a fresh study when no reference is given;
- geometry of the *output* grid: ImagePositionPatient per slice, ImageOrientationPatient,
  PixelSpacing, SliceThickness and SpacingBetweenSlices from the affine (RAS -> DICOM LPS);
- signed 16-bit pixels with RescaleSlope 1 and RescaleIntercept 0, so stored values are HU.

Axes are flipped (never resampled) so that rows and columns run along +x/+y of the patient where
possible and slices are stored in increasing order along the slice normal, as scanners write them;
voxels and physical positions are unchanged. The series is written into a temporary folder renamed
when complete (:func:`medgan.utils.atomic.atomic_directory`). Patient names and IDs are never logged.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import pydicom
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medgan.errors import DicomSeriesError, GeometryMismatchError, OutputError
from medgan.utils.atomic import atomic_directory

PathLike = Union[str, "os.PathLike[str]"]

logger = logging.getLogger(__name__)

#: RAS <-> LPS: negate the first two axes.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Patient-level attributes copied from the reference (Patient module and Patient Study module).
PATIENT_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "OtherPatientIDsSequence", "PatientIdentityRemoved", "DeidentificationMethod",
    "PatientAge", "PatientSize", "PatientWeight",
)
#: Study-level attributes copied from the reference (General Study module).
STUDY_KEYWORDS = (
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
    "ReferringPhysicianName", "StudyDescription",
)
#: Frame of reference and patient set-up: the output lives in the reference's patient space.
SETUP_KEYWORDS = (
    "FrameOfReferenceUID", "PositionReferenceIndicator", "PatientPosition", "BodyPartExamined", "Laterality",
)
#: Body parts that are not paired: Laterality is left out for them, written empty (unknown) otherwise.
_UNPAIRED_BODY_PARTS = frozenset({"HEAD", "BRAIN", "SKULL", "NECK", "HEADNECK", "CHEST", "ABDOMEN", "PELVIS",
                                  "ABDOMENPELVIS", "CHESTABDOMEN", "CHESTABDPELVIS", "SPINE", "WHOLEBODY"})
#: Type 2 attributes that must be present (possibly empty) in every CT image.
_TYPE2_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber", "PositionReferenceIndicator",
    "SeriesNumber", "Manufacturer", "KVP", "AcquisitionNumber", "PatientOrientation", "PatientPosition",
)
_MAX_LO = 64  # characters in a LO value (SeriesDescription, ManufacturerModelName)
_MAX_ST = 1024  # characters in a ST value (DerivationDescription)
_MODEL_UNKNOWN = "unknown model"


@dataclass(frozen=True)
class ReferenceSeries:
    """What a derived series takes from its reference series.

    Attributes:
        template: a dataset holding only the patient, study and frame-of-reference attributes to copy.
        source: where the reference came from (a folder), or None for in-memory datasets.
        modality: the reference's Modality (``CT``, ``MR``...).
        series_instance_uids: the reference's SeriesInstanceUIDs (never reused).
        sop_instance_uids: the reference's SOPInstanceUIDs (never reused).
        bounds_lps_mm: ``(2, 3)`` min and max corner of the reference's images in LPS mm, or None.
    """

    template: Dataset
    source: Optional[Path]
    modality: str
    series_instance_uids: Tuple[str, ...]
    sop_instance_uids: Tuple[str, ...]
    bounds_lps_mm: Optional[np.ndarray] = field(default=None, compare=False)


@dataclass(frozen=True)
class WrittenSeries:
    """A series written by :func:`write_derived_ct_series` or :func:`write_ct_series`.

    Attributes:
        directory: the series folder.
        files: the files, in InstanceNumber order.
        study_instance_uid: StudyInstanceUID of every file.
        series_instance_uid: the new SeriesInstanceUID.
        frame_of_reference_uid: FrameOfReferenceUID of every file.
        sop_instance_uids: one per file.
        study_from_reference: True when the study (and patient) came from a reference.
        frame_from_reference: True when the frame of reference came from a reference.
        reference_series_instance_uids: the reference's series UIDs (empty without a reference).
    """

    directory: Path
    files: Tuple[Path, ...]
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: Tuple[str, ...]
    study_from_reference: bool
    frame_from_reference: bool
    reference_series_instance_uids: Tuple[str, ...] = ()


def _is_image(ds: Dataset) -> bool:
    return "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds and "Rows" in ds


def read_reference_series(
    reference: Union[PathLike, Dataset, Sequence[Dataset]],
    series_instance_uid: Optional[str] = None,
) -> ReferenceSeries:
    """Collect what a derived series copies from its reference (headers only, no pixel data).

    Args:
        reference: a folder searched recursively for DICOM image files, or datasets already read.
        series_instance_uid: use only this series when the folder holds several.

    Raises:
        DicomSeriesError: no image series found, the selected series is absent, or the images belong
            to different patients, studies or frames of reference (which one to copy is ambiguous).
    """
    source: Optional[Path] = None
    if isinstance(reference, Dataset):
        datasets: List[Dataset] = [reference]
    elif isinstance(reference, (str, os.PathLike)):
        source = Path(reference)
        datasets = list(_read_headers(source))
    else:
        datasets = list(reference)
    images = [ds for ds in datasets if _is_image(ds)]
    if series_instance_uid is not None:
        images = [ds for ds in images if str(ds.get("SeriesInstanceUID", "")) == series_instance_uid]
    if not images:
        wanted = f" with SeriesInstanceUID {series_instance_uid}" if series_instance_uid else ""
        raise DicomSeriesError(f"no DICOM image{wanted} found to use as the reference", source,
                               "point the reference at the folder of the series the output belongs to")
    keys = {(str(ds.get("PatientID", "")), str(ds.get("StudyInstanceUID", "")),
             str(ds.get("FrameOfReferenceUID", ""))) for ds in images}
    if len(keys) > 1:
        studies = sorted({f"study {k[1] or '(none)'} / frame {k[2] or '(none)'}" for k in keys})
        raise DicomSeriesError(
            "the reference images belong to more than one patient, study or frame of reference: "
            + "; ".join(studies), source,
            "point the reference at a single series folder, or select one series by its SeriesInstanceUID")
    first = images[0]
    template = Dataset()
    for keyword in ("SpecificCharacterSet",) + PATIENT_KEYWORDS + STUDY_KEYWORDS + SETUP_KEYWORDS:
        if keyword in first:
            template[keyword] = first[keyword]
    return ReferenceSeries(
        template=template,
        source=source,
        modality=str(first.get("Modality", "")),
        series_instance_uids=tuple(sorted({str(ds.get("SeriesInstanceUID", "")) for ds in images} - {""})),
        sop_instance_uids=tuple(sorted({str(ds.get("SOPInstanceUID", "")) for ds in images} - {""})),
        bounds_lps_mm=_image_bounds(images),
    )


def _read_headers(folder: Path) -> Iterable[Dataset]:
    if not folder.is_dir():
        raise DicomSeriesError("the reference is not a folder", folder, "pass the folder of a DICOM series")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.upper() == "DICOMDIR":
            continue
        try:
            yield pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as err:
            logger.debug("reference: skipping %s (%s)", path, err)


def _image_bounds(images: Sequence[Dataset]) -> Optional[np.ndarray]:
    corners = []
    for ds in images:
        try:
            origin = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
            row_dir, col_dir = np.split(np.asarray(ds.ImageOrientationPatient, dtype=np.float64), 2)
            row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
            width, height = col_mm * (int(ds.Columns) - 1), row_mm * (int(ds.Rows) - 1)
        except (AttributeError, TypeError, ValueError):
            return None
        for a in (0.0, width):
            for b in (0.0, height):
                corners.append(origin + a * row_dir + b * col_dir)
    points = np.asarray(corners)
    return np.stack([points.min(axis=0), points.max(axis=0)])


def write_derived_ct_series(
    image: Any,
    out_dir: PathLike,
    reference: Union[PathLike, Dataset, Sequence[Dataset], ReferenceSeries, None] = None,
    series_description: Optional[str] = None,
    derivation_description: Optional[str] = None,
    model_name: str = _MODEL_UNKNOWN,
    series_number: int = 9001,
    window_center_hu: float = 40.0,
    window_width_hu: float = 400.0,
    reference_series_instance_uid: Optional[str] = None,
    check_overlap: bool = True,
    overwrite: bool = False,
) -> WrittenSeries:
    """Write a synthetic/derived CT volume as a new CT series of the reference's study.

    Args:
        image: ``MetaTensor`` ``(X, Y, Z)`` in HU with a voxel -> RAS mm affine; values are rounded to
            integers and must fit int16 (refused otherwise, never clipped).
        out_dir: the series folder to create (must not exist or be empty unless ``overwrite``).
        reference: the series the output belongs to (folder, datasets or :class:`ReferenceSeries`): a CT of
            the same study, or the MR whose grid and frame of reference a synthetic CT lives on. None
            starts a fresh study with new Study and FrameOfReference UIDs and empty patient attributes.
        series_description: SeriesDescription; default ``"SYNTHETIC CT <model_name>"``.
        derivation_description: DerivationDescription; default says synthetic, which model, which reference.
        model_name: the model (bundle) that made the volume, written in the descriptions and the
            Contributing Equipment.
        series_number: SeriesNumber of the new series.
        window_center_hu: WindowCenter in HU.
        window_width_hu: WindowWidth in HU.
        reference_series_instance_uid: pick one series when the reference folder holds several.
        check_overlap: refuse an output whose extent does not intersect the reference's images (a sign
            of a wrong affine or the wrong reference).
        overwrite: replace an existing non-empty ``out_dir``.

    Returns:
        :class:`WrittenSeries` with the folder, files and UIDs.

    Raises:
        DicomSeriesError: unusable reference. GeometryMismatchError: output outside the reference's
            extent. OutputError: values that do not fit int16, a bad affine, or a failed write.
    """
    out_dir = Path(out_dir)
    if reference is not None and not isinstance(reference, ReferenceSeries):
        reference = read_reference_series(reference, reference_series_instance_uid)
    volume, affine_lps = _prepare_volume(image, out_dir)
    if reference is not None and check_overlap and reference.bounds_lps_mm is not None:
        _check_overlap(volume.shape, affine_lps, reference, out_dir)

    template = Dataset()
    study_from_reference = frame_from_reference = False
    if reference is not None:
        template.update(reference.template)
        study_from_reference = bool(str(template.get("StudyInstanceUID", "")))
        frame_from_reference = bool(str(template.get("FrameOfReferenceUID", "")))
        where = reference.source or "the reference datasets"
        if not study_from_reference:
            logger.warning("%s has no StudyInstanceUID: the derived series gets a new study", where)
        if not frame_from_reference:
            logger.warning("%s has no FrameOfReferenceUID: the derived series gets a new frame of reference", where)
        if reference.modality and reference.modality != "CT":
            logger.info("reference modality is %s: the output is a CT series in its study and frame",
                        reference.modality)
    model = (model_name or _MODEL_UNKNOWN).strip()
    ref_text = "no reference"
    if reference is not None:
        ref_text = f"reference series {', '.join(reference.series_instance_uids) or '(no UID)'}"
    return _write_series(
        volume, affine_lps, out_dir, template,
        image_type=("DERIVED", "SECONDARY", "AXIAL"),
        series_description=series_description or f"SYNTHETIC CT {model}",
        derivation_description=derivation_description
        or f"Synthetic CT computed by medgan model {model} ({ref_text}). Not acquired; "
           "not for diagnosis without review.",
        model_name=model,
        series_number=series_number,
        window=(window_center_hu, window_width_hu),
        overwrite=overwrite,
        study_from_reference=study_from_reference,
        frame_from_reference=frame_from_reference,
        reference_series=reference.series_instance_uids if reference else (),
        forbidden_uids=set(reference.series_instance_uids + reference.sop_instance_uids) if reference else set(),
    )


def write_ct_series(
    image: Any,
    out_dir: PathLike,
    template: Dataset,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    series_description: str = "",
    series_number: int = 1,
    window_center_hu: float = 40.0,
    window_width_hu: float = 400.0,
    extra: Optional[Dict[str, Any]] = None,
    overwrite: bool = False,
) -> WrittenSeries:
    """Write a HU volume as a CT series with the patient/study attributes of ``template``.

    The building block behind :func:`write_derived_ct_series`, for images medgan itself originates
    (the digital phantom). Missing Study/FrameOfReference UIDs are generated.

    Args:
        image: ``MetaTensor`` ``(X, Y, Z)`` in HU with a voxel -> RAS mm affine.
        out_dir: the series folder to create.
        template: patient, study and equipment attributes copied into every file.
        image_type: ImageType values.
        series_description: SeriesDescription.
        series_number: SeriesNumber.
        window_center_hu: WindowCenter in HU.
        window_width_hu: WindowWidth in HU.
        extra: further attributes (keyword -> value) set in every file.
        overwrite: replace an existing non-empty ``out_dir``.
    """
    out_dir = Path(out_dir)
    volume, affine_lps = _prepare_volume(image, out_dir)
    full = Dataset()
    full.update(template)
    for keyword, value in (extra or {}).items():
        setattr(full, keyword, value)
    return _write_series(volume, affine_lps, out_dir, full, image_type=tuple(image_type),
                         series_description=series_description, derivation_description=None, model_name=None,
                         series_number=series_number, window=(window_center_hu, window_width_hu),
                         overwrite=overwrite, study_from_reference=False, frame_from_reference=False,
                         reference_series=(), forbidden_uids=set())


def _prepare_volume(image: Any, out_dir: Path) -> Tuple[np.ndarray, np.ndarray]:
    """int16 ``(X, Y, Z)`` volume and its voxel -> LPS affine, axes flipped into scanner order."""
    affine = getattr(image, "affine", None)
    if affine is None:
        raise OutputError("the image has no affine (not a MetaTensor)", out_dir,
                          "pass a MetaTensor read by medgan, or build one with its voxel-to-RAS affine")
    affine_ras = np.asarray(torch.as_tensor(affine).detach().cpu(), dtype=np.float64)
    data = np.asarray(torch.as_tensor(image).detach().cpu())
    if data.ndim != 3 or min(data.shape) < 1:
        raise OutputError(f"a 3D volume (X, Y, Z) is needed, got shape {data.shape}", out_dir,
                          "drop the channel dimension or pick one volume")
    if (affine_ras.shape != (4, 4) or not np.all(np.isfinite(affine_ras))
            or abs(np.linalg.det(affine_ras[:3, :3])) < 1e-9):
        raise OutputError("the image affine is not a finite invertible 4x4 matrix", out_dir, "fix the image geometry")
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)):
            raise OutputError("the volume holds NaN or infinite values", out_dir, "replace them before exporting")
        data = np.rint(data)
    low, high = float(data.min()), float(data.max())
    if low < -32768 or high > 32767:
        raise OutputError(f"HU values {low:.0f}..{high:.0f} do not fit 16-bit CT pixels", out_dir,
                          "check the volume is in HU (not scaled intensities) before exporting")
    volume = data.astype(np.int16)
    affine_lps = _RAS_TO_LPS @ affine_ras
    return _scanner_order(volume, affine_lps)


def _scanner_order(volume: np.ndarray, affine_lps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Flip axes (no resampling) so rows/columns point to +LPS and slices ascend along the normal."""
    affine = affine_lps.copy()
    for axis in (0, 1):
        direction = affine[:3, axis]
        if direction[np.argmax(np.abs(direction))] < 0:
            volume, affine = _flip(volume, affine, axis)
    normal = np.cross(affine[:3, 0], affine[:3, 1])
    if float(np.dot(normal, affine[:3, 2])) < 0:
        volume, affine = _flip(volume, affine, 2)
    return volume, affine


def _flip(volume: np.ndarray, affine: np.ndarray, axis: int) -> Tuple[np.ndarray, np.ndarray]:
    flipped = affine.copy()
    flipped[:3, 3] = affine[:3, 3] + affine[:3, axis] * (volume.shape[axis] - 1)
    flipped[:3, axis] = -affine[:3, axis]
    return np.flip(volume, axis=axis), flipped


def _check_overlap(shape: Sequence[int], affine_lps: np.ndarray, reference: ReferenceSeries, out_dir: Path) -> None:
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)])
    points = (affine_lps @ corners.T).T[:, :3]
    low, high = points.min(axis=0), points.max(axis=0)
    ref_low, ref_high = reference.bounds_lps_mm
    margin_mm = 1.0
    if np.any(high < ref_low - margin_mm) or np.any(low > ref_high + margin_mm):
        raise GeometryMismatchError(
            f"the volume (LPS mm {np.round(low, 1).tolist()} to {np.round(high, 1).tolist()}) does not overlap the "
            f"reference series ({np.round(ref_low, 1).tolist()} to {np.round(ref_high, 1).tolist()})", out_dir,
            "check that the reference is the series the volume was computed from and that the volume's affine "
            "is intact; pass check_overlap=False only if the offset is intended")


def _geometry(affine_lps: np.ndarray, n_slices: int, out_dir: Path) -> Dict[str, Any]:
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    row_dir, col_dir = affine_lps[:3, 0] / spacing[0], affine_lps[:3, 1] / spacing[1]
    if abs(float(np.dot(row_dir, col_dir))) > 1e-4:
        raise OutputError("the in-plane axes of the volume are not perpendicular (sheared affine)", out_dir,
                          "resample the volume onto an orthogonal grid before exporting")
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    step_along_normal = float(np.dot(affine_lps[:3, 2], normal))
    if abs(step_along_normal - spacing[2]) > 1e-4 * spacing[2]:
        logger.warning("slices are offset in-plane (tilted/sheared grid): positions are written exactly, "
                       "some readers will resample")
    positions = [affine_lps[:3, :3] @ np.array([0.0, 0.0, float(k)]) + affine_lps[:3, 3] for k in range(n_slices)]
    return {
        "orientation": [*row_dir, *col_dir],
        "pixel_spacing": [float(spacing[1]), float(spacing[0])],  # row spacing (along Y), column spacing (along X)
        "slice_spacing": step_along_normal,
        "positions": positions,
        "normal": normal,
    }


def _ds(value: float) -> str:
    """A DS string (at most 16 characters) keeping as many digits as fit."""
    for digits in range(10, 0, -1):
        text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
        if text == "-0":
            text = "0"
        if len(text) <= 16:
            return text
    return f"{value:.6g}"


def _write_series(
    volume: np.ndarray,
    affine_lps: np.ndarray,
    out_dir: Path,
    template: Dataset,
    image_type: Tuple[str, ...],
    series_description: str,
    derivation_description: Optional[str],
    model_name: Optional[str],
    series_number: int,
    window: Tuple[float, float],
    overwrite: bool,
    study_from_reference: bool,
    frame_from_reference: bool,
    reference_series: Tuple[str, ...],
    forbidden_uids: set,
) -> WrittenSeries:
    from medgan import __version__

    geometry = _geometry(affine_lps, volume.shape[2], out_dir)
    now = datetime.datetime.now()
    series_uid = generate_uid()
    study_uid = str(template.get("StudyInstanceUID", "")) or generate_uid()
    frame_uid = str(template.get("FrameOfReferenceUID", "")) or generate_uid()

    base = Dataset()
    base.SpecificCharacterSet = template.get("SpecificCharacterSet", "ISO_IR 100")
    base.update(template)
    base.SOPClassUID = CTImageStorage
    base.StudyInstanceUID = study_uid
    base.FrameOfReferenceUID = frame_uid
    base.SeriesInstanceUID = series_uid
    base.Modality = "CT"
    base.SeriesNumber = int(series_number)
    base.SeriesDescription = series_description[:_MAX_LO]
    base.SeriesDate = base.ContentDate = base.InstanceCreationDate = now.strftime("%Y%m%d")
    base.SeriesTime = base.ContentTime = base.InstanceCreationTime = now.strftime("%H%M%S")
    base.ImageType = list(image_type)
    if "Manufacturer" not in template:
        base.Manufacturer = "medgan"
    base.SoftwareVersions = f"medgan {__version__}"
    base.BurnedInAnnotation = "NO"
    base.ImageOrientationPatient = [_ds(v) for v in geometry["orientation"]]
    base.PixelSpacing = [_ds(v) for v in geometry["pixel_spacing"]]
    base.SliceThickness = _ds(geometry["slice_spacing"])
    base.SpacingBetweenSlices = _ds(geometry["slice_spacing"])
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.Rows, base.Columns = int(volume.shape[1]), int(volume.shape[0])
    base.BitsAllocated, base.BitsStored, base.HighBit, base.PixelRepresentation = 16, 16, 15, 1
    base.RescaleIntercept, base.RescaleSlope, base.RescaleType = "0", "1", "HU"
    base.WindowCenter, base.WindowWidth = _ds(window[0]), _ds(window[1])
    if derivation_description:
        base.DerivationDescription = derivation_description[:_MAX_ST]
    if model_name:
        base.ContributingEquipmentSequence = [_contributing_equipment(model_name, __version__, now)]
    if not str(template.get("StudyInstanceUID", "")):  # a new study: it happens now
        base.StudyDate = template.get("StudyDate") or base.SeriesDate
        base.StudyTime = template.get("StudyTime") or base.SeriesTime
    if "Laterality" not in base and str(base.get("BodyPartExamined", "")).upper() not in _UNPAIRED_BODY_PARTS:
        base.Laterality = None  # required for paired or unknown body parts; empty means unknown
    for keyword in _TYPE2_KEYWORDS:
        if keyword not in base:
            setattr(base, keyword, None)

    files: List[Path] = []
    sop_uids: List[str] = []
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        for k in range(volume.shape[2]):
            ds = Dataset()
            ds.update(base)
            sop_uid = generate_uid()
            if sop_uid in forbidden_uids:  # pragma: no cover - a UUID-derived UID collision
                raise OutputError("generated a UID equal to a reference UID", out_dir, "run the export again")
            ds.SOPInstanceUID = sop_uid
            ds.InstanceNumber = k + 1
            position = geometry["positions"][k]
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.SliceLocation = _ds(float(np.dot(position, geometry["normal"])))
            pixels = np.ascontiguousarray(volume[:, :, k].T)  # (rows=Y, columns=X)
            ds.SmallestImagePixelValue = int(pixels.min())
            ds.LargestImagePixelValue = int(pixels.max())
            ds.PixelData = pixels.astype("<i2").tobytes()
            ds["PixelData"].VR = "OW"
            ds.file_meta = _file_meta(sop_uid)
            name = f"CT{k + 1:05d}.dcm"
            try:
                ds.save_as(tmp / name, enforce_file_format=True)
            except OSError as err:  # pydicom re-raises with a traceback in the text: report the cause only
                cause = err.__cause__ if isinstance(err.__cause__, OSError) else err
                raise OutputError(f"writing {name} failed ({cause.strerror or cause})", out_dir,
                                  "check free disk space and permissions; no partial series was left") from err
            files.append(out_dir / name)
            sop_uids.append(sop_uid)
    logger.info("wrote %d CT images to %s (series %s, study %s)", len(files), out_dir, series_uid, study_uid)
    return WrittenSeries(
        directory=out_dir, files=tuple(files), study_instance_uid=study_uid, series_instance_uid=series_uid,
        frame_of_reference_uid=frame_uid, sop_instance_uids=tuple(sop_uids),
        study_from_reference=study_from_reference, frame_from_reference=frame_from_reference,
        reference_series_instance_uids=tuple(reference_series),
    )


def _contributing_equipment(model_name: str, version: str, now: datetime.datetime) -> Dataset:
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = "109100", "DCM", "Synthesizing Equipment"
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = [purpose]
    item.Manufacturer = "medgan"
    item.ManufacturerModelName = model_name[:_MAX_LO]
    item.SoftwareVersions = f"medgan {version}"
    item.ContributionDateTime = now.strftime("%Y%m%d%H%M%S")
    item.ContributionDescription = f"synthetic CT computed by model {model_name}"[:_MAX_ST]
    return item


def _file_meta(sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationVersionName = "MEDGAN"
    return meta
