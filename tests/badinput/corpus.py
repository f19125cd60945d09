"""A corpus of bad inputs for medgan's commands, and the table of commands that accept each kind.

Every kind is made from real data when the data root holds it (a few slices of
``dicom/ct_abdomen_j2k`` broken in a temporary copy, the small abdominal MR) and otherwise from
generated data (the digital head phantom as a CT series, a generated MR), so the corpus needs
nothing but pydicom and nibabel.

A :class:`BadInput` is one broken thing (a file, a folder, a manifest, an output location, or a
fault injected while a command runs) with the names an error may use to point at it and a pattern
for the problem. :data:`COMMANDS` says how each command is given an input of each form; a new
command (e.g. a batch ``run``) is one more :class:`CommandUse` entry, and :func:`invocations` pairs
it with every kind of a form it accepts.

Simulated conditions (the tests run as root, on a file system that is not full):

- *unreadable file*: root reads any file whatever its mode, so opening the file is made to raise
  ``PermissionError`` (``EACCES``) inside the process. Code that reads through C libraries
  (SimpleITK) bypasses this, so commands reading NIfTI that way are not given this kind;
  ``dir_as_file`` (a folder named like an image) is the unreadable case that holds for every reader.
- *output folder not writable*: root ignores permission bits, so the output is placed below a
  regular file (``blocker/out``): creating it fails with ``ENOTDIR`` as a read-only or foreign
  location would, for any writer.
- *disk full*: every file opened for writing below the output folder accepts
  :data:`DISK_FULL_AFTER_BYTES` bytes and then raises ``OSError(ENOSPC)`` in the middle of a write.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import gzip
import io
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple
from unittest import mock

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

#: Real CT series broken in copies (when the data root holds it) and the number of slices copied.
REAL_CT_SERIES = "dicom/ct_abdomen_j2k"
REAL_CT_SLICES = 6
#: Real MR volume used as "an MR given to a CT command" (when present).
REAL_MR_VOLUME = "mr/abdomen_totalsegmentator/example_mr_sm.nii.gz"
#: Generated stand-ins: phantom CT (X, Y, Z) voxels and mm, MR volume (X, Y, Z) voxels.
PHANTOM_SHAPE = (48, 48, 8)
PHANTOM_SPACING_MM = (4.0, 4.0, 4.0)
GENERATED_MR_SHAPE = (40, 36, 8)
#: Bytes a file below a "full disk" output accepts before ``ENOSPC``.
DISK_FULL_AFTER_BYTES = 100

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
RAW_DATA_STORAGE = "1.2.840.10008.5.1.4.1.1.66"

# What a clear message says for each family of problem (case-insensitive regular expressions).
_OUTPUT_PROBLEM = r"not a directory|cannot create|not writable|permission"
_DISK_FULL_PROBLEM = r"no space left|disk space|disk full"
_NO_VOLUME = r"no (usable )?(dicom|image|volume|series)|not (a )?dicom|no .*image"


@dataclass
class Environment:
    """The good inputs that accompany a bad one (a reference series, a target volume).

    Attributes:
        root: corpus root; every input lives below it.
        ct_dicom: a clean CT series folder (real slices or the phantom).
        ct_nifti: the same CT as NIfTI (int16 HU).
        ct_nifti_shifted: the same CT moved by 3 mm (a moving image that registration must align).
        mr_nifti: an MR volume (real small abdominal MR or generated).
        mr_dicom: an MR Image Storage series folder.
        results: a results folder for ``evaluate --results`` holding ``case1.nii.gz``.
        source: ``"real"`` or ``"generated"``: where the CT came from.
    """

    root: Path
    ct_dicom: Path
    ct_nifti: Path
    ct_nifti_shifted: Path
    mr_nifti: Path
    mr_dicom: Path
    results: Path
    source: str


@dataclass
class BadInput:
    """One kind of bad input, made on disk.

    Attributes:
        kind: short identifier.
        form: what it stands for: ``dicom`` (a folder to read as a series), ``nifti`` (an image
            file), ``manifest`` (a CSV), ``mr`` (an MR volume for a CT-only command), ``output``
            (a good input with a bad output location or a write fault).
        path: the bad file or folder given to the command (for ``output``: the good input).
        blame: names an error may use to point at the problem (any one must appear).
        problem: regular expression (case-insensitive) a clear message matches.
        data_root: data root of a manifest.
        output_base: where commands write; ``None`` means a fresh folder per invocation.
        fault: context manager factory injecting a fault while the command runs.
        note: what is wrong, for the tally and the docs.
    """

    kind: str
    form: str
    path: Path
    blame: Sequence[Path]
    problem: str
    note: str
    data_root: Optional[Path] = None
    output_base: Optional[Path] = None
    fault: Optional[Callable[[], ContextManager]] = None


# ---------------------------------------------------------------------------------------------
# Fault injection (in-process)


_REAL_OPEN = builtins.open


def _under(name: object, folder: Path) -> bool:
    if isinstance(name, int):
        return False
    try:
        return Path(os.path.abspath(os.fspath(name))).is_relative_to(folder)
    except TypeError:
        return False


class _FullDiskFile:
    """A writable file that takes ``budget`` bytes, then fails like a full disk."""

    def __init__(self, handle: io.IOBase, budget: int, name: str) -> None:
        self._handle, self._budget, self._name = handle, budget, name

    def write(self, data):  # bytes or str, as the wrapped file takes
        if len(data) > self._budget:
            if self._budget:
                self._handle.write(data[: self._budget])
            self._budget = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._name)
        self._budget -= len(data)
        return self._handle.write(data)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self._handle, name)

    def __iter__(self):
        return iter(self._handle)

    def __enter__(self) -> "_FullDiskFile":
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()


@contextlib.contextmanager
def disk_full_below(folder: Path, after_bytes: int = DISK_FULL_AFTER_BYTES) -> Iterator[None]:
    """Files opened for writing below ``folder`` raise ``OSError(ENOSPC)`` after ``after_bytes`` bytes."""
    folder = Path(os.path.abspath(folder))

    def fake_open(file, mode="r", *args, **kwargs):  # the signature of open()
        handle = _REAL_OPEN(file, mode, *args, **kwargs)
        if any(flag in mode for flag in "wax+") and _under(file, folder):
            return _FullDiskFile(handle, after_bytes, os.fspath(file))
        return handle

    with mock.patch.object(builtins, "open", fake_open), mock.patch.object(io, "open", fake_open):
        yield


@contextlib.contextmanager
def deny_reading(paths: Sequence[Path]) -> Iterator[None]:
    """Opening any of ``paths`` (or a file below one) raises ``PermissionError`` (``EACCES``)."""
    denied = [Path(os.path.abspath(p)) for p in paths]

    def fake_open(file, mode="r", *args, **kwargs):
        if any(_under(file, p) for p in denied):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
        return _REAL_OPEN(file, mode, *args, **kwargs)

    with mock.patch.object(builtins, "open", fake_open), mock.patch.object(io, "open", fake_open):
        yield


# ---------------------------------------------------------------------------------------------
# Good inputs


def corpus_source(data_root: Optional[Path]) -> str:
    """``"real"`` when ``data_root`` holds :data:`REAL_CT_SERIES` (real slices are broken), else ``"generated"``."""
    return "real" if data_root is not None and (data_root / REAL_CT_SERIES).is_dir() else "generated"


def build_environment(root: Path, data_root: Optional[Path]) -> Environment:
    """Write the good inputs under ``root/good``: real data when ``data_root`` holds it."""
    from medgan.io import load_volume
    from medgan.io.nifti import write_nifti

    good = root / "good"
    good.mkdir(parents=True)
    ct_dicom = good / "ct_dicom"
    source = corpus_source(data_root)
    if source == "real":
        ct_dicom.mkdir()
        for path in _sorted_by_position(list((data_root / REAL_CT_SERIES).iterdir()))[:REAL_CT_SLICES]:
            shutil.copy2(path, ct_dicom / path.name)
    else:
        from medgan.datasets.phantom import write_phantom_dicom

        write_phantom_dicom(ct_dicom, PHANTOM_SHAPE, PHANTOM_SPACING_MM, noise_std_hu=2.0, seed=0)
    ct = load_volume(ct_dicom)
    ct_nifti = write_nifti(ct, good / "ct.nii.gz")
    shifted = np.asarray(ct.affine, dtype=np.float64).copy()
    shifted[:3, 3] += (3.0, -2.0, 0.0)
    ct_nifti_shifted = write_nifti(ct, good / "ct_shifted.nii.gz", affine=shifted)

    mr_nifti = good / "mr.nii.gz"
    real_mr = data_root / REAL_MR_VOLUME if data_root is not None else None
    if real_mr is not None and real_mr.is_file():
        shutil.copy2(real_mr, mr_nifti)
    else:
        _save_nifti(_generated_mr(), np.diag([3.0, 3.0, 3.0, 1.0]), mr_nifti)
    mr_dicom = good / "mr_dicom"
    write_slices(mr_dicom, _generated_mr(), (3.0, 3.0, 3.0), sop_class=MR_IMAGE_STORAGE, modality="MR")

    results = good / "results"
    results.mkdir()
    shutil.copy2(ct_nifti, results / "case1.nii.gz")
    return Environment(root, ct_dicom, ct_nifti, ct_nifti_shifted, mr_nifti, mr_dicom, results, source)


def _generated_mr() -> np.ndarray:
    """A smooth MR-like volume ``(X, Y, Z)`` uint16: signal 0 outside, 300-900 inside, no HU scale."""
    shape = GENERATED_MR_SHAPE
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.7) ** 2 < 1
    return np.where(body, 600 + 300 * np.cos(3 * x) * np.sin(2 * y + z), 0).astype(np.uint16)


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def _sorted_by_position(files: Sequence[Path]) -> List[Path]:
    """DICOM files sorted by ImagePositionPatient along the slice normal (axial: z)."""
    def position(path: Path) -> float:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        orientation = np.asarray(ds.ImageOrientationPatient, float)
        return float(np.dot(np.cross(orientation[:3], orientation[3:]), np.asarray(ds.ImagePositionPatient, float)))

    return sorted(files, key=position)


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _dataset(sop_class: str, modality: str, series_uid: str, series_number: int,
             patient: Optional[Dict[str, object]] = None) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.file_meta = _file_meta(sop_class, ds.SOPInstanceUID)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.7001", series_uid
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.7002"
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = modality, series_number, f"bad-input {modality}"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20240101", "120000", "1"
    for keyword, value in (patient or {"PatientName": "BADINPUT^TEST", "PatientID": "BADINPUT"}).items():
        setattr(ds, keyword, value)
    return ds


def write_slices(folder: Path, array: np.ndarray, spacing_mm: Sequence[float], sop_class: str = MR_IMAGE_STORAGE,
                 modality: str = "MR", patient: Optional[Dict[str, object]] = None, series_number: int = 5,
                 rescale: Tuple[float, float] = (1.0, 0.0)) -> List[Path]:
    """Write ``array`` ``(X, Y, Z)`` (uint16 or int16) as an axial single-frame series (LPS, origin 0).

    Args:
        folder: created if missing.
        array: stored values; column index X, row index Y.
        spacing_mm: ``(X, Y, Z)`` voxel size in mm.
        sop_class: SOP Class UID of every slice.
        modality: Modality of the series.
        patient: patient attributes (keyword -> value); a neutral fake patient when None.
        series_number: SeriesNumber.
        rescale: ``(slope, intercept)``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    signed = array.dtype.kind == "i"
    paths = []
    for k in range(array.shape[2]):
        ds = _dataset(sop_class, modality, series_uid, series_number, patient)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, k * float(spacing_mm[2])]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [float(spacing_mm[1]), float(spacing_mm[0])]
        ds.SliceThickness = float(spacing_mm[2])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = array.shape[1], array.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, int(signed)
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.PixelData = np.ascontiguousarray(array[:, :, k].T).astype(np.int16 if signed else np.uint16).tobytes()
        path = folder / f"slice{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# The kinds


def _series_copy(env: Environment, folder: Path) -> List[Path]:
    """Copy the clean CT series into ``folder``; the copies sorted by slice position."""
    folder.mkdir(parents=True)
    for path in env.ct_dicom.iterdir():
        shutil.copy2(path, folder / path.name)
    return _sorted_by_position(list(folder.iterdir()))


def _edit(path: Path, change: Callable[[Dataset], None], save_as: Optional[Path] = None) -> Path:
    ds = pydicom.dcmread(path)
    change(ds)
    target = save_as or path
    ds.save_as(target, enforce_file_format=True)
    return target


def _new_instance(ds: Dataset) -> None:
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _dicom_kind(kind: str, problem: str, note: str, *, blame_file: bool = False):
    """Decorator: a kind whose builder breaks a copy of the clean series and returns the blamed file."""

    def wrap(build: Callable[[Environment, Path, List[Path]], Optional[Path]]):
        def make(env: Environment, folder: Path) -> BadInput:
            files = _series_copy(env, folder)
            culprit = build(env, folder, files)
            blame = [folder] + ([culprit] if culprit is not None else [])
            return BadInput(kind, "dicom", folder, blame, problem, note)

        return make

    return wrap


@_dicom_kind("truncated_dicom", r"truncat|incomplete|shorter|end of (the )?file|unreadable|damaged",
             "one slice file cut to 60% of its bytes")
def _truncated(env: Environment, folder: Path, files: List[Path]) -> Path:
    data = files[2].read_bytes()
    files[2].write_bytes(data[: int(len(data) * 0.6)])
    return files[2]


@_dicom_kind("dicom_without_pixel_data", r"pixel data|no pixel", "one slice lost its Pixel Data element")
def _no_pixels(env: Environment, folder: Path, files: List[Path]) -> Path:
    return _edit(files[2], lambda ds: delattr(ds, "PixelData"))


@_dicom_kind("two_series_mixed", r"several|more than one|\b2 (usable )?(image )?(volumes|series)",
             "a second series (new Series UID) in the folder")
def _two_series(env: Environment, folder: Path, files: List[Path]) -> None:
    series_uid = generate_uid()

    def other_series(ds: Dataset) -> None:
        _new_instance(ds)
        ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, int(ds.get("SeriesNumber", 1) or 1) + 100

    for path in files:
        _edit(path, other_series, save_as=path.with_name("second_" + path.name))


@_dicom_kind("duplicate_slices", r"duplicate|same position|share a position|twice|repeat",
             "a slice repeated under a new SOP Instance UID")
def _duplicate(env: Environment, folder: Path, files: List[Path]) -> Path:
    def shifted_copy(ds: Dataset) -> None:
        _new_instance(ds)
        ds.InstanceNumber = 999

    return _edit(files[2], shifted_copy, save_as=folder / "duplicate_of_slice2")


@_dicom_kind("missing_slice", r"gap|missing|uneven|spacing", "the third slice of the series deleted")
def _gap(env: Environment, folder: Path, files: List[Path]) -> None:
    files[2].unlink()


@_dicom_kind("inconsistent_orientation", r"orientation", "one slice rotated by 10 degrees (ImageOrientationPatient)")
def _orientation(env: Environment, folder: Path, files: List[Path]) -> Path:
    angle = np.radians(10.0)

    def rotate(ds: Dataset) -> None:
        ds.ImageOrientationPatient = [float(np.cos(angle)), float(np.sin(angle)), 0.0,
                                      float(-np.sin(angle)), float(np.cos(angle)), 0.0]

    return _edit(files[3], rotate)


@_dicom_kind("inconsistent_pixel_spacing", r"pixel spacing|spacing|pixel size", "one slice with 1.5x PixelSpacing")
def _spacing(env: Environment, folder: Path, files: List[Path]) -> Path:
    return _edit(files[3], lambda ds: setattr(ds, "PixelSpacing", [float(v) * 1.5 for v in ds.PixelSpacing]))


@_dicom_kind("single_2d_slice", r"single|one slice|1 slice|2d|at least", "only one slice of the series left")
def _single(env: Environment, folder: Path, files: List[Path]) -> None:
    for path in files[1:]:
        path.unlink()


def _empty_folder(env: Environment, folder: Path) -> BadInput:
    folder.mkdir(parents=True)
    return BadInput("empty_folder", "dicom", folder, [folder], _NO_VOLUME + r"|empty", "a folder without any file")


def _non_image_only(env: Environment, folder: Path) -> BadInput:
    folder.mkdir(parents=True)
    series = generate_uid()
    report = _dataset(BASIC_TEXT_SR, "SR", series, 900)
    report.ValueType, report.CompletionFlag, report.VerificationFlag = "CONTAINER", "COMPLETE", "UNVERIFIED"
    report.save_as(folder / "dose_report.dcm", enforce_file_format=True)
    raw = _dataset(RAW_DATA_STORAGE, "CT", generate_uid(), 901)
    raw.save_as(folder / "raw_data.dcm", enforce_file_format=True)
    return BadInput("non_image_sop_classes_only", "dicom", folder, [folder], _NO_VOLUME + r"|non-image|not an image",
                    "only a dose report (Basic Text SR) and a Raw Data object")


def _rgb_secondary_capture(env: Environment, folder: Path) -> BadInput:
    folder.mkdir(parents=True)
    ds = _dataset(SECONDARY_CAPTURE, "OT", generate_uid(), 950)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8).tobytes()
    ds.save_as(folder / "screenshot.dcm", enforce_file_format=True)
    return BadInput("rgb_secondary_capture", "dicom", folder, [folder, folder / "screenshot.dcm"],
                    _NO_VOLUME + r"|secondary capture|rgb|colou?r", "a folder holding only an RGB secondary capture")


def _dicomdir_missing_files(env: Environment, folder: Path) -> BadInput:
    from pydicom.fileset import FileSet

    staging = folder.parent / (folder.name + "_staging")
    write_slices(staging, _generated_mr()[:, :, :3], (3.0, 3.0, 3.0))
    fileset = FileSet()
    for path in sorted(staging.iterdir()):
        fileset.add(pydicom.dcmread(path))
    fileset.write(folder)
    shutil.rmtree(staging)
    for path in folder.rglob("*"):
        if path.is_file() and path.name != "DICOMDIR":
            path.unlink()
    return BadInput("dicomdir_missing_files", "dicom", folder, [folder, folder / "DICOMDIR"],
                    r"missing|not found|does not exist|no such|lists", "a DICOMDIR whose 3 referenced files are gone")


def _symlink_loop(env: Environment, folder: Path) -> BadInput:
    folder.mkdir(parents=True)
    (folder / "loop_a").symlink_to(folder / "loop_b")
    (folder / "loop_b").symlink_to(folder / "loop_a")
    return BadInput("symlink_loop", "dicom", folder / "loop_a", [folder / "loop_a"],
                    r"symbolic link|symlink|link loop|too many levels|no such|not found|does not exist",
                    "the input path is a symbolic link in a loop (loop_a -> loop_b -> loop_a)")


def _unreadable_dicom(env: Environment, folder: Path) -> BadInput:
    files = _series_copy(env, folder)
    return BadInput("unreadable_dicom_files", "dicom", folder, [folder] + files,
                    r"permission|not readable|unreadable|cannot (be )?read|access", "every slice raises EACCES on open",
                    fault=lambda: deny_reading([folder]))


def _nifti_kind(kind: str, problem: str, note: str):
    def wrap(build: Callable[[Environment, Path], Path]):
        def make(env: Environment, folder: Path) -> BadInput:
            folder.mkdir(parents=True)
            path = build(env, folder)
            return BadInput(kind, "nifti", path, [path], problem, note)

        return make

    return wrap


def _ct_values(env: Environment) -> Tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(env.ct_nifti))
    return np.asarray(img.dataobj), img.affine


@_nifti_kind("nifti_nan_inf", r"\bnan\b|infinite|non-finite|not finite",
             "float CT with a NaN voxel and an +Inf voxel (the shifted CT, so registering it has work to do)")
def _nan(env: Environment, folder: Path) -> Path:
    data, _ = _ct_values(env)
    affine = nib.load(str(env.ct_nifti_shifted)).affine
    data = data.astype(np.float32)
    data[1, 2, 1], data[3, 3, 2] = np.nan, np.inf
    return _save_nifti(data, affine, folder / "ct_nan.nii.gz")


@_nifti_kind("nifti_4d", r"4d|4 dimensions|3d|shape|dimension", "a 4D volume (X, Y, Z, 3) given to 3D commands")
def _four_d(env: Environment, folder: Path) -> Path:
    data, affine = _ct_values(env)
    return _save_nifti(np.stack([data] * 3, axis=-1), affine, folder / "ct_4d.nii.gz")


@_nifti_kind("nifti_zero_size_dimension", r"zero|empty|size 0|0 voxel", "header dim = (X, Y, 0)")
def _zero(env: Environment, folder: Path) -> Path:
    return _save_nifti(np.zeros((8, 8, 0), np.int16), np.eye(4), folder / "ct_zero.nii")


@_nifti_kind("nifti_memory_bomb", r"declares|too large|limit|gib|larger|truncated|holds only",
             "a 1.4 kB .nii whose header declares 32000^3 int16 voxels (60 TiB)")
def _bomb(env: Environment, folder: Path) -> Path:
    return write_size_lie(folder / "ct_bomb.nii", (32000, 32000, 32000))


@_nifti_kind("nifti_gzip_bomb", r"declares|too large|limit|gib|larger|truncated|holds only|unreadable|damaged",
             "a .nii.gz of a few kB declaring 5.1 GB of voxel data (more than gzip's 32-bit size field)")
def _gzip_bomb(env: Environment, folder: Path) -> Path:
    return write_size_lie(folder / "ct_bomb.nii.gz", (1600, 1600, 1000))


@_nifti_kind("corrupted_gzip", r"corrupt|gzip|compress|crc|unreadable|invalid|damaged",
             "a .nii.gz with 64 bytes overwritten in the middle of its deflate stream")
def _corrupted_gzip(env: Environment, folder: Path) -> Path:
    path = folder / "ct_corrupt.nii.gz"
    data = bytearray(env.ct_nifti.read_bytes())
    middle = len(data) // 2
    data[middle: middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    return path


@_nifti_kind("truncated_nifti", r"truncat|holds only|shorter|end of|unreadable",
             "an uncompressed .nii cut to half its size")
def _truncated_nifti(env: Environment, folder: Path) -> Path:
    data, affine = _ct_values(env)
    path = _save_nifti(data, affine, folder / "ct_truncated.nii")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


@_nifti_kind("folder_named_like_a_file", r"not a (regular )?file|directory|folder|not found|no such",
             "a folder named ct.nii.gz where a NIfTI file is expected")
def _dir_as_file(env: Environment, folder: Path) -> Path:
    path = folder / "ct.nii.gz"
    path.mkdir()
    return path


@_nifti_kind("nifti_symlink_loop", r"symbolic link|symlink|too many levels|no such|not found|not a (regular )?file",
             "a .nii.gz name that is a symbolic link in a loop")
def _nifti_loop(env: Environment, folder: Path) -> Path:
    (folder / "a.nii.gz").symlink_to(folder / "b.nii.gz")
    (folder / "b.nii.gz").symlink_to(folder / "a.nii.gz")
    return folder / "a.nii.gz"


def _unreadable_nifti(env: Environment, folder: Path) -> BadInput:
    folder.mkdir(parents=True)
    path = folder / "ct_unreadable.nii.gz"
    shutil.copy2(env.ct_nifti, path)
    return BadInput("unreadable_nifti", "nifti_python", path, [path],
                    r"permission|not readable|unreadable|cannot (be )?read|access", "opening the file raises EACCES",
                    fault=lambda: deny_reading([path]))


def write_size_lie(path: Path, shape: Sequence[int]) -> Path:
    """A NIfTI-1 int16 header declaring ``shape`` followed by one kB of data (gzipped for ``.gz``)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape(tuple(shape))
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    payload = header.binaryblock + b"\x00" * 4 + bytes(1024)
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload)
        # A lying ISIZE too: the trailer claims as many bytes as the header declares (mod 2**32).
        declared = 352 + int(np.prod(shape)) * 2
        payload = payload[:-4] + struct.pack("<I", declared % 2**32)
    path.write_bytes(payload)
    return path


def _manifest_kind(kind: str, problem: str, note: str):
    """Decorator: the builder returns ``(manifest, data_root, blame)`` written under ``folder``."""

    def wrap(build: Callable[[Environment, Path], Tuple[Path, Path, List[Path]]]):
        def make(env: Environment, folder: Path) -> BadInput:
            folder.mkdir(parents=True)
            manifest, data_root, blame = build(env, folder)
            return BadInput(kind, "manifest", manifest, [manifest] + blame, problem, note, data_root=data_root)

        return make

    return wrap


def _data_folder(env: Environment, folder: Path) -> Path:
    data = folder / "data"
    data.mkdir()
    shutil.copy2(env.ct_nifti, data / "ct.nii.gz")
    return data


def _write_csv(path: Path, rows: Sequence[Sequence[str]], encoding: str = "utf-8") -> Path:
    path.write_bytes(("\n".join(",".join(row) for row in rows) + "\n").encode(encoding))
    return path


_HEADER = ("case_id", "patient_id", "source", "split")


@_manifest_kind("manifest_path_traversal", r"outside|\.\.|leaves|escape|data root",
                "a source path ../../secret.nii.gz that leaves the data root (the file exists)")
def _traversal(env: Environment, folder: Path) -> Tuple[Path, Path, List[Path]]:
    root = folder / "site" / "data"
    root.mkdir(parents=True)
    shutil.copy2(env.ct_nifti, folder / "secret.nii.gz")
    manifest = _write_csv(root / "manifest.csv", [_HEADER, ("case1", "p1", "../../secret.nii.gz", "test")])
    return manifest, root, []


@_manifest_kind("manifest_absolute_outside_root", r"outside|absolute|data root",
                "an absolute source path to an existing file outside the data root")
def _absolute(env: Environment, folder: Path) -> Tuple[Path, Path, List[Path]]:
    root = _data_folder(env, folder)
    manifest = _write_csv(root / "manifest.csv", [_HEADER, ("case1", "p1", str(env.ct_nifti), "test")])
    return manifest, root, []


@_manifest_kind("manifest_duplicate_case_ids", r"duplicate|twice|repeated|unique", "case id case1 on two rows")
def _duplicate_ids(env: Environment, folder: Path) -> Tuple[Path, Path, List[Path]]:
    root = _data_folder(env, folder)
    rows = [_HEADER, ("case1", "p1", "ct.nii.gz", "test"), ("case1", "p2", "ct.nii.gz", "test")]
    return _write_csv(root / "manifest.csv", rows), root, []


@_manifest_kind("manifest_missing_columns", r"column|missing|required|patient_id|split",
                "no patient_id and no split column")
def _missing_columns(env: Environment, folder: Path) -> Tuple[Path, Path, List[Path]]:
    root = _data_folder(env, folder)
    return _write_csv(root / "manifest.csv", [("case_id", "source"), ("case1", "ct.nii.gz")]), root, []


@_manifest_kind("manifest_wrong_encoding", r"utf-?8|encoding|decode|latin",
                "latin-1 bytes (site 'Hôpital') in a UTF-8 file")
def _latin1(env: Environment, folder: Path) -> Tuple[Path, Path, List[Path]]:
    root = _data_folder(env, folder)
    rows = [_HEADER + ("site",), ("case1", "p1", "ct.nii.gz", "test", "Hôpital Nord")]
    return _write_csv(root / "manifest.csv", rows, encoding="latin-1"), root, []


@_manifest_kind("manifest_missing_image", r"not found|missing|no such|does not exist",
                "a row whose source file does not exist")
def _missing_image(env: Environment, folder: Path) -> Tuple[Path, Path, List[Path]]:
    root = _data_folder(env, folder)
    manifest = _write_csv(root / "manifest.csv", [_HEADER, ("case1", "p1", "nowhere/ct.nii.gz", "test")])
    return manifest, root, [Path("nowhere/ct.nii.gz")]


def _mr_nifti_to_ct(env: Environment, folder: Path) -> BadInput:
    folder.mkdir(parents=True)
    path = folder / "mr.nii.gz"
    shutil.copy2(env.mr_nifti, path)
    return BadInput("mr_nifti_to_ct_command", "mr", path, [path],
                    r"\bMR\b|not a CT|hounsfield|\bHU\b", "a real (or generated) MR volume given to a CT-only command")


def _mr_dicom_to_ct(env: Environment, folder: Path) -> BadInput:
    shutil.copytree(env.mr_dicom, folder)
    return BadInput("mr_dicom_to_ct_command", "mr", folder, [folder],
                    r"\bMR\b|not a CT|hounsfield|\bHU\b|modality",
                    "an MR Image Storage series given to a CT-only command")


def _output_not_writable(env: Environment, folder: Path) -> BadInput:
    folder.mkdir(parents=True)
    blocker = folder / "blocker"
    blocker.write_text("a regular file where the output folder's parent should be\n")
    return BadInput("output_not_writable", "output", env.ct_dicom, [blocker], _OUTPUT_PROBLEM,
                    "output below a regular file (ENOTDIR), as a read-only location fails for root",
                    output_base=blocker / "out")


def _disk_full(env: Environment, folder: Path) -> BadInput:
    folder.mkdir(parents=True)
    out = env.root / "outputs" / "disk_full"
    return BadInput("disk_full_while_writing", "output", env.ct_dicom, [out], _DISK_FULL_PROBLEM,
                    f"ENOSPC after {DISK_FULL_AFTER_BYTES} bytes of every output file", output_base=out,
                    fault=lambda: disk_full_below(out))


#: Every kind, in corpus order: (kind, form, builder(env, folder) -> BadInput). The form is known without
#: building the kind, which test parametrisation needs at collection time.
KINDS: List[Tuple[str, str, Callable[[Environment, Path], BadInput]]] = [
    ("truncated_dicom", "dicom", _truncated),
    ("dicom_without_pixel_data", "dicom", _no_pixels),
    ("non_image_sop_classes_only", "dicom", _non_image_only),
    ("two_series_mixed", "dicom", _two_series),
    ("duplicate_slices", "dicom", _duplicate),
    ("missing_slice", "dicom", _gap),
    ("inconsistent_orientation", "dicom", _orientation),
    ("inconsistent_pixel_spacing", "dicom", _spacing),
    ("rgb_secondary_capture", "dicom", _rgb_secondary_capture),
    ("single_2d_slice", "dicom", _single),
    ("empty_folder", "dicom", _empty_folder),
    ("dicomdir_missing_files", "dicom", _dicomdir_missing_files),
    ("symlink_loop", "dicom", _symlink_loop),
    ("unreadable_dicom_files", "dicom", _unreadable_dicom),
    ("nifti_nan_inf", "nifti", _nan),
    ("nifti_4d", "nifti", _four_d),
    ("nifti_zero_size_dimension", "nifti", _zero),
    ("nifti_memory_bomb", "nifti", _bomb),
    ("nifti_gzip_bomb", "nifti", _gzip_bomb),
    ("corrupted_gzip", "nifti", _corrupted_gzip),
    ("truncated_nifti", "nifti", _truncated_nifti),
    ("folder_named_like_a_file", "nifti", _dir_as_file),
    ("nifti_symlink_loop", "nifti", _nifti_loop),
    ("unreadable_nifti", "nifti_python", _unreadable_nifti),
    ("manifest_path_traversal", "manifest", _traversal),
    ("manifest_absolute_outside_root", "manifest", _absolute),
    ("manifest_duplicate_case_ids", "manifest", _duplicate_ids),
    ("manifest_missing_columns", "manifest", _missing_columns),
    ("manifest_wrong_encoding", "manifest", _latin1),
    ("manifest_missing_image", "manifest", _missing_image),
    ("mr_nifti_to_ct_command", "mr", _mr_nifti_to_ct),
    ("mr_dicom_to_ct_command", "mr", _mr_dicom_to_ct),
    ("output_not_writable", "output", _output_not_writable),
    ("disk_full_while_writing", "output", _disk_full),
]
KIND_FORMS: Dict[str, str] = {kind: form for kind, form, _ in KINDS}


@dataclass
class Corpus:
    """The built corpus: the environment and every bad input by kind."""

    env: Environment
    cases: Dict[str, BadInput] = field(default_factory=dict)


def build_corpus(root: Path, data_root: Optional[Path] = None) -> Corpus:
    """Write the environment and every kind of :data:`KINDS` under ``root``.

    Also writes, for every image kind, a one-row manifest ``root/manifests/<kind>.csv`` (data root
    ``root``) pointing at the bad image, so ``manifest validate`` meets it too.
    """
    env = build_environment(root, data_root)
    corpus = Corpus(env)
    (root / "manifests").mkdir()
    for kind, _, build in KINDS:
        case = build(env, root / "cases" / kind)
        assert case.kind == kind and KIND_FORMS[kind] == case.form, kind
        corpus.cases[kind] = case
        if case.form in ("dicom", "nifti", "nifti_python"):
            _write_csv(root / "manifests" / f"{kind}.csv",
                       [_HEADER, ("case1", "p1", case.path.relative_to(root).as_posix(), "test")])
    return corpus


# ---------------------------------------------------------------------------------------------
# Commands


@dataclass(frozen=True)
class CommandUse:
    """How one command takes an input of some forms.

    Attributes:
        name: test id, e.g. ``simulate-low-dose``.
        forms: the :attr:`BadInput.form` values it accepts.
        argv: ``(case, env, out) -> argv`` for :func:`medgan.cli.main`; ``out`` is a folder the
            command may write into (it does not exist yet).
        writes: whether the command writes files (``output`` kinds apply only then).
        only_kinds: when set, the kinds of its forms it is given (the others are valid input for it).
        not_kinds: kinds of its forms that are valid input for it.
        batch_record: a file (relative to ``out``) a batch command writes to record each case, failed
            ones included; it is not a partial output, and it must list the case as failed.
    """

    name: str
    forms: Tuple[str, ...]
    argv: Callable[[BadInput, Environment, Path], List[str]]
    writes: bool = True
    only_kinds: Optional[Tuple[str, ...]] = None
    not_kinds: Tuple[str, ...] = ()
    batch_record: Optional[str] = None


def _src(case: BadInput, env: Environment) -> str:
    return str(case.path)


def _manifest_for(case: BadInput, env: Environment) -> Tuple[str, str]:
    if case.form == "manifest":
        return str(case.path), str(case.data_root)
    return str(env.root / "manifests" / f"{case.kind}.csv"), str(env.root)


def _volume_for_writers(case: BadInput, env: Environment) -> str:
    """A NIfTI for commands that take one: the bad file, or the good CT when the output is the problem."""
    return str(env.ct_nifti) if case.form == "output" else str(case.path)


_IMAGE_FORMS = ("dicom", "nifti", "nifti_python", "output")

#: Every command and the forms it accepts. A batch ``medgan run`` is one more entry, for example
#: ``CommandUse("run", ("manifest", "output"), lambda c, e, o: ["run", BUNDLE, "--manifest", *_manifest_args(c, e),
#: "-o", str(o / "run")])``; for per-case failures inside a good batch (one bad row among good ones, the
#: case marked failed while the others succeed) add a manifest kind mixing both and judge the batch's
#: record in :func:`tests.badinput.runner.run_invocation` instead of the exit code.
COMMANDS: List[CommandUse] = [
    # Listing several series, or converting each of them, is what these two are for.
    CommandUse("series", ("dicom",), lambda c, e, o: ["series", _src(c, e)], writes=False,
               not_kinds=("two_series_mixed",)),
    CommandUse("convert", ("dicom", "output"), lambda c, e, o: ["convert", _src(c, e), str(o / "ct.nii.gz")]),
    CommandUse("convert-all", ("dicom", "output"), lambda c, e, o: ["convert", _src(c, e), str(o / "all"), "--all"],
               not_kinds=("two_series_mixed",)),
    CommandUse("export-dicom", ("nifti", "nifti_python", "output"),
               lambda c, e, o: ["export-dicom", _volume_for_writers(c, e), str(o / "series"),
                                "--reference", str(e.ct_dicom)]),
    # The reference series gives only patient/study/frame attributes and the extent for the overlap
    # check: a series broken in its pixels or slice stack is still a valid reference.
    CommandUse("export-dicom-reference", ("dicom",),
               lambda c, e, o: ["export-dicom", str(e.ct_nifti), str(o / "series"), "--reference", _src(c, e)],
               only_kinds=("non_image_sop_classes_only", "rgb_secondary_capture", "empty_folder",
                           "dicomdir_missing_files", "symlink_loop", "unreadable_dicom_files")),
    CommandUse("manifest-validate", ("dicom", "nifti", "nifti_python", "manifest"),
               lambda c, e, o: ["manifest", "validate", *_manifest_args(c, e)], writes=False),
    CommandUse("manifest-scan", ("output",), lambda c, e, o: ["manifest", "scan", str(e.ct_dicom.parent), "-o",
                                                              str(o / "manifest.csv")]),
    CommandUse("register", ("dicom", "nifti", "output"),
               lambda c, e, o: ["register", "--fixed", str(e.ct_nifti), "--moving",
                                _src(c, e) if c.form != "output" else str(e.ct_nifti_shifted), "-o", str(o / "reg")]),
    CommandUse("simulate-thick-slice", ("dicom", "nifti", "nifti_python", "output"),
               lambda c, e, o: ["simulate", "thick-slice", _src(c, e), str(o / "thick.nii.gz"),
                                "--thickness-mm", "8"]),
    CommandUse("simulate-low-dose", ("mr", "nifti"),
               lambda c, e, o: ["simulate", "low-dose", _src(c, e), str(o / "low.nii.gz"), "--dose-fraction",
                                "0.25", "--fast", "--threads", "1"]),
    CommandUse("simulate-kernel", ("mr",),
               lambda c, e, o: ["simulate", "kernel", _src(c, e), str(o / "kernel.nii.gz"), "--filter", "hann",
                                "--threads", "1"]),
    CommandUse("evaluate", ("dicom", "nifti", "nifti_python", "output"),
               lambda c, e, o: ["evaluate", "--profile", "raw", "--pred",
                                _src(c, e) if c.form != "output" else str(e.ct_nifti), "--target", str(e.ct_nifti),
                                "--json", str(o / "metrics.json")]),
    # A bundle run over one input: the case fails (exit 1) with the loader's or the input contract's message.
    CommandUse("run", ("mr", "dicom", "nifti"),
               lambda c, e, o: ["run", "ct_kernel_conversion", "--input", _src(c, e), "--device", "cpu",
                                "-o", str(o / "run")], batch_record="run/summary.csv"),
    CommandUse("evaluate-batch", ("manifest",),
               lambda c, e, o: ["evaluate", "--profile", "raw", "--results", str(e.results), "--manifest",
                                str(c.path), "--data-root", str(c.data_root), "-o", str(o / "per_case.csv")]),
]


def _manifest_args(case: BadInput, env: Environment) -> List[str]:
    manifest, data_root = _manifest_for(case, env)
    return [manifest, "--data-root", data_root]


def invocations() -> List[Tuple[str, str]]:
    """Every ``(kind, command name)`` pair to try: the command accepts the kind's form."""
    pairs = []
    for kind, form in KIND_FORMS.items():
        for command in COMMANDS:
            if form in command.forms and (form != "output" or command.writes) \
                    and (command.only_kinds is None or kind in command.only_kinds) and kind not in command.not_kinds:
                pairs.append((kind, command.name))
    return pairs


def command(name: str) -> CommandUse:
    """The :class:`CommandUse` called ``name``."""
    return next(c for c in COMMANDS if c.name == name)
