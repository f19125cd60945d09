"""The HTML report over a results folder: self-contained, with metric, safety and provenance tables."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from medgan.errors import MedganError
from medgan.report.html import build_report
from medgan.report.layout import find_cases
from medgan.report.provenance import build_provenance, nifti_description, write_sidecar


def _results(tmp_path: Path, with_sidecar: bool = True) -> Path:
    from monai.data import MetaTensor

    from medgan.datasets.phantom import make_head_phantom
    from medgan.io.nifti import write_nifti

    clean = make_head_phantom(shape=(64, 64, 16), spacing_mm=(3.0, 3.0, 6.0))
    affine = np.asarray(clean.affine)
    reference = clean.numpy().astype(np.float32)
    noisy = reference + np.random.default_rng(1).normal(0, 60, reference.shape).astype(np.float32)
    pred = reference + 0.3 * (noisy - reference)  # a "denoiser" that removes 70% of the noise
    results = tmp_path / "results"
    case = results / "case_001"
    for name, values in (("input", noisy), ("reference", reference), ("pred", pred),
                         ("uncertainty", np.abs(pred - reference))):
        write_nifti(MetaTensor(np.round(values), affine=affine), case / f"{name}.nii.gz",
                    description=nifti_description("test", "0.1.0") if name == "pred" else None)
    if with_sidecar:
        record = build_provenance("ct_lowdose_denoising", "0.1.0", "c" * 64, [case / "input.nii.gz"], case_id="case_001",
                                  device="cpu", timing_s={"load": 0.5, "inference": 2.0},
                                  extra={"input_check": {"forced": True, "flags": [
                                      {"check": "spacing", "found": "3 x 3 x 6 mm", "accepted": "0.5 to 1 mm"}]},
                                      "uncertainty": {"method": "tta-flips", "score": 12.5},
                                      "lesions": [{"diameter_mm": 5, "contrast_hu": 20,
                                                   "retained_fraction": 0.93, "centre_ras_mm": [0.0, 0.0, 0.0]}],
                                      "notes": ["test data <not a model>"]})
        record["bundle"]["task"] = "ct_lowdose_denoising"
        write_sidecar(record, case / "pred.json")
    (results / "summary.csv").write_text("case_id,status\ncase_001,ok\ncase_002,failed: no input\n")
    (results / "case_002").mkdir()
    return results


def test_report_is_self_contained_and_complete(tmp_path):
    results = _results(tmp_path)
    out = build_report(results, tmp_path / "report.html", centre="lesion")
    text = out.read_text()
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)=["'](?!data:)""", text)  # no external asset
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 1
    assert "SYNTHETIC" in text and "test data &lt;not a model&gt;" in text
    assert "soft tissue W400/L40" in text  # task read from the sidecar
    assert "FORCED past: spacing" in text and "tta-flips" in text and "retained_fraction" in text
    assert "c" * 64 in text and "ct_lowdose_denoising v0.1.0" in text
    assert "failed: no input" in text  # run summary
    rows = re.findall(r"<tr><td>case_001</td><td>(output|input \(baseline\))</td><td class=\"num\">([0-9.]+)</td>", text)
    assert [r[0] for r in rows] == ["output", "input (baseline)"]
    mae_output, mae_input = float(rows[0][1]), float(rows[1][1])
    assert mae_output < mae_input  # the smoothed output is closer to the clean reference than the noisy input


def test_evaluation_tables_are_used_when_present(tmp_path):
    results = _results(tmp_path, with_sidecar=False)
    with open(results / "evaluation.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_id", "mae_hu"])
        writer.writerow(["case_001", "12.345"])
    (results / "evaluation.summary.json").write_text(json.dumps(
        {"profile": "synthrad2023", "description": "SynthRAD", "n_cases": 1, "metrics": {"mae_hu": {"mean": 12.345}}}))
    text = build_report(results, tmp_path / "r.html", task="ct_kernel_conversion").read_text()
    assert "From <code>evaluation.csv</code>" in text and "12.345" in text and "synthrad2023" in text
    assert "bone W2000/L500" in text and "not recorded" in text


def test_layout_and_refusals(tmp_path):
    results = _results(tmp_path)
    cases = find_cases(results)
    assert [c.case_id for c in cases] == ["case_001"]
    assert cases[0].uncertainty.name == "uncertainty.nii.gz" and cases[0].mask is None
    with pytest.raises(MedganError, match="no case"):
        find_cases(tmp_path / "results" / "case_002")
    with pytest.raises(MedganError, match="does not exist"):
        build_report(tmp_path / "nowhere", tmp_path / "r.html")
    with pytest.raises(MedganError, match="centre"):
        build_report(results, tmp_path / "r.html", centre="middle")
    (results / "case_001" / "pred.json").write_text("{broken")
    with pytest.raises(MedganError, match="sidecar"):
        find_cases(results)


def test_cli(tmp_path):
    from medgan.cli import main

    results = _results(tmp_path)
    assert main(["report", str(results), "-o", str(tmp_path / "cli.html"), "--views", "axial",
                 "--window", "W80/L40", "--centre", "0,0,0"]) == 0
    assert "W80/L40" in (tmp_path / "cli.html").read_text()
    assert main(["report", str(tmp_path / "none"), "-o", str(tmp_path / "x.html")]) == 2


@pytest.mark.slow
@pytest.mark.realdata
def test_demo_report_renders_in_chromium(tmp_path, data_root):
    """The demo report on the real head phantom renders in headless Chromium (skipped without chromium)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian package chromium)")
    from tests.report._demo import build_demo_results

    results = build_demo_results(tmp_path / "demo", data_root, z_slab=slice(40, 60))
    report = build_report(results, tmp_path / "demo.html")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", f"--screenshot={shot}",
                    "--window-size=1400,2000", report.resolve().as_uri()], check=True, timeout=120,
                   capture_output=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2000, 1400)
    assert pixels[..., :3].std() > 0.1  # a page with text and pictures, not a blank or error page
