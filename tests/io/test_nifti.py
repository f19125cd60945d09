"""NIfTI in and out: exact round trips (voxels, dtype, affine, qform/sform) and clear refusals."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medgan.errors import ImageFileError, OutputError
from medgan.io.nifti import read_nifti, validate_volume, write_nifti
from tests.conftest import tree_digest


def rotation_matrix(angles_deg):
    """Rotation about x, then y, then z by the given angles (degrees)."""
    a, b, c = (math.radians(v) for v in angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _affine(kind: str) -> np.ndarray:
    affine = np.eye(4)
    if kind == "ras":
        affine[:3, :3] = np.diag([0.8, 0.8, 2.5])
        affine[:3, 3] = (-40.0, -55.5, 12.25)
    elif kind == "lps":  # DICOM-like storage: x to the left, y to the back
        affine[:3, :3] = np.diag([-0.7, -0.7, 3.0])
        affine[:3, 3] = (120.3, 98.1, -300.0)
    else:  # oblique, anisotropic, left-handed
        affine[:3, :3] = rotation_matrix((12.0, -7.5, 21.0)) @ np.diag([0.9, 1.1, -2.0])
        affine[:3, 3] = (10.123456, -20.5, 33.0)
    return affine


def _hu_volume(shape=(20, 17, 9), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 3071, size=shape).astype(np.int16)


@pytest.mark.parametrize("kind", ["ras", "lps", "oblique"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_round_trip_is_exact(tmp_path, kind, suffix):
    data, affine = _hu_volume(), _affine(kind)
    first = tmp_path / f"in{suffix}"
    nib.save(nib.Nifti1Image(data, affine), first)
    image = read_nifti(first)
    assert tuple(image.shape) == data.shape and image.dtype == torch.int16
    np.testing.assert_allclose(image.affine.numpy(), affine, atol=1e-6)
    second = write_nifti(image, tmp_path / f"out{suffix}")
    back = nib.load(second)
    assert back.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), data)
    np.testing.assert_allclose(back.affine, nib.load(first).affine, rtol=0, atol=1e-6)
    assert int(back.header["qform_code"]) > 0 and int(back.header["sform_code"]) > 0
    np.testing.assert_allclose(back.get_qform(), back.get_sform(), atol=1e-5)
    assert back.header.get_xyzt_units()[0] == "mm"
    again = read_nifti(second)
    assert torch.equal(again.as_tensor(), image.as_tensor())
    np.testing.assert_array_equal(again.affine.numpy(), image.affine.numpy())


def test_dtype_choice(tmp_path):
    affine = _affine("ras")
    hu_float = MetaTensor(torch.from_numpy(_hu_volume().astype(np.float32)), affine=torch.from_numpy(affine))
    assert nib.load(write_nifti(hu_float, tmp_path / "a.nii.gz")).get_data_dtype() == np.int16
    fractional = MetaTensor(hu_float.as_tensor() + 0.25, affine=torch.from_numpy(affine))
    out = nib.load(write_nifti(fractional, tmp_path / "b.nii.gz"))
    assert out.get_data_dtype() == np.float32
    np.testing.assert_array_equal(out.get_fdata(dtype=np.float32), fractional.numpy())
    big = MetaTensor(torch.full((4, 4, 4), 70000, dtype=torch.int32), affine=torch.from_numpy(affine))
    assert nib.load(write_nifti(big, tmp_path / "c.nii.gz")).get_data_dtype() == np.int32
    doubles = MetaTensor(torch.rand(4, 4, 4, dtype=torch.float64), affine=torch.from_numpy(affine))
    assert nib.load(write_nifti(doubles, tmp_path / "d.nii.gz")).get_data_dtype() == np.float64
    # an explicit integer dtype rounds, and refuses rather than clips what does not fit
    forced = nib.load(write_nifti(fractional, tmp_path / "e.nii.gz", dtype=np.int16))
    np.testing.assert_array_equal(np.asanyarray(forced.dataobj), np.rint(fractional.numpy()))
    with pytest.raises(OutputError, match="do not fit int16"):
        write_nifti(big, tmp_path / "f.nii.gz", dtype="int16")
    assert not (tmp_path / "f.nii.gz").exists()


def test_int32_file_keeps_its_dtype(tmp_path):
    source = tmp_path / "int32.nii.gz"
    data = _hu_volume().astype(np.int32)
    nib.save(nib.Nifti1Image(data, _affine("ras")), source)
    out = nib.load(write_nifti(read_nifti(source), tmp_path / "out.nii.gz"))
    assert out.get_data_dtype() == np.int32
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), data)


def test_scaled_and_unsigned_data(tmp_path):
    raw = np.arange(60, dtype=np.uint16).reshape(3, 4, 5) * 1000
    image = nib.Nifti1Image(raw, _affine("ras"))
    nib.save(image, tmp_path / "u16.nii")
    read = read_nifti(tmp_path / "u16.nii")
    assert read.dtype == torch.int32  # widened: torch has no full uint16 support
    out = nib.load(write_nifti(read, tmp_path / "u16_out.nii"))
    assert out.get_data_dtype() == np.uint16
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), raw)

    scaled = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), _affine("ras"))
    scaled.header.set_slope_inter(0.5, -10.0)
    nib.save(scaled, tmp_path / "scaled.nii.gz")
    values = read_nifti(tmp_path / "scaled.nii.gz")
    assert values.dtype == torch.float32 and values.meta["medgan"]["nifti"]["scaled"]
    np.testing.assert_allclose(values.numpy(), np.arange(60).reshape(3, 4, 5) * 0.5 - 10.0)


def test_codes_description_and_shear(tmp_path):
    source = tmp_path / "codes.nii.gz"
    img = nib.Nifti1Image(_hu_volume(), _affine("lps"))
    img.set_qform(img.affine, code=0)
    img.set_sform(img.affine, code=2)
    nib.save(img, source)
    out = nib.load(write_nifti(read_nifti(source), tmp_path / "o.nii.gz", description="synthetic CT, model x"))
    assert (int(out.header["sform_code"]), int(out.header["qform_code"])) == (2, 2)
    assert out.header["descrip"].item().startswith(b"synthetic CT, model x")

    sheared = _affine("ras")
    sheared[1, 2] = 0.4  # gantry tilt kept in the affine
    image = MetaTensor(torch.from_numpy(_hu_volume()), affine=torch.from_numpy(sheared))
    back = nib.load(write_nifti(image, tmp_path / "shear.nii.gz"))
    assert int(back.header["qform_code"]) == 0 and int(back.header["sform_code"]) > 0
    np.testing.assert_allclose(back.affine, sheared, atol=1e-6)


def test_write_is_atomic(tmp_path, monkeypatch):
    image = MetaTensor(torch.from_numpy(_hu_volume()), affine=torch.from_numpy(_affine("ras")))
    target = tmp_path / "out.nii.gz"

    def failing_save(img, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", failing_save)
    with pytest.raises(OutputError, match="No space left"):
        write_nifti(image, target)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    write_nifti(image, target)
    with pytest.raises(OutputError, match="exists"):
        write_nifti(image, target, overwrite=False)


def test_input_not_modified(tmp_path):
    source = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(_hu_volume(), _affine("oblique")), source)
    before = tree_digest(source)
    write_nifti(read_nifti(source), tmp_path / "out.nii.gz")
    assert tree_digest(source) == before


def test_refuses_corrupted_gzip(tmp_path):
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(_hu_volume((40, 40, 20)), _affine("ras")), good)
    raw = bytearray(good.read_bytes())
    corrupt = tmp_path / "corrupt.nii.gz"
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    corrupt.write_bytes(bytes(raw))
    with pytest.raises(ImageFileError, match="corrupt.nii.gz"):
        read_nifti(corrupt)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageFileError, match="truncated.nii.gz"):
        read_nifti(truncated)
    not_gzip = tmp_path / "text.nii.gz"
    not_gzip.write_text("hello")
    with pytest.raises(ImageFileError, match="text.nii.gz"):
        read_nifti(not_gzip)


def _patch_dims(path: Path, dims) -> None:
    """Rewrite the dim field of a .nii.gz header in place (a corrupted header)."""
    header = bytearray(gzip.decompress(path.read_bytes()))
    header[40:56] = np.asarray([len(dims), *dims, *[1] * (7 - len(dims))], dtype="<i2").tobytes()
    path.write_bytes(gzip.compress(bytes(header)))


def test_refuses_zero_size_and_absurd_headers(tmp_path):
    zero = tmp_path / "zero.nii.gz"
    nib.save(nib.Nifti1Image(_hu_volume((4, 4, 4)), _affine("ras")), zero)
    _patch_dims(zero, (4, 0, 4))
    with pytest.raises(ImageFileError, match="zero-size"):
        read_nifti(zero)
    bomb = tmp_path / "bomb.nii.gz"
    nib.save(nib.Nifti1Image(_hu_volume((4, 4, 4)), _affine("ras")), bomb)
    _patch_dims(bomb, (30000, 30000, 30000))
    with pytest.raises(ImageFileError, match="bomb.nii.gz.*GiB"):
        read_nifti(bomb)
    short = tmp_path / "short.nii.gz"
    nib.save(nib.Nifti1Image(_hu_volume((4, 4, 4)), _affine("ras")), short)
    _patch_dims(short, (400, 400, 40))  # 12.8 MB declared, 128 bytes held
    with pytest.raises(ImageFileError, match="holds only"):
        read_nifti(short)


def test_validate_only_when_asked(tmp_path):
    data = np.zeros((5, 6, 7), dtype=np.float32)
    data[1, 2, 3] = np.nan
    data[2, 2, 2] = np.inf
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, _affine("ras")), path)
    assert tuple(read_nifti(path).shape) == (5, 6, 7)
    with pytest.raises(ImageFileError, match="nan.nii.gz: 2 voxel"):
        read_nifti(path, validate=True)

    four_d = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7, 2), dtype=np.int16), _affine("ras")), four_d)
    assert tuple(read_nifti(four_d).shape) == (5, 6, 7, 2)
    with pytest.raises(ImageFileError, match="expected a 3D volume"):
        read_nifti(four_d, validate=True)
    trailing = tmp_path / "trailing.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7, 1), dtype=np.int16), _affine("ras")), trailing)
    validate_volume(read_nifti(trailing), trailing)


def test_refuses_missing_and_non_nifti(tmp_path):
    with pytest.raises(ImageFileError, match="not found"):
        read_nifti(tmp_path / "missing.nii.gz")
    other = tmp_path / "image.mha"
    other.write_bytes(b"x")
    with pytest.raises(ImageFileError, match="not a NIfTI file name"):
        read_nifti(other)


# the real NIfTI files of ../shared/data; the 512x512x100 volumes are slow (gzip of 50 MB)
_REAL_SMALL = [
    "ct/abdomen_totalsegmentator/example_ct.nii.gz",
    "ct/abdomen_totalsegmentator/example_ct_sm.nii.gz",
    "ct/phantom_head_philips/thick5mm_kernelUB.nii.gz",
    "mr/abdomen_totalsegmentator/example_mr_sm.nii.gz",
    "templates_mni/scct.nii",
    "templates_mni/scct_stripped.nii",
    "templates_mni/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
]
_REAL_LARGE = [
    "ct/phantom_head_philips/thin1mm_kernelUB.nii.gz",
    "ct/phantom_head_philips/thin1mm_kernelYA.nii.gz",
    "mr/head_vs_seg_001/VS-SEG-001_t1_mpr_tra_gk_v4_2.nii.gz",
    "mr_ct_pair_porcine/mr_t2.nii.gz",
    "mr_ct_pair_porcine/ct_on_mr_grid.nii.gz",
]


def _check_real_round_trip(source: Path, out: Path) -> None:
    before = tree_digest(source)
    original = nib.load(source)
    write_nifti(read_nifti(source), out)
    back = nib.load(out)
    scaled = float(original.dataobj.slope) != 1.0 or float(original.dataobj.inter) != 0.0
    if scaled:  # stored as float32 with the scaling applied: equal within float32 rounding
        np.testing.assert_allclose(back.get_fdata(), original.get_fdata(), rtol=1e-6, atol=1e-6)
    else:
        assert back.get_data_dtype() == original.get_data_dtype()
        np.testing.assert_array_equal(np.asanyarray(back.dataobj), np.asanyarray(original.dataobj))
    np.testing.assert_allclose(back.affine, original.affine, rtol=0, atol=1e-5)
    assert int(back.header["qform_code"]) > 0 and int(back.header["sform_code"]) > 0
    assert tree_digest(source) == before


@pytest.mark.realdata
@pytest.mark.parametrize("relative", _REAL_SMALL)
def test_real_round_trip(real_file, tmp_path, relative):
    source = real_file(relative)
    _check_real_round_trip(source, tmp_path / ("out" + "".join(source.suffixes)))


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("relative", _REAL_LARGE)
def test_real_round_trip_large(real_file, tmp_path, relative):
    source = real_file(relative)
    _check_real_round_trip(source, tmp_path / ("out" + "".join(source.suffixes)))
