"""DICOM reader logic on small generated series (no real data needed).

Every generated slice stores ``round(f(P))`` where ``f`` is a linear function of the pixel's patient
position ``P`` (LPS, mm), so a correct reader returns, at every voxel, ``f`` of that voxel's world
position from the returned affine: wrong slice order, swapped axes, a wrong sign or a wrong shear
all show up as errors of several HU, while linear resampling keeps the match within rounding.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

from medgan.errors import DicomSeriesError
from medgan.io.dicom import read_dicom_volume, scan_series

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
PHI_NAME = "Secretname^Patricia"
PHI_ID = "PID-99887766"
PHI_BIRTH = "19450317"


def world_value(points_lps: np.ndarray) -> np.ndarray:
    """The synthetic intensity (HU) at patient positions ``(..., 3)`` (LPS, mm)."""
    return 9.0 * points_lps[..., 0] + 6.0 * points_lps[..., 1] + 11.0 * points_lps[..., 2] + 300.0


def _base_dataset(sop_class: str, series_uid: str, series_number: int, modality: str,
                  transfer_syntax: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PHI_NAME
    ds.PatientID = PHI_ID
    ds.PatientBirthDate = PHI_BIRTH
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesNumber = series_number
    ds.Modality = modality
    ds.SeriesDescription = f"synthetic {series_number}"
    ds.ConvolutionKernel = "B30f"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def _stored(values: np.ndarray, slope: float, intercept: float, bits_stored: int, signed: bool) -> np.ndarray:
    raw = np.rint((values - intercept) / slope)
    low, high = (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (0, (1 << bits_stored) - 1)
    assert raw.min() >= low and raw.max() <= high, "test data out of the stored range"
    return raw.astype(np.int16 if signed else np.uint16)


def slice_geometry(n: int, step_mm: float, orientation: Sequence[float], origin: Sequence[float],
                   tilt_deg: float, offsets_mm: Optional[Sequence[float]]):
    """Row/column directions, normal and the position of each slice (LPS)."""
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row, col)
    along = np.arange(n) * step_mm if offsets_mm is None else np.asarray(offsets_mm, float)
    positions = np.asarray(origin, float) + np.outer(along, normal) + np.outer(along * np.tan(np.radians(tilt_deg)), col)
    return row, col, positions


def write_series(folder: Path, n: int = 10, rows: int = 20, columns: int = 24, pixel_spacing=(1.1, 0.8),
                 step_mm: float = 2.5, orientation: Sequence[float] = AXIAL, origin=(-9.0, -11.0, -14.0),
                 tilt_deg: float = 0.0, offsets_mm: Optional[Sequence[float]] = None, series_uid: Optional[str] = None,
                 series_number: int = 3, modality: str = "CT", image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
                 bits_stored: int = 12, signed: bool = False, slope: float = 1.0, intercept: float = -1024.0,
                 transfer_syntax: str = str(ExplicitVRLittleEndian), garbage_high_bits: bool = False,
                 seed: int = 0) -> List[Path]:
    """Write a single-frame CT series with shuffled file names and reversed InstanceNumber."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    series_uid = series_uid or generate_uid()
    row, col, positions = slice_geometry(n, step_mm, orientation, origin, tilt_deg, offsets_mm)
    jj, ii = np.mgrid[0:rows, 0:columns]
    paths = []
    for k, position in enumerate(positions):
        points = position + ii[..., None] * pixel_spacing[1] * row + jj[..., None] * pixel_spacing[0] * col
        raw = _stored(world_value(points), slope, intercept, bits_stored, signed)
        if garbage_high_bits and not signed:
            raw = raw | np.uint16(0xF000)  # overlay/garbage bits above BitsStored must be ignored
        ds = _base_dataset(CT_IMAGE, series_uid, series_number, modality, transfer_syntax)
        ds.ImageType = list(image_type)
        ds.InstanceNumber = n - k
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = step_mm
        ds.GantryDetectorTilt = tilt_deg
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
        ds.PixelRepresentation = int(signed)
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        path = folder / f"{rng.integers(1 << 40):x}"  # no extension, random order
        if transfer_syntax == str(ExplicitVRLittleEndian):
            ds.PixelData = raw.tobytes()
        else:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.compress(transfer_syntax, raw, encoding_plugin="pylibjpeg" if transfer_syntax == JPEG2000Lossless else "")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_secondary_capture(folder: Path) -> Path:
    ds = _base_dataset(SECONDARY_CAPTURE, generate_uid(), 999, "CT", str(ExplicitVRLittleEndian))
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 8, 8, 7, 0
    ds.PixelData = bytes(64)
    path = folder / "dose_report"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_enhanced(folder: Path, n: int = 8, rows: int = 16, columns: int = 18, pixel_spacing=(0.9, 0.7),
                   step_mm: float = 3.0, origin=(-5.0, -6.0, 20.0)) -> Path:
    """One Enhanced CT multi-frame object, frames stored in a shuffled order."""
    folder.mkdir(parents=True, exist_ok=True)
    row, col, positions = slice_geometry(n, step_mm, AXIAL, origin, 0.0, None)
    order = np.random.default_rng(1).permutation(n)
    jj, ii = np.mgrid[0:rows, 0:columns]
    ds = _base_dataset(ENHANCED_CT_IMAGE, generate_uid(), 7, "CT", str(ExplicitVRLittleEndian))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.NumberOfFrames = n
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = rows, columns, 16, 16, 15, 1
    shared = Dataset()
    orientation, measures, rescale = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = list(AXIAL)
    measures.PixelSpacing, measures.SliceThickness = list(pixel_spacing), step_mm
    rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = 1, -1024, "HU"
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PixelValueTransformationSequence = DicomSequence([rescale])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames, groups = [], []
    for k in order:
        item, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = [float(v) for v in positions[k]]
        item.PlanePositionSequence = DicomSequence([plane])
        groups.append(item)
        points = positions[k] + ii[..., None] * pixel_spacing[1] * row + jj[..., None] * pixel_spacing[0] * col
        frames.append(_stored(world_value(points), 1.0, -1024.0, 16, True))
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(groups)
    ds.PixelData = np.stack(frames).tobytes()
    path = folder / "enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def voxel_world_lps(affine_ras: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``(X, Y, Z, 3)`` LPS positions of every voxel of a volume with a RAS affine."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    ras = grid @ affine_ras[:3, :3].T + affine_ras[:3, 3]
    return ras * np.array([-1.0, -1.0, 1.0])


def assert_matches_world(volume, tolerance: float = 0.51, min_fraction: float = 1.0) -> None:
    """Every voxel (or every voxel away from resampling fill) holds ``f`` of its world position."""
    expected = world_value(voxel_world_lps(volume.affine, volume.array.shape))
    values = volume.array.astype(float)
    valid = np.ones(values.shape, bool)
    if volume.meta["tilt_handling"] == "resampled_orthogonal":  # the grid has fill beside shifted slices
        from scipy import ndimage

        inside = values != volume.meta["medgan"]["fill_value"]
        valid = ndimage.binary_erosion(inside, structure=np.ones((3, 3, 1), bool), iterations=2)
    assert valid.mean() >= min_fraction
    error = np.abs(values - expected)[valid]
    assert error.max() <= tolerance, f"max error {error.max():.2f} HU at {valid.sum()} voxels"


def test_shuffled_names_and_reversed_instance_numbers_give_normal_order(tmp_path):
    write_series(tmp_path / "s")
    volume = read_dicom_volume(tmp_path / "s")
    assert volume.array.shape == (24, 20, 10)
    assert volume.array.dtype == np.int16
    assert_matches_world(volume)
    np.testing.assert_allclose(volume.meta["spacing_mm"], [0.8, 1.1, 2.5], atol=1e-6)
    assert volume.meta["tilt_handling"] == "none" and volume.meta["spacing_handling"] == "even"
    assert volume.affine[2, 2] > 0  # slices ascend along the normal (feet -> head for axial)


def test_oblique_orientation_and_signed_data_with_fractional_slope(tmp_path):
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    oblique = (c, s, 0.0, 0.0, 0.0, -1.0)  # rows along a rotated L-P axis, columns head -> feet
    write_series(tmp_path / "s", orientation=oblique, signed=True, bits_stored=16, slope=0.5, intercept=-20.0)
    volume = read_dicom_volume(tmp_path / "s")
    assert volume.array.dtype == np.float32  # half-HU steps do not fit int16 exactly
    assert_matches_world(volume, tolerance=0.26)


def test_twelve_bit_data_ignores_bits_above_bits_stored(tmp_path):
    write_series(tmp_path / "s", garbage_high_bits=True)
    assert_matches_world(read_dicom_volume(tmp_path / "s"))


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_series_equal_uncompressed(tmp_path, syntax):
    size = {"rows": 64, "columns": 64, "n": 4}  # JPEG 2000 needs tiles larger than its resolution levels
    write_series(tmp_path / "raw", series_uid="1.2.3.4.1", **size)
    write_series(tmp_path / "compressed", series_uid="1.2.3.4.1", transfer_syntax=str(syntax), **size)
    raw = read_dicom_volume(tmp_path / "raw")
    compressed = read_dicom_volume(tmp_path / "compressed")
    np.testing.assert_array_equal(raw.array, compressed.array)
    np.testing.assert_array_equal(raw.affine, compressed.affine)
    assert compressed.meta["medgan"]["transfer_syntax"] == syntax.name
    assert_matches_world(compressed)


def test_enhanced_multiframe_ct(tmp_path):
    write_enhanced(tmp_path / "mf")
    volume = read_dicom_volume(tmp_path / "mf" / "enhanced.dcm")
    assert volume.array.shape == (18, 16, 8)
    assert_matches_world(volume)


def test_two_series_without_selection_is_an_error_listing_both(tmp_path):
    write_series(tmp_path, series_uid="1.2.3.4.10", series_number=3)
    write_series(tmp_path, series_uid="1.2.3.4.20", series_number=4, step_mm=1.25, seed=1)
    with pytest.raises(DicomSeriesError) as err:
        read_dicom_volume(tmp_path)
    assert "1.2.3.4.10" in str(err.value) and "1.2.3.4.20" in str(err.value) and "--series" in str(err.value)
    assert read_dicom_volume(tmp_path, series=4).array.shape[2] == 10
    assert read_dicom_volume(tmp_path, series="1.2.3.4.10").meta["SeriesNumber"] == 3


def test_scout_secondary_capture_and_junk_are_skipped_with_reasons(tmp_path):
    write_series(tmp_path / "ct")
    write_series(tmp_path / "scout", n=1, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), series_number=1, seed=2)
    write_series(tmp_path / "single", n=1, series_number=2, seed=3)
    write_secondary_capture(tmp_path)
    (tmp_path / "notes.txt").write_text("not dicom")
    series, skipped = scan_series(tmp_path)
    reasons = {s.series_number: (s.usable, s.reason) for s in series}
    assert reasons[1][0] is False and "LOCALIZER" in reasons[1][1]
    assert reasons[2][0] is False and "single" in reasons[2][1]
    assert reasons[999][0] is False and "Secondary Capture" in reasons[999][1]
    assert reasons[3] == (True, "")
    assert [s.reason for s in skipped] == ["not a DICOM file"]
    assert read_dicom_volume(tmp_path).meta["SeriesNumber"] == 3


def test_missing_slice_is_refused_unless_resampling_is_asked_for(tmp_path):
    offsets = [0, 2.5, 5, 7.5, 12.5, 15, 17.5, 20]  # the slice at 10 mm is missing
    write_series(tmp_path, n=len(offsets), offsets_mm=offsets)
    with pytest.raises(DicomSeriesError) as err:
        read_dicom_volume(tmp_path)
    message = str(err.value)
    assert "missing slice" in message and "5 mm after slice 4" in message and "--resample-uneven" in message
    volume = read_dicom_volume(tmp_path, resample_uneven=True)
    assert volume.array.shape == (24, 20, 9)
    assert volume.meta["spacing_handling"] == "resampled_even"
    assert volume.meta["medgan"]["source_slice_steps_mm"] == [2.5, 2.5, 2.5, 5.0, 2.5, 2.5, 2.5]
    assert_matches_world(volume, tolerance=1.0)  # stored rounding + output rounding


def test_duplicate_positions_are_refused(tmp_path):
    write_series(tmp_path, n=6, offsets_mm=[0, 2.5, 5, 5, 7.5, 10])
    with pytest.raises(DicomSeriesError, match="share a position"):
        read_dicom_volume(tmp_path)


def test_gantry_tilt_resampled_to_orthogonal_grid(tmp_path):
    write_series(tmp_path, n=12, tilt_deg=20.0, step_mm=2.0)
    series, _ = scan_series(tmp_path)
    assert series[0].tilt_deg == pytest.approx(20.0, abs=0.01)
    volume = read_dicom_volume(tmp_path)
    direction = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-9)
    assert volume.meta["tilt_handling"] == "resampled_orthogonal"
    # the stack drifts 11 * 2 * tan(20 deg) = 8 mm along the columns: the grid grows to cover it
    assert volume.array.shape[1] == 20 + int(np.ceil(22 * np.tan(np.radians(20)) / 1.1))
    assert_matches_world(volume, tolerance=1.0, min_fraction=0.5)


def test_gantry_tilt_kept_exactly_in_a_sheared_affine(tmp_path):
    write_series(tmp_path, n=12, tilt_deg=-15.0, step_mm=2.0)
    volume = read_dicom_volume(tmp_path, tilt="shear")
    assert volume.meta["tilt_handling"] == "sheared_affine" and not volume.meta["medgan"]["resampled"]
    assert volume.array.shape == (24, 20, 12)
    assert_matches_world(volume)  # exact: no interpolation


def test_inconsistent_orientation_is_refused(tmp_path):
    write_series(tmp_path, n=4, series_uid="1.2.3.4.5")
    write_series(tmp_path, n=2, series_uid="1.2.3.4.5", orientation=(1, 0, 0, 0, 0, -1), origin=(0, 30, 0), seed=9)
    with pytest.raises(DicomSeriesError, match="orientation"):
        read_dicom_volume(tmp_path)


def test_truncated_file_names_the_file(tmp_path):
    paths = write_series(tmp_path, n=4)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 300])
    with pytest.raises(DicomSeriesError) as err:
        read_dicom_volume(tmp_path)
    assert str(paths[2]) in str(err.value) and "truncated" in str(err.value)


def test_patient_identifiers_never_reach_errors_or_logs(tmp_path, caplog):
    write_series(tmp_path, n=6, offsets_mm=[0, 2.5, 5, 10, 12.5, 15], tilt_deg=10.0)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DicomSeriesError) as err:
        read_dicom_volume(tmp_path)
    read_dicom_volume(tmp_path, resample_uneven=True)
    text = str(err.value) + caplog.text + json.dumps([s.summary() for s in scan_series(tmp_path)[0]])
    for secret in (PHI_NAME, "Secretname", PHI_ID, PHI_BIRTH):
        assert secret not in text


def test_monai_load_image_gives_metatensor_with_ras_affine(tmp_path):
    from monai.data import MetaTensor
    from monai.transforms import LoadImage

    from medgan.io import load_volume
    from medgan.io.dicom import MedganDicomReader

    write_series(tmp_path, n=5)
    expected = read_dicom_volume(tmp_path)
    image = LoadImage(reader=MedganDicomReader(), image_only=True, dtype=None)(str(tmp_path))
    assert isinstance(image, MetaTensor) and tuple(image.shape) == (24, 20, 5)
    np.testing.assert_allclose(image.affine.numpy(), expected.affine)
    np.testing.assert_array_equal(image.numpy(), expected.array)
    assert image.meta["SeriesInstanceUID"] == expected.meta["SeriesInstanceUID"]
    loaded = load_volume(tmp_path)
    np.testing.assert_array_equal(loaded.numpy(), expected.array)
    assert loaded.meta["medgan"]["reader"] == "medgan.io.dicom"


def test_cli_series_and_convert(tmp_path, capsys):
    import nibabel as nib

    from medgan.cli import main

    src = tmp_path / "in"
    write_series(src, series_uid="1.2.3.4.10", series_number=3)
    write_series(src, series_uid="1.2.3.4.20", series_number=4, n=6, offsets_mm=[0, 2.5, 5, 10, 12.5, 15], seed=1)
    write_secondary_capture(src)
    assert main(["series", str(src), "--json"]) == 1  # the gapped series #4 needs --resample-uneven
    listed = json.loads(capsys.readouterr().out)["series"]
    assert [(s["series_number"], s["usable"]) for s in listed] == [(3, True), (4, True), (999, False)]
    assert main(["convert", str(src), str(tmp_path / "x.nii.gz")]) == 2
    assert "2 image volumes found" in capsys.readouterr().err
    assert not (tmp_path / "x.nii.gz").exists()
    assert main(["convert", str(src), str(tmp_path / "x.nii.gz"), "--series", "3"]) == 0
    written = nib.load(tmp_path / "x.nii.gz")
    expected = read_dicom_volume(src, series=3)
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected.array)
    np.testing.assert_allclose(written.affine, expected.affine, atol=1e-5)
    assert written.get_data_dtype() == np.int16
    sidecar = json.loads((tmp_path / "x.json").read_text())  # BIDS names, as dcm2niix writes them
    assert sidecar["Modality"] == expected.meta["Modality"] and sidecar["SeriesNumber"] == 3
    assert sidecar["ConversionSoftware"] == "medgan" and not any("UID" in key for key in sidecar)
    # --all: the gapped series fails clearly, the good one is written, index.json says which
    assert main(["convert", str(src), str(tmp_path / "all"), "--all"]) == 1
    index = json.loads((tmp_path / "all" / "index.json").read_text())
    assert list(index["series"]) == ["1.2.3.4.10"] and "missing slice" in index["failed"]["1.2.3.4.20"]
    assert (tmp_path / "all" / index["series"]["1.2.3.4.10"]["file"]).exists()
    assert json.loads((tmp_path / "all" / index["series"]["1.2.3.4.10"]["sidecar"]).read_text())["Modality"] == "CT"
    assert main(["convert", str(src), str(tmp_path / "all2"), "--all", "--resample-uneven"]) == 0
    assert len(json.loads((tmp_path / "all2" / "index.json").read_text())["series"]) == 2
