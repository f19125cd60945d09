"""``medgan demo``: the main job runs the kernel bundle end to end on the embedded phantom."""

from __future__ import annotations

import csv
import json

from medgan.cli import main

SMALL = ["--shape", "192", "192", "16", "--spacing-mm", "0.7", "0.7", "1.0", "--device", "cpu"]


def test_demo_runs_the_bundle_and_writes_nifti_dicom_and_report(tmp_path, capsys):
    from medgan.io import load_volume
    from medgan.io.nifti import read_nifti

    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "every check passed" in printed and "medgan run ct_kernel_conversion" in printed
    assert sorted(p.name for p in out.iterdir()) == ["demo_summary.json", "input_dicom", "results"]
    case = out / "results" / "phantom"
    assert sorted(p.name for p in case.iterdir()) == ["dicom", "pred.json", "pred.nii.gz"]
    with open(out / "results" / "summary.csv", newline="") as handle:
        assert [row["status"] for row in csv.DictReader(handle)] == ["ok"]
    pred, source = read_nifti(case / "pred.nii.gz"), load_volume(out / "input_dicom")
    assert pred.meta["medgan"]["nifti"]["descrip"].startswith("SYNTHETIC medgan ct_kernel_conversion")
    assert tuple(pred.shape) == (192, 192, 16) and abs(pred.float() - source.float()).mean() > 1.0
    html = (out / "results" / "report.html").read_text()
    assert "<img" in html and "phantom" in html
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["derived_dicom"]["study_same_as_reference"] and summary["derived_dicom"]["series_uid_new"]
    assert summary["bundle"]["name"] == "ct_kernel_conversion" and summary["bundle"]["device"] == "cpu"
    # a second run replaces the first one's outputs
    assert main(["demo", "--output-dir", str(out), *SMALL]) == 0
    assert sorted(p.name for p in case.iterdir()) == ["dicom", "pred.json", "pred.nii.gz"]


def test_demo_refuses_a_phantom_grid_the_bundle_does_not_accept(tmp_path, capsys):
    code = main(["demo", "--output-dir", str(tmp_path / "demo"), "--shape", "64", "64", "12",
                 "--spacing-mm", "3.6", "3.6", "16", "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "spacing" in err and "--spacing-mm" in err and "Traceback" not in err
