"""Unit conversions and MetaTensor <-> SimpleITK geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from medgan.registration import cormack_to_hu, hu_to_cormack
from medgan.registration._sitk import metatensor_to_sitk, sitk_to_metatensor


def test_cormack_round_trip_and_anchor_points():
    hu = np.array([-1024.0, -500.0, -124.0, 0.0, 40.0, 76.0, 500.0, 2000.0])
    c = hu_to_cormack(hu)
    np.testing.assert_allclose(c[[0, 2, 5]], [0.0, 900.0, 2900.0], atol=1e-3)
    np.testing.assert_allclose(cormack_to_hu(c), hu, atol=1e-3)
    assert np.all(np.diff(c) > 0)  # monotone


@pytest.mark.realdata
def test_ct_template_in_hu_has_brain_and_air_where_expected(real_file):
    image = sitk.ReadImage(str(real_file("templates_mni/scct.nii")))
    cormack = sitk.GetArrayFromImage(image)
    assert cormack.min() >= 0 and cormack.max() > 3000  # not HU: no negative values at all
    hu = cormack_to_hu(cormack)
    centre = hu[40:50, 50:60, 40:50]  # deep brain in the 2 mm MNI grid (z, y, x)
    assert 15.0 < float(np.median(centre)) < 60.0
    assert float(np.percentile(hu, 2)) < -950.0  # air around the head


def test_metatensor_sitk_round_trip_keeps_world_coordinates():
    rng = np.random.default_rng(3)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.array([0.8, 1.2, 2.5])
    affine[:3, 3] = [-20.0, 31.0, 7.5]
    volume = MetaTensor(torch.from_numpy(rng.normal(size=(7, 5, 4)).astype(np.float32)), affine=torch.tensor(affine))
    image = metatensor_to_sitk(volume)
    index = (6, 2, 3)
    ras = affine @ np.array([*index, 1.0])
    lps = np.array(image.TransformIndexToPhysicalPoint(index))
    np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-6)
    assert image.GetPixel(*index) == pytest.approx(float(volume[index]))
    back = sitk_to_metatensor(image)
    np.testing.assert_allclose(np.asarray(back.affine), affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(back), np.asarray(volume))
