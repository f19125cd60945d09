"""The fast paths of ``medgan convert`` agree with the general libraries they stand in for.

- :mod:`medgan.io.dicom.header` decodes the same values as pydicom, in every transfer syntax family
  (implicit/explicit VR, little/big endian, encapsulated), leaves enhanced multi-frame objects to
  pydicom, and reports truncation;
- :mod:`medgan.io.dicom.nifti_out` writes the bytes nibabel writes (header and voxels);
- converting an uncompressed series imports neither pydicom, nibabel, SciPy nor torch.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, RLELossless

import medgan.io.dicom.header as header_module
from medgan.io.dicom.header import WANTED, HeaderFallback, NotDicom, parse_header
from medgan.io.dicom.nifti_out import is_sheared, write_volume_nifti
from tests.io.test_dicom_synthetic import write_enhanced, write_series


def _pydicom_value(ds, keyword):
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        return [_plain(v) for v in value]
    return _plain(value)


def _plain(value):
    if isinstance(value, (pydicom.valuerep.DSfloat, pydicom.valuerep.DSdecimal)):
        return float(value)
    if isinstance(value, pydicom.valuerep.IS):
        return int(value)
    return value if isinstance(value, (int, float)) else str(value)


def assert_same_as_pydicom(path: Path) -> None:
    header = parse_header(path)
    ds = pydicom.dcmread(path, defer_size=64)
    for tag, (keyword, _) in WANTED.items():
        source = ds.file_meta if tag >> 16 == 0x0002 else ds
        ours = (header.file_meta if tag >> 16 == 0x0002 else header.values).get(keyword)
        assert (ours if ours != "" else None) == _pydicom_value(source, keyword), (path, keyword)
    element = ds.get_item("PixelData", keep_deferred=True)
    if element is None:
        assert header.pixel_offset is None
    elif element.length != 0xFFFFFFFF:
        assert header.pixel_offset == element.value_tell and header.pixel_length == element.length
    else:
        assert header.pixel_length is None


def _resaved(paths, tmp_path: Path, syntax) -> Path:
    """The files re-encoded in ``syntax`` (big endian pixel data byte-swapped, as the standard asks)."""
    folder = tmp_path / str(syntax)
    folder.mkdir()
    for path in paths:
        ds = pydicom.dcmread(path)
        if syntax == RLELossless:
            ds.compress(RLELossless)
        elif syntax == ExplicitVRBigEndian:
            pixels = ds.pixel_array
            ds.PixelData = pixels.astype(pixels.dtype.newbyteorder(">")).tobytes()
        ds.file_meta.TransferSyntaxUID = syntax
        pydicom.dcmwrite(folder / path.name, ds, implicit_vr=syntax == ImplicitVRLittleEndian,
                         little_endian=syntax != ExplicitVRBigEndian, force_encoding=True)
    return folder


@pytest.mark.parametrize("first_read", [header_module.FIRST_READ_BYTES, 300])  # 300: headers read in pieces
@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless])
def test_header_matches_pydicom_and_volume_matches_explicit_little_endian(tmp_path, syntax, first_read, monkeypatch):
    from medgan.io.dicom import read_dicom_volume

    monkeypatch.setattr(header_module, "FIRST_READ_BYTES", first_read)

    paths = write_series(tmp_path / "explicit", n=4, signed=True, bits_stored=16, slope=0.5, intercept=-20.0)
    folder = _resaved(paths, tmp_path, syntax)
    for path in list(folder.iterdir()) + paths:
        assert_same_as_pydicom(path)
    reference = read_dicom_volume(tmp_path / "explicit")
    converted = read_dicom_volume(folder)
    np.testing.assert_array_equal(converted.array, reference.array)
    np.testing.assert_array_equal(converted.affine, reference.affine)


def test_enhanced_multiframe_is_left_to_pydicom(tmp_path):
    with pytest.raises(HeaderFallback, match="functional groups"):
        parse_header(write_enhanced(tmp_path))


def test_not_dicom_and_truncation_are_told_apart(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("no DICOM here")
    with pytest.raises(NotDicom):
        parse_header(junk)
    path = write_series(tmp_path / "s", n=2)[0]
    data = path.read_bytes()
    pixels_at = parse_header(path).pixel_offset
    for cut, where in ((len(data) - 10, "pixel data"), (pixels_at - 20, "header"), (190, "file meta")):
        path.write_bytes(data[:cut])
        header = parse_header(path)
        assert header.truncated and "truncated" in header.problem and where in header.problem, (cut, header.problem)


@pytest.mark.realdata
def test_header_matches_pydicom_on_every_real_file(data_root):
    checked = 0
    for path in sorted((data_root / "dicom").rglob("*")):
        if not path.is_file() or path.suffix in (".nii", ".json", ".gz", ".txt", ".md"):
            continue
        try:
            parse_header(path)
        except NotDicom:
            continue
        assert_same_as_pydicom(path)
        checked += 1
    assert checked > 200  # dcm_qa_ct (with DIRFILEs), dcm_qa_ts (9 syntaxes), ct_abdomen_j2k


def _nibabel_reference(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.header.set_data_dtype(array.dtype)
    image.header.set_xyzt_units("mm", "sec")
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=0 if is_sheared(affine) else 1, strip_shears=True)
    image.header.set_slope_inter(1.0, 0.0)
    image.header["descrip"] = b"medgan test"
    nib.save(image, str(path))


def _affines():
    rotation = np.array([[0.36, 0.48, -0.8], [-0.8, 0.6, 0.0], [0.48, 0.64, 0.6]])  # oblique, proper
    oblique = np.eye(4)
    oblique[:3, :3] = rotation * [0.7, 0.8, 2.5]
    oblique[:3, 3] = [-100.5, 20.25, 7.0]
    flipped = np.diag([0.5, -0.5, 3.0, 1.0])  # left-handed: qfac -1
    flipped[:3, 3] = [10, 20, -30]
    sheared = np.diag([-0.4, -0.4, 2.4, 1.0])  # gantry tilt kept in the affine: qform code 0
    sheared[1, 2] = 0.7
    return {"oblique": oblique, "flipped": flipped, "sheared": sheared}


@pytest.mark.parametrize("name", sorted(_affines()))
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_writer_writes_what_nibabel_writes(tmp_path, name, suffix):
    affine = _affines()[name]
    stack_zyx = np.random.default_rng(0).integers(-1024, 3000, (7, 6, 5)).astype(np.int16)
    volume = stack_zyx.transpose(2, 1, 0)  # (X, Y, Z) view, as the reader returns it
    ours, theirs = tmp_path / f"ours{suffix}", tmp_path / f"nibabel{suffix}"
    write_volume_nifti(volume, affine, ours, description="medgan test")
    _nibabel_reference(np.asanyarray(volume), affine, theirs)
    read = (lambda p: gzip.decompress(p.read_bytes())) if suffix.endswith(".gz") else (lambda p: p.read_bytes())
    ours_bytes, theirs_bytes = read(ours), read(theirs)
    # quatern_b/c/d (bytes 256-267): for a half-turn rotation q and -q are both valid; compare the rotation
    assert ours_bytes[:256] + ours_bytes[268:] == theirs_bytes[:256] + theirs_bytes[268:]
    np.testing.assert_allclose(nib.load(ours).header.get_qform(), nib.load(theirs).header.get_qform(), atol=1e-6)
    loaded = nib.load(ours)
    np.testing.assert_array_equal(np.asanyarray(loaded.dataobj), volume)
    np.testing.assert_allclose(loaded.affine, affine, atol=1e-5)


def test_convert_imports_no_heavy_library(tmp_path):
    """An uncompressed series converts without pydicom, nibabel, SciPy, torch or MONAI (start-up time)."""
    write_series(tmp_path / "in", n=4, tilt_deg=10.0)
    code = ("import sys; from medgan.cli import main; "
            f"assert main(['-q', 'convert', {str(tmp_path / 'in')!r}, {str(tmp_path / 'x.nii')!r}]) == 0; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydicom', 'nibabel', 'scipy', 'torch', 'monai'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert nib.load(tmp_path / "x.nii").shape[2] == 4


def test_compressed_pixel_data_cut_short_is_marked_truncated(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, generate_uid

    from medgan.io.dicom.header import parse_header

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = JPEG2000Lossless
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = "CT", 8, 8
    ds.PixelData = encapsulate([bytes(range(200)), bytes(120)])
    ds["PixelData"].VR = "OB"
    whole = tmp_path / "whole.dcm"
    ds.save_as(whole, enforce_file_format=True)
    assert not parse_header(whole).truncated
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole.read_bytes()[:-60])  # inside the last fragment: the delimiter is gone
    header = parse_header(cut)
    assert header.truncated and "compressed pixel data is cut short" in header.problem
