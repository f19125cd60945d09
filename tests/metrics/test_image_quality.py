"""Physics image quality: synthetic volumes with known answers, and the real smooth/sharp kernel pair."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import erf

from medgan.metrics.image_quality import (edge_sharpness, mean_hu_per_tissue, noise_power_spectrum, noise_sd,
                                          slice_sensitivity)

SPACING = (0.5, 0.5, 1.0)
GAUSS_10_90 = 2 * 1.2815516  # 10-90 % distance of a Gaussian-blurred step, in sigmas
GAUSS_MTF50 = np.sqrt(np.log(2) / 2) / np.pi  # MTF50 of a Gaussian LSF, times 1/sigma


def _uniform_noise(sd=20.0, shape=(128, 128, 8), seed=0):
    rng = np.random.default_rng(seed)
    return (40.0 + rng.normal(0, sd, shape)).astype(np.float32)


def _disc_edge(sigma_mm, noise_hu=5.0, seed=0):
    """A 35 mm radius water disc in air whose edge is an error function of ``sigma_mm``."""
    x, y = np.meshgrid(np.arange(200) * 0.5 - 50, np.arange(200) * 0.5 - 50, indexing="ij")
    profile = 0.5 * (1 + erf((35 - np.sqrt(x**2 + y**2)) / (np.sqrt(2) * sigma_mm)))
    volume = np.repeat((-1000 + 1040 * profile)[..., None], 4, axis=2)
    return (volume + np.random.default_rng(seed).normal(0, noise_hu, volume.shape)).astype(np.float32)


def test_noise_sd_of_white_noise():
    assert noise_sd(_uniform_noise(20.0), SPACING)["noise_sd_hu"] == pytest.approx(20.0, rel=0.05)
    assert noise_sd(_uniform_noise(8.0), SPACING)["noise_sd_hu"] == pytest.approx(8.0, rel=0.05)


def test_noise_sd_ignores_structure():
    volume = _uniform_noise(10.0)
    volume[40:80, 40:80, :] += 60.0  # a soft-tissue insert: its edges must not raise the noise level
    assert noise_sd(volume, SPACING)["noise_sd_hu"] == pytest.approx(10.0, rel=0.08)


def test_white_noise_has_flat_nps_whose_integral_is_the_variance():
    result = noise_power_spectrum(_uniform_noise(20.0), SPACING, roi_size_vox=32)
    radial = result["nps_radial_hu2mm2"][2:]  # the plane fit removes the lowest frequencies
    assert radial.std() / radial.mean() < 0.05
    assert radial.mean() == pytest.approx(20.0**2 * 0.5 * 0.5, rel=0.05)  # sigma^2 dx dy
    assert result["variance_hu2"] == pytest.approx(400.0, rel=0.05)
    freq = np.fft.fftfreq(32, 0.5)
    assert result["mean_frequency_per_mm"] == pytest.approx(np.hypot(freq[:, None], freq[None, :]).mean(), rel=0.03)


def test_blurred_noise_moves_the_nps_to_low_frequencies():
    white = _uniform_noise(20.0)
    blurred = ndimage.gaussian_filter(white - 40, (1, 1, 0)) + 40
    a = noise_power_spectrum(white, SPACING)
    b = noise_power_spectrum(blurred, SPACING)
    assert b["mean_frequency_per_mm"] < 0.5 * a["mean_frequency_per_mm"]
    assert b["peak_frequency_per_mm"] < 0.3


def test_nps_from_a_difference_image():
    first, second = _uniform_noise(20.0, seed=1), _uniform_noise(20.0, seed=2)
    result = noise_power_spectrum(first, SPACING, second=second)
    assert result["variance_hu2"] == pytest.approx(400.0, rel=0.05)


@pytest.mark.parametrize("sigma_mm", [0.6, 1.0, 1.5])
def test_edge_width_of_a_gaussian_blurred_edge(sigma_mm):
    result = edge_sharpness(_disc_edge(sigma_mm), SPACING)
    assert result["n_profiles"] > 500
    assert result["esf_10_90_mm"] == pytest.approx(GAUSS_10_90 * sigma_mm, rel=0.08)
    assert result["mtf50_per_mm"] == pytest.approx(GAUSS_MTF50 / sigma_mm, rel=0.08)


@pytest.mark.parametrize("sigma_mm", [1.0, 2.0])
def test_slice_sensitivity_of_a_gaussian_profile(sigma_mm):
    z = np.arange(120) * 0.5
    tilt = 0.075 * np.arange(40)[:, None, None] + 0.025 * np.arange(40)[None, :, None]  # sub-slice offsets
    height = z[None, None, :] - tilt
    slab = 0.5 * (1 + erf((height - 20) / (np.sqrt(2) * sigma_mm))) * 0.5 * (1 + erf((45 - height) / (np.sqrt(2) * sigma_mm)))
    volume = (-1000 + 1040 * slab).astype(np.float32)
    result = slice_sensitivity(volume, (0.5, 0.5, 0.5))
    assert result["ssp_fwhm_mm"] == pytest.approx(2.3548 * sigma_mm, rel=0.05)


def test_mean_hu_per_tissue_uses_the_reference_classes():
    reference = np.full((10, 10, 10), -1000.0, dtype=np.float32)
    reference[2:8, 2:8, 2:8] = 40.0
    reference[4:6, 4:6, 4:6] = 1000.0
    result = mean_hu_per_tissue(reference + 5.0, reference=reference)
    assert result["soft_tissue_mean_hu"] == pytest.approx(45.0)
    assert result["bone_mean_hu"] == pytest.approx(1005.0)
    assert result["bone_n_voxels"] == 8
    assert np.isnan(result["fat_mean_hu"])


@pytest.mark.realdata
def test_sharp_kernel_is_sharper_and_noisier(phantom_full):
    ub, ya, _ = phantom_full
    spacing = (0.451171875, 0.451171875, 1.0)
    ub, ya = ub[:, :, 30:60], ya[:, :, 30:60]
    edge_ub, edge_ya = edge_sharpness(ub, spacing), edge_sharpness(ya, spacing)
    assert edge_ya["esf_10_90_mm"] < 0.75 * edge_ub["esf_10_90_mm"]
    assert edge_ya["mtf50_per_mm"] > 1.5 * edge_ub["mtf50_per_mm"]
    assert noise_sd(ya, spacing)["noise_sd_hu"] > 3 * noise_sd(ub, spacing)["noise_sd_hu"]
    nps_ub, nps_ya = noise_power_spectrum(ub, spacing), noise_power_spectrum(ya, spacing)
    assert nps_ya["mean_frequency_per_mm"] > 1.4 * nps_ub["mean_frequency_per_mm"]


@pytest.mark.realdata
def test_thick_slices_have_a_wide_slice_profile(real_file):
    import nibabel as nib

    thin = np.asarray(nib.load(str(real_file("ct/phantom_head_philips/thin1mm_kernelUB.nii.gz"))).dataobj,
                      dtype=np.float32)
    thick = np.asarray(nib.load(str(real_file("ct/phantom_head_philips/thick5mm_kernelUB.nii.gz"))).dataobj,
                       dtype=np.float32)
    ssp_thin = slice_sensitivity(thin, (0.451171875, 0.451171875, 1.0))["ssp_fwhm_mm"]
    ssp_thick = slice_sensitivity(thick, (0.451171875, 0.451171875, 5.0))["ssp_fwhm_mm"]
    assert 0.8 < ssp_thin < 2.0
    assert 4.0 < ssp_thick < 7.0
