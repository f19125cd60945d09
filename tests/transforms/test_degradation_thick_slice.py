"""Simulated thick slices: profile weights, thick-volume geometry, and agreement with a scanner's own 5 mm slices."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medgan.errors import SimulationError
from medgan.transforms.degradation.thick_slice import (
    PROFILES,
    ThickSliceParameters,
    simulate_thick_slices,
    thick_slice_weights,
)

HEAD_THIN = "ct/phantom_head_philips/thin1mm_kernelUB.nii.gz"
HEAD_THICK = "ct/phantom_head_philips/thick5mm_kernelUB.nii.gz"


def _oblique_affine(spacing_z: float) -> np.ndarray:
    rotation = np.array([[np.cos(0.3), -np.sin(0.3), 0.0], [np.sin(0.3), np.cos(0.3), 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.7, spacing_z])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    return affine


@pytest.mark.parametrize("profile", PROFILES)
def test_weights_sum_to_one_are_symmetric_and_have_fwhm_thickness(profile):
    weights, centres = thick_slice_weights(60, 1.0, ThickSliceParameters(5.0, 5.0, profile))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    row = weights[5]  # an inner slice: the profile is not truncated
    centre = int(round(centres[5]))
    np.testing.assert_allclose(row[centre - 4: centre + 5], row[centre - 4: centre + 5][::-1], atol=1e-12)
    half = row[centre] / 2.0
    assert np.count_nonzero(row >= half * 0.999) in (4, 5, 6)  # about 5 thin slices above half maximum


def test_rectangular_5mm_is_the_plain_5_slice_mean_with_centred_affine():
    rng = np.random.default_rng(0)
    thin = rng.normal(size=(4, 3, 23)).astype(np.float32)
    affine = _oblique_affine(1.0)
    thick, thick_affine = simulate_thick_slices(thin, affine, ThickSliceParameters(5.0, 5.0, "rectangular"))
    assert thick.shape == (4, 3, 4)
    np.testing.assert_allclose(thick[..., 1], thin[..., 5:10].mean(axis=-1), atol=1e-6)
    for k in range(4):  # each thick slice centre is the centre of its five thin slices, in world mm
        expected = affine @ np.array([0.0, 0.0, 5 * k + 2.0, 1.0])
        np.testing.assert_allclose(thick_affine @ np.array([0.0, 0.0, k, 1.0]), expected, atol=1e-9)
    np.testing.assert_allclose(thick_affine[:3, :2], affine[:3, :2])


def test_partial_slices_and_overlapping_interval():
    thin = np.arange(20, dtype=np.float32)[None, None, :].repeat(2, 0).repeat(2, 1)  # value = slice index
    thick, affine = simulate_thick_slices(thin, np.diag([1.0, 1.0, 2.0, 1.0]),
                                          ThickSliceParameters(5.0, 2.5, "rectangular"))
    # 5 mm slabs over 2 mm slices every 2.5 mm: [0, 5] mm covers slices 0, 1 fully and half of 2;
    # [2.5, 7.5] covers 3/4 of 1, all of 2, 3/4 of 3; [5, 10] half of 2, all of 3 and 4
    expected = [(2 * 0 + 2 * 1 + 1 * 2) / 5, (1.5 * 1 + 2 * 2 + 1.5 * 3) / 5, (1 * 2 + 2 * 3 + 2 * 4) / 5]
    np.testing.assert_allclose(thick[0, 0, :3], expected, atol=1e-5)
    assert affine[2, 2] == pytest.approx(2.5) and affine[2, 3] == pytest.approx(1.5)  # first centre at 2.5 mm


def test_thinner_than_input_or_longer_than_volume_is_refused():
    with pytest.raises(SimulationError, match="cannot be made"):
        simulate_thick_slices(np.zeros((2, 2, 10)), np.diag([1.0, 1.0, 3.0, 1.0]), ThickSliceParameters(2.0))
    with pytest.raises(SimulationError, match="covers only"):
        simulate_thick_slices(np.zeros((2, 2, 4)), np.eye(4), ThickSliceParameters(5.0))
    with pytest.raises(SimulationError, match="profile"):
        ThickSliceParameters(5.0, profile="box")


@pytest.fixture(scope="module")
def head_pair(real_file):
    """Thin and thick real volumes, every other pixel in-plane (slab averaging is per pixel, so the MAE
    statistics hold; the affines are the files' own: only their slice axis is compared)."""
    import nibabel as nib

    thin, thick = nib.load(str(real_file(HEAD_THIN))), nib.load(str(real_file(HEAD_THICK)))
    return (np.asarray(thin.dataobj, dtype=np.float32)[::2, ::2], thin.affine,
            np.asarray(thick.dataobj, dtype=np.float32)[::2, ::2], thick.affine)


@pytest.mark.realdata
def test_simulated_5mm_matches_the_scanner_geometry_slice_by_slice(head_pair):
    thin, thin_affine, real, real_affine = head_pair
    for profile in PROFILES:
        simulated, affine = simulate_thick_slices(thin, thin_affine, ThickSliceParameters(5.0, 5.0, profile))
        assert simulated.shape == real.shape
        np.testing.assert_allclose(affine, real_affine, atol=1e-3)
    # the right slab: shifting the rectangular average by one thin slice makes it much worse
    rect = simulate_thick_slices(thin, thin_affine, ThickSliceParameters(5.0, 5.0, "rectangular"))[0]
    shifted = np.stack([thin[:, :, 5 * k + 1: 5 * k + 6].mean(-1) for k in range(19)], -1)
    assert np.abs(rect[..., :19] - real[..., :19]).mean() * 2 < np.abs(shifted - real[..., :19]).mean()


@pytest.mark.realdata
def test_triangular_profile_fits_the_scanner_better_than_a_plain_average_without_bias(head_pair):
    thin, thin_affine, real, _ = head_pair
    head = real > -500.0
    smooth = ndimage.uniform_filter(thin, (5, 5, 1))  # about 4.5 mm, as 9 pixels of the full grid
    homogeneous = ndimage.minimum_filter(((smooth >= 0) & (smooth <= 100)).astype(np.uint8), size=(4, 4, 9))
    tissue = homogeneous.astype(bool)[:, :, 2::5]  # tissue uniform over each slab
    assert tissue.sum() > 1500
    errors = {}
    for profile in PROFILES:
        simulated = simulate_thick_slices(thin, thin_affine, ThickSliceParameters(5.0, 5.0, profile))[0]
        difference = simulated - real
        errors[profile] = (float(np.abs(difference).mean()), float(np.abs(difference[head]).mean()))
        assert abs(float(difference[tissue].mean())) < 2.0, profile
    assert errors["rectangular"][0] == pytest.approx(6.2, abs=1.0)  # the documented plain 5-slice average
    assert errors["rectangular"][1] == pytest.approx(21.5, abs=2.0)
    assert errors["triangular"][0] < errors["rectangular"][0] and errors["triangular"][1] < errors["rectangular"][1]
