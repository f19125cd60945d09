"""The derived CT series: DICOM-valid (dciodvfy), right UIDs and attributes, and the same volume and
geometry when read back by SimpleITK, dcm2niix and medgan's reader."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import List, Tuple

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from medgan.datasets.phantom import PHANTOM_PATIENT_ID, PHANTOM_PATIENT_NAME, make_head_phantom, write_phantom_dicom
from medgan.errors import DicomSeriesError, GeometryMismatchError, OutputError
from medgan.io.dicom_writer import write_derived_ct_series
from tests.conftest import dcm2niix_executable, tree_digest
from tests.io.test_nifti import rotation_matrix

_SMALL_SHAPE = (48, 56, 10)
_SMALL_SPACING = (4.0, 3.5, 14.0)


# ---------------------------------------------------------------- readers and checks
def dciodvfy_messages(files) -> Tuple[List[str], List[str]]:
    """(errors, warnings) that dciodvfy reports over ``files``; skips when dciodvfy is absent."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    errors, warnings = [], []
    for path in files:
        result = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
        for line in (result.stdout + result.stderr).splitlines():
            if line.startswith("Error"):
                errors.append(f"{Path(path).name}: {line}")
            elif line.startswith("Warning"):
                warnings.append(line)
    return errors, sorted(set(warnings))


def canonical(array: np.ndarray, affine: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Flip/permute axes (no resampling) to the orientation closest to RAS: compares two storages."""
    ornt = io_orientation(affine)
    return apply_orientation(array, ornt), affine @ inv_ornt_aff(ornt, array.shape)


def read_sitk(folder: Path) -> Tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def read_dcm2niix(folder: Path, work: Path) -> Tuple[np.ndarray, np.ndarray]:
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([dcm2niix_executable(), "-z", "n", "-f", "out", "-o", str(work), str(folder)],
                   capture_output=True, check=True)
    outputs = sorted(work.glob("out*.nii"))
    assert len(outputs) == 1, f"dcm2niix wrote {outputs}"
    image = nib.load(outputs[0])
    return np.asarray(image.get_fdata()), image.affine


def read_medgan(folder: Path) -> Tuple[np.ndarray, np.ndarray]:
    from medgan.io.dicom import read_dicom_series

    volume = read_dicom_series(folder)
    return volume.numpy(), volume.affine.numpy()


def assert_same_volume(expected: MetaTensor, array: np.ndarray, affine: np.ndarray, position_tol_mm: float = 0.01):
    want, want_affine = canonical(np.rint(expected.numpy()), expected.affine.numpy())
    got, got_affine = canonical(np.asarray(array), np.asarray(affine, dtype=np.float64))
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    corners = np.array([[i, j, k, 1.0] for i in (0, got.shape[0] - 1) for j in (0, got.shape[1] - 1)
                        for k in (0, got.shape[2] - 1)]).T
    distance = np.linalg.norm((got_affine @ corners - want_affine @ corners)[:3], axis=0)
    assert distance.max() < position_tol_mm, f"positions differ by up to {distance.max():.4f} mm"


def _grid(kind: str, shape=_SMALL_SHAPE) -> np.ndarray:
    affine = np.eye(4)
    if kind == "axial":  # as a scanner stores it (DICOM 1\0\0\0\1\0)
        affine[:3, :3] = np.diag([-_SMALL_SPACING[0], -_SMALL_SPACING[1], _SMALL_SPACING[2]])
    elif kind == "ras":  # as dcm2niix/nibabel store it: rows and slices reversed relative to DICOM
        affine[:3, :3] = np.diag([_SMALL_SPACING[0], _SMALL_SPACING[1], -_SMALL_SPACING[2]])
    else:  # oblique in three angles, non-unit anisotropic spacing
        affine[:3, :3] = rotation_matrix((17.0, -11.0, 28.0)) @ np.diag([3.3, 2.7, 9.5])
    centre = (np.asarray(shape) - 1) / 2.0
    affine[:3, 3] = -affine[:3, :3] @ centre + np.array([1.25, -3.5, 4.0])
    return affine


def _phantom(kind: str, shape=_SMALL_SHAPE) -> MetaTensor:
    return make_head_phantom(shape, affine=_grid(kind, shape), noise_std_hu=8.0, seed=3)


@pytest.fixture(scope="module")
def reference_series(tmp_path_factory) -> Path:
    """A small phantom CT series (the 'acquired' study the derived series joins)."""
    folder = tmp_path_factory.mktemp("reference") / "ct"
    write_phantom_dicom(folder, shape=_SMALL_SHAPE, spacing_mm=_SMALL_SPACING, noise_std_hu=5.0, seed=1)
    return folder


# ---------------------------------------------------------------- tests
def test_phantom_series_is_valid(reference_series):
    files = sorted(reference_series.glob("*.dcm"))
    assert len(files) == _SMALL_SHAPE[2]
    errors, _ = dciodvfy_messages(files)
    assert errors == []
    ds = pydicom.dcmread(files[0])
    assert str(ds.PatientName) == PHANTOM_PATIENT_NAME and ds.PatientID == PHANTOM_PATIENT_ID
    assert ds.SOPClassUID == pydicom.uid.CTImageStorage and list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    expected = make_head_phantom(_SMALL_SHAPE, _SMALL_SPACING, noise_std_hu=5.0, seed=1)
    assert_same_volume(expected, *read_sitk(reference_series))
    assert_same_volume(expected, *read_medgan(reference_series))


def test_derived_series_attributes(reference_series, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    before = tree_digest(reference_series)
    # a super-resolution output: same field of view, slices 3.5 mm instead of 14 mm
    shape = (_SMALL_SHAPE[0], _SMALL_SHAPE[1], 37)
    image = make_head_phantom(shape, (_SMALL_SPACING[0], _SMALL_SPACING[1], 3.5))
    out = tmp_path / "sr"
    written = write_derived_ct_series(image, out, reference=reference_series, model_name="ct_super_resolution v0.1",
                                      series_description="SR 3.5mm")
    assert tree_digest(reference_series) == before
    ref = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(reference_series.glob("*.dcm"))]
    new = [pydicom.dcmread(p) for p in written.files]
    assert len(new) == 37 and [int(ds.InstanceNumber) for ds in new] == list(range(1, 38))
    assert {ds.StudyInstanceUID for ds in new} == {ref[0].StudyInstanceUID} == {written.study_instance_uid}
    assert {ds.FrameOfReferenceUID for ds in new} == {ref[0].FrameOfReferenceUID}
    assert {ds.SeriesInstanceUID for ds in new} == {written.series_instance_uid} != {ref[0].SeriesInstanceUID}
    ref_sops = {ds.SOPInstanceUID for ds in ref}
    new_sops = {ds.SOPInstanceUID for ds in new}
    assert len(new_sops) == 37 and not new_sops & ref_sops
    assert written.study_from_reference and written.frame_from_reference
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "StudyID", "AccessionNumber", "ReferringPhysicianName", "PatientPosition"):
        assert new[0].get(keyword) == ref[0].get(keyword), keyword
    first = new[0]
    assert first.SOPClassUID == pydicom.uid.CTImageStorage and first.Modality == "CT"
    assert list(first.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert first.SeriesDescription == "SR 3.5mm"
    assert "Synthetic" in first.DerivationDescription and "ct_super_resolution v0.1" in first.DerivationDescription
    assert first.BurnedInAnnotation == "NO"
    equipment = first.ContributingEquipmentSequence[0]
    assert equipment.ManufacturerModelName == "ct_super_resolution v0.1"
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109100"
    assert float(first.SliceThickness) == float(first.SpacingBetweenSlices) == 3.5
    assert [float(v) for v in first.PixelSpacing] == [_SMALL_SPACING[1], _SMALL_SPACING[0]]
    assert (first.PixelRepresentation, first.BitsStored, float(first.RescaleSlope), float(first.RescaleIntercept)) \
        == (1, 16, 1.0, 0.0)
    errors, warnings = dciodvfy_messages(written.files)
    assert errors == [], errors
    # the logs name files and UIDs, never the patient
    assert PHANTOM_PATIENT_NAME not in caplog.text and PHANTOM_PATIENT_ID not in caplog.text
    assert_same_volume(image, *read_medgan(out))


@pytest.mark.parametrize("kind", ["axial", "ras", "oblique"])
@pytest.mark.parametrize("reader", ["simpleitk", "dcm2niix", "medgan"])
def test_round_trip(tmp_path, kind, reader):
    image = _phantom(kind)
    written = write_derived_ct_series(image, tmp_path / "series", model_name="test")
    assert not written.study_from_reference
    if reader == "simpleitk":
        array, affine = read_sitk(written.directory)
    elif reader == "dcm2niix":
        array, affine = read_dcm2niix(written.directory, tmp_path / "nifti")
    else:
        array, affine = read_medgan(written.directory)
    assert_same_volume(image, array, affine)


def test_oblique_series_is_valid(tmp_path):
    written = write_derived_ct_series(_phantom("oblique"), tmp_path / "series", model_name="test")
    errors, _ = dciodvfy_messages(written.files)
    assert errors == []
    ds = pydicom.dcmread(written.files[0])
    assert abs(float(ds.SliceThickness) - 9.5) < 1e-6
    row, col = np.split(np.asarray(ds.ImageOrientationPatient, dtype=float), 2)
    assert abs(np.dot(row, col)) < 1e-6 and abs(np.linalg.norm(row) - 1) < 1e-6


def test_float_values_are_rounded_and_bad_values_refused(tmp_path):
    image = _phantom("axial")
    fractional = MetaTensor(image.as_tensor().float() + 0.3, affine=image.affine)
    written = write_derived_ct_series(fractional, tmp_path / "ok", model_name="test")
    assert_same_volume(image, *read_sitk(written.directory))
    too_bright = MetaTensor(torch.full((8, 8, 3), 40000.0), affine=image.affine)
    with pytest.raises(OutputError, match="do not fit 16-bit"):
        write_derived_ct_series(too_bright, tmp_path / "bright")
    not_finite = MetaTensor(torch.full((8, 8, 3), float("nan")), affine=image.affine)
    with pytest.raises(OutputError, match="NaN"):
        write_derived_ct_series(not_finite, tmp_path / "nan")
    with pytest.raises(OutputError, match="3D volume"):
        write_derived_ct_series(MetaTensor(torch.zeros(1, 8, 8, 3), affine=image.affine), tmp_path / "4d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]


def test_mr_reference_gives_ct_in_the_mr_frame(reference_series, tmp_path):
    mr = []
    for path in sorted(reference_series.glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ds.Modality, ds.SOPClassUID = "MR", pydicom.uid.MRImageStorage
        ds.FrameOfReferenceUID = "1.2.3.4.5.6.7.8.9"
        mr.append(ds)
    written = write_derived_ct_series(_phantom("axial"), tmp_path / "sct", reference=mr, model_name="mr_synthetic_ct")
    ds = pydicom.dcmread(written.files[0])
    assert ds.Modality == "CT" and ds.SOPClassUID == pydicom.uid.CTImageStorage
    assert ds.FrameOfReferenceUID == "1.2.3.4.5.6.7.8.9" and ds.StudyInstanceUID == mr[0].StudyInstanceUID


def test_reference_refusals(reference_series, tmp_path):
    image = _phantom("axial")
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(reference_series.glob("*.dcm"))]
    headers[-1].StudyInstanceUID = "1.2.3.999"
    with pytest.raises(DicomSeriesError, match="more than one patient, study or frame"):
        write_derived_ct_series(image, tmp_path / "a", reference=headers)
    far = MetaTensor(image.as_tensor(), affine=torch.from_numpy(_grid("axial") + np.array(
        [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 900.0], [0, 0, 0, 0]])))
    with pytest.raises(GeometryMismatchError, match="does not overlap"):
        write_derived_ct_series(far, tmp_path / "b", reference=reference_series)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not DICOM")
    with pytest.raises(DicomSeriesError, match="no DICOM image"):
        write_derived_ct_series(image, tmp_path / "c", reference=empty)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_write_is_atomic(tmp_path, monkeypatch):
    image = _phantom("axial")
    calls = {"n": 0}
    original = pydicom.Dataset.save_as

    def failing(self, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(28, "No space left on device")
        return original(self, filename, *args, **kwargs)

    monkeypatch.setattr(pydicom.Dataset, "save_as", failing)
    with pytest.raises(OutputError, match="No space left"):
        write_derived_ct_series(image, tmp_path / "series")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    write_derived_ct_series(image, tmp_path / "series")
    with pytest.raises(OutputError, match="not empty"):
        write_derived_ct_series(image, tmp_path / "series")
    replaced = write_derived_ct_series(image, tmp_path / "series", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "series").iterdir()) == sorted(p.name for p in replaced.files)


@pytest.mark.realdata
def test_real_reference_ct_abdomen(real_file, tmp_path, caplog):
    """A derived series on a finer grid joins the real JPEG 2000 abdominal CT (whose anonymised
    headers lack a StudyInstanceUID: a new study is made, with a warning)."""
    reference = real_file("dicom/ct_abdomen_j2k")
    before = tree_digest(reference)
    from medgan.io import load_volume

    source = load_volume(reference)
    # a super-resolution-like output: every other slice position filled in (2 mm -> 1 mm), central crop
    data = source.numpy()[128:384, 96:352, :].astype(np.float32)
    fine = np.empty(data.shape[:2] + (2 * data.shape[2] - 1,), dtype=np.float32)
    fine[..., 0::2] = data
    fine[..., 1::2] = 0.5 * (data[..., :-1] + data[..., 1:])
    affine = source.affine.numpy().copy()
    affine[:3, 3] = affine[:3, :3] @ np.array([128.0, 96.0, 0.0]) + affine[:3, 3]
    affine[:3, 2] /= 2.0
    image = MetaTensor(torch.from_numpy(np.rint(fine)), affine=torch.from_numpy(affine))
    caplog.set_level(logging.WARNING)
    written = write_derived_ct_series(image, tmp_path / "sr", reference=reference, model_name="ct_super_resolution")
    assert "no StudyInstanceUID" in caplog.text
    assert tree_digest(reference) == before
    ref = pydicom.dcmread(next(reference.iterdir()), stop_before_pixels=True)
    new = pydicom.dcmread(written.files[0])
    assert new.FrameOfReferenceUID == ref.FrameOfReferenceUID and written.frame_from_reference
    assert not written.study_from_reference and new.StudyInstanceUID
    assert new.PatientPosition == ref.PatientPosition and new.IssuerOfPatientID == ref.IssuerOfPatientID
    assert float(new.SpacingBetweenSlices) == pytest.approx(1.0)
    errors, _ = dciodvfy_messages(written.files)
    assert errors == []
    assert_same_volume(image, *read_medgan(written.directory))
    assert_same_volume(image, *read_sitk(written.directory))
    assert_same_volume(image, *read_dcm2niix(written.directory, tmp_path / "nifti"))


def test_in_plane_shear_is_refused(tmp_path):
    sheared = _grid("axial")
    sheared[0, 1] = 1.0  # columns no longer perpendicular to rows
    image = MetaTensor(_phantom("axial").as_tensor(), affine=torch.from_numpy(sheared))
    with pytest.raises(OutputError, match="not perpendicular"):
        write_derived_ct_series(image, tmp_path / "series")
    assert list(tmp_path.iterdir()) == []
