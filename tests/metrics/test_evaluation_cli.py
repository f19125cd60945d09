"""``medgan evaluate`` on files written to a temporary folder: one case, a results folder, errors."""

from __future__ import annotations

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medgan.cli import main
from medgan.metrics import body_mask_from_ct, evaluate_pair

AFFINE = np.diag([0.8, 0.8, 2.0, 1.0])


def _head(shape=(48, 44, 20), seed=0):
    """A water disc with a bone ring in air, plus smooth texture (HU)."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(shape[0]) - shape[0] / 2, np.arange(shape[1]) - shape[1] / 2, indexing="ij")
    radius = np.sqrt(x**2 + y**2)[..., None] * np.ones(shape)
    volume = np.where(radius < 18, 1000.0, -1000.0) + np.where(radius < 15, -960.0, 0.0)
    return (volume + ndimage.gaussian_filter(rng.normal(0, 200, shape), 2)).astype(np.float32)


def _save(array, path, affine=AFFINE):
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def test_single_case_json_matches_library(tmp_path, capsys):
    target = _head()
    pred = target + np.random.default_rng(1).normal(0, 15, target.shape).astype(np.float32)
    _save(target, tmp_path / "t.nii.gz")
    _save(pred, tmp_path / "p.nii.gz")
    out = tmp_path / "m.json"
    code = main(["evaluate", "--pred", str(tmp_path / "p.nii.gz"), "--target", str(tmp_path / "t.nii.gz"),
                 "--profile", "synthrad2023", "--mask", "auto", "--json", str(out)])
    assert code == 0
    written = json.loads(out.read_text())
    expected = evaluate_pair(pred, target, "synthrad2023", mask=body_mask_from_ct(target))
    for key, value in expected.items():
        assert written["metrics"][key] == pytest.approx(value, rel=1e-6)
    assert json.loads(capsys.readouterr().out)["metrics"] == written["metrics"]


def test_mismatched_grid_is_refused_naming_both_files(tmp_path, capsys):
    target = _head()
    _save(target, tmp_path / "t.nii.gz")
    moved = AFFINE.copy()
    moved[:3, 3] = [1.0, 0.0, 0.0]
    _save(target, tmp_path / "p.nii.gz", affine=moved)
    code = main(["evaluate", "--pred", str(tmp_path / "p.nii.gz"), "--target", str(tmp_path / "t.nii.gz")])
    assert code == 2
    err = capsys.readouterr().err
    assert "p.nii.gz" in err and "t.nii.gz" in err and "affine" in err


def test_results_folder_against_manifest(tmp_path):
    data = tmp_path / "data"
    results = tmp_path / "results"
    data.mkdir()
    results.mkdir()
    rows = []
    for i, noise in enumerate((5.0, 40.0)):
        target = _head(seed=i)
        _save(target, data / f"ref{i}.nii.gz")
        _save(target + 100.0, data / f"in{i}.nii.gz")
        noisy = target + np.random.default_rng(10 + i).normal(0, noise, target.shape).astype(np.float32)
        if i == 0:  # a flat file per case
            _save(noisy, results / f"case{i}.nii.gz")
        else:  # the layout medgan run writes: <case_id>/pred.nii.gz
            (results / f"case{i}").mkdir()
            _save(noisy, results / f"case{i}" / "pred.nii.gz")
        rows.append(f"case{i},patient{i},in{i}.nii.gz,ref{i}.nii.gz,test")
    manifest = data / "manifest.csv"
    manifest.write_text("case_id,patient_id,source,target,split\n" + "\n".join(rows) + "\n")
    per_case = tmp_path / "out" / "per_case.csv"
    code = main(["evaluate", "--results", str(results), "--manifest", str(manifest), "--profile", "raw",
                 "-o", str(per_case)])
    assert code == 0
    with open(per_case) as handle:
        table = list(csv.DictReader(handle))
    assert [r["case_id"] for r in table] == ["case0", "case1"]
    maes = [float(r["mae_hu"]) for r in table]
    assert maes[0] < maes[1]  # the noisier prediction is worse
    assert maes[0] == pytest.approx(5.0 * math.sqrt(2 / math.pi), rel=0.05)  # E|N(0, s)| = s sqrt(2/pi)
    summary = json.loads((tmp_path / "out" / "per_case.summary.json").read_text())
    assert summary["n_cases"] == 2
    assert summary["metrics"]["mae_hu"]["mean"] == pytest.approx(np.mean(maes), rel=1e-5)

    (results / "case1" / "pred.nii.gz").unlink()
    code = main(["evaluate", "--results", str(results), "--manifest", str(manifest), "-o", str(per_case)])
    assert code == 2  # a missing prediction is an error, not a silently shorter table


def test_cli_lists_every_profile():
    from medgan.cli.evaluation_commands import _PROFILE_NAMES
    from medgan.metrics import PROFILES

    assert tuple(PROFILES) == _PROFILE_NAMES
