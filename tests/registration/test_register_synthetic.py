"""Registration on a synthetic phantom: recovery, QC failures, outputs, MONAI transforms and the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medgan.cli import main
from medgan.errors import RegistrationError
from medgan.registration import (
    ImageRegistration,
    RegisterToFixedd,
    register_files,
    transform_from_dict,
)
from medgan.registration._sitk import metatensor_to_sitk, sitk_to_metatensor
from medgan.registration.evaluation import (
    apply_known_transform,
    body_points,
    random_transform,
    target_registration_error,
)
from medgan.registration.register import jacobian_range

from ._phantom import head_phantom

FAST = {"working_spacing_mm": 3.0, "iterations": 100}


@pytest.fixture(scope="module")
def ct_mr_pair():
    """Fixed MR phantom and a CT phantom moved by a known rigid transform ``S`` (moving -> source)."""
    fixed = head_phantom("MR", seed=1)
    known = random_transform(np.random.default_rng(7), centre_mm=(0.0, 0.0, 0.0))
    moving = apply_known_transform(head_phantom("CT", seed=2), known)
    return fixed, moving, known


def test_multimodal_rigid_recovers_known_transform(ct_mr_pair):
    fixed, moving, known = ct_mr_pair
    result = ImageRegistration(mode="rigid", **FAST)(fixed, moving)
    tre = target_registration_error(result.transform, known.GetInverse(), body_points(fixed, 6.0))
    assert tre.mean() < 1.0 and tre.max() < 2.0, tre
    qc = result.qc
    assert qc.passed and qc.metric_after < qc.metric_before and qc.mask_dice_after > qc.mask_dice_before
    assert qc.jacobian_min is None  # only measured for deformable
    assert result.registered.GetSize() == fixed.GetSize()


def test_deformable_reports_jacobian_and_refuses_folding(ct_mr_pair):
    fixed, moving, _ = ct_mr_pair
    settings = dict(mode="deformable", bspline_grid_spacing_mm=60.0, bspline_iterations=10, bspline_samples=5000,
                    **FAST)
    # a threshold no transform meets: QC must refuse and report the measured Jacobian range
    with pytest.raises(RegistrationError, match=r"Jacobian determinant min (\S+) <= 1.5") as caught:
        ImageRegistration(min_jacobian=1.5, **settings)(fixed, moving)
    low, high = (float(v) for v in re.search(r"Jacobian determinant ([\d.]+)\.\.([\d.]+)", str(caught.value)).groups())
    # a plausible, fold-free range (the exact values move with ITK's thread count: each thread samples
    # the metric on its own, so the range need not straddle 1)
    assert 0.0 < low <= high < 2.0 and low < 1.5
    assert "NOT aligned" in str(caught.value)


def test_jacobian_range_detects_a_fold():
    reference = head_phantom("CT", size=(20, 20, 20))
    bspline = sitk.BSplineTransformInitializer(reference, [2, 2, 2], order=3)
    parameters = np.zeros(len(bspline.GetParameters()))
    parameters[: len(parameters) // 3] = np.random.default_rng(0).normal(0.0, 40.0, len(parameters) // 3)
    bspline.SetParameters(parameters.tolist())
    assert jacobian_range(bspline, reference)[0] <= 0.0
    assert jacobian_range(sitk.Euler3DTransform(), reference) == pytest.approx((1.0, 1.0))


def test_empty_or_unrelated_moving_image_raises(ct_mr_pair):
    fixed, _, _ = ct_mr_pair
    empty = sitk.Image(fixed.GetSize(), sitk.sitkFloat32)
    empty.CopyInformation(fixed)
    with pytest.raises(RegistrationError, match="constant"):
        ImageRegistration(**FAST)(fixed, empty)
    noise = sitk.GetImageFromArray(np.random.default_rng(0).normal(0, 1, (48, 64, 56)).astype(np.float32))
    noise.CopyInformation(fixed)
    with pytest.raises(RegistrationError, match="Dice"):
        ImageRegistration(**FAST)(fixed, noise)


def test_register_files_writes_outputs_and_nothing_on_failure(tmp_path, ct_mr_pair):
    fixed, moving, _ = ct_mr_pair
    sitk.WriteImage(fixed, str(tmp_path / "fixed.nii.gz"))
    sitk.WriteImage(sitk.Cast(moving, sitk.sitkInt16), str(tmp_path / "moving.nii.gz"))
    out = tmp_path / "out"
    paths = register_files(tmp_path / "fixed.nii.gz", tmp_path / "moving.nii.gz", out, ImageRegistration(**FAST))
    assert sorted(p.name for p in out.iterdir()) == ["qc.json", "qc.png", "registered.nii.gz", "transform.tfm"]
    registered = sitk.ReadImage(str(paths["registered"]))
    assert registered.GetPixelID() == sitk.sitkInt16 and registered.GetSize() == fixed.GetSize()
    record = json.loads(paths["qc_json"].read_text())
    assert record["qc"]["passed"] and record["qc"]["mask_dice_after"] >= 0.8
    transform = sitk.ReadTransform(str(paths["transform"]))
    point = (10.0, -20.0, 5.0)
    assert np.allclose(transform.TransformPoint(point), paths and sitk.ReadTransform(str(paths["transform"]))
                       .TransformPoint(point))
    assert paths["qc_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    blank = sitk.Image(fixed.GetSize(), sitk.sitkInt16)
    blank.CopyInformation(fixed)
    sitk.WriteImage(blank, str(tmp_path / "blank.nii.gz"))
    failed = tmp_path / "failed"
    with pytest.raises(RegistrationError):
        register_files(tmp_path / "fixed.nii.gz", tmp_path / "blank.nii.gz", failed, ImageRegistration(**FAST))
    assert not failed.exists() or not any(failed.iterdir())
    # the CLI: a QC failure is exit code 2 with the figures, nothing written
    code = main(["register", "--fixed", str(tmp_path / "fixed.nii.gz"), "--moving", str(tmp_path / "blank.nii.gz"),
                 "-o", str(failed), "--working-spacing-mm", "3"])
    assert code == 2 and (not failed.exists() or not any(failed.iterdir()))


def test_dict_transform_stores_qc_and_transform(ct_mr_pair):
    fixed, moving, known = ct_mr_pair
    data = {"target": sitk_to_metatensor(fixed), "source": sitk_to_metatensor(moving)}
    data["source"].meta["filename_or_obj"] = "moving.nii.gz"
    out = RegisterToFixedd(keys="source", fixed_key="target", registration=ImageRegistration(**FAST))(data)
    registered = out["source"]
    assert tuple(registered.shape) == tuple(data["target"].shape)
    assert torch.allclose(registered.affine, data["target"].affine)
    record = registered.meta["medgan"]["RegisterToFixed"]
    assert record["qc"]["passed"]
    json.dumps(record)  # JSON-serialisable metadata
    rebuilt = transform_from_dict(record["transform"])
    tre = target_registration_error(rebuilt, known.GetInverse(), body_points(fixed, 6.0))
    assert tre.mean() < 1.0
    # the output really is the moving image aligned: correlate with a direct resampling through the truth
    truth = sitk.Resample(metatensor_to_sitk(data["source"]), fixed, known.GetInverse(), sitk.sitkLinear, -1000.0)
    a, b = sitk.GetArrayFromImage(truth).ravel(), sitk.GetArrayFromImage(metatensor_to_sitk(registered)).ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.95
