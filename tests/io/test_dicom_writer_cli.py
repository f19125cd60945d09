"""``medgan export-dicom`` and ``medgan demo`` through the command line entry point."""

from __future__ import annotations


import nibabel as nib
import numpy as np
import pydicom
import pytest

from medgan.cli import main
from medgan.datasets.phantom import make_head_phantom, write_phantom_dicom
from medgan.io.nifti import write_nifti
from tests.conftest import tree_digest


@pytest.fixture()
def case(tmp_path):
    reference = tmp_path / "ref"
    write_phantom_dicom(reference, shape=(40, 40, 6), spacing_mm=(5.0, 5.0, 20.0), noise_std_hu=0.0)
    volume = tmp_path / "sct.nii.gz"
    write_nifti(make_head_phantom((40, 40, 12), (5.0, 5.0, 10.0), noise_std_hu=3.0), volume)
    return reference, volume


def test_export_dicom_with_reference(case, tmp_path, capsys):
    reference, volume = case
    before = (tree_digest(reference), tree_digest(volume))
    code = main(["export-dicom", str(volume), str(tmp_path / "out"), "--reference", str(reference),
                 "--model", "mr_synthetic_ct 1.0", "--description", "sCT test"])
    assert code == 0
    assert "(new)" in capsys.readouterr().out
    files = sorted((tmp_path / "out").glob("*.dcm"))
    assert len(files) == 12
    ds = pydicom.dcmread(files[0])
    ref = pydicom.dcmread(next(reference.glob("*.dcm")))
    assert ds.SeriesDescription == "sCT test" and "mr_synthetic_ct 1.0" in ds.DerivationDescription
    assert ds.StudyInstanceUID == ref.StudyInstanceUID and ds.SeriesInstanceUID != ref.SeriesInstanceUID
    assert float(ds.SliceThickness) == 10.0
    assert (tree_digest(reference), tree_digest(volume)) == before  # inputs untouched


def test_export_dicom_needs_a_reference_or_new_study(case, tmp_path, capsys):
    _, volume = case
    assert main(["export-dicom", str(volume), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no reference series given" in err and "--new-study" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert main(["export-dicom", str(volume), str(tmp_path / "out"), "--new-study"]) == 0
    ds = pydicom.dcmread(sorted((tmp_path / "out").glob("*.dcm"))[0])
    assert ds.PatientName == "" and ds.StudyInstanceUID


def test_export_dicom_refuses_bad_volume(tmp_path, capsys):
    data = np.zeros((8, 8, 4), dtype=np.float32)
    data[0, 0, 0] = np.nan
    bad = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), bad)
    before = tree_digest(bad)
    assert main(["export-dicom", str(bad), str(tmp_path / "out"), "--new-study"]) == 2
    err = capsys.readouterr().err
    assert "nan.nii.gz" in err and "NaN" in err and "Traceback" not in err
    assert tree_digest(bad) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.nii.gz"]
