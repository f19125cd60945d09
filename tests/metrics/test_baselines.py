"""Classical baselines: each does what it claims on synthetic data with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy.special import erf

from medgan.metrics.baselines import (bilateral_denoise, estimate_noise_sd, gaussian_blur, gaussian_denoise,
                                      nlm_denoise, unsharp_mask, upsample_z)
from medgan.metrics.image_quality import edge_sharpness

SPACING = (0.5, 0.5, 2.0)


def _disc(sigma_mm=0.7, shape=(96, 96, 3)):
    x, y = np.meshgrid(np.arange(shape[0]) * 0.5 - 24, np.arange(shape[1]) * 0.5 - 24, indexing="ij")
    profile = 0.5 * (1 + erf((16 - np.sqrt(x**2 + y**2)) / (np.sqrt(2) * sigma_mm)))
    return np.repeat((-1000 + 1040 * profile)[..., None], shape[2], axis=2).astype(np.float32)


@pytest.fixture(scope="module")
def noisy_pair():
    clean = _disc()
    noisy = clean + np.random.default_rng(0).normal(0, 30, clean.shape).astype(np.float32)
    return clean, noisy


def _rmse(a, b):
    return float(np.sqrt(np.mean((a.astype(np.float64) - b) ** 2)))


def test_noise_estimate(noisy_pair):
    assert estimate_noise_sd(noisy_pair[1]) == pytest.approx(30.0, rel=0.15)


@pytest.mark.parametrize("denoise", [
    lambda v: gaussian_denoise(v, SPACING, sigma_mm=0.6),
    lambda v: bilateral_denoise(v, SPACING),
    lambda v: nlm_denoise(v),
], ids=["gaussian", "bilateral", "nlm"])
def test_denoisers_reduce_the_error_and_leave_the_input(noisy_pair, denoise):
    clean, noisy = noisy_pair
    before = noisy.copy()
    out = denoise(noisy)
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert _rmse(out, clean) < 0.75 * _rmse(noisy, clean)
    np.testing.assert_array_equal(noisy, before)


@pytest.mark.parametrize("method", ["bspline", "windowed_sinc"])
def test_upsample_z_reproduces_a_smooth_profile_and_updates_the_affine(method):
    z_fine = np.arange(41) * 0.5
    truth = 100 * np.sin(2 * np.pi * z_fine / 20.0)  # 20 mm period, well sampled at 2 mm
    coarse = np.broadcast_to(truth[::4], (8, 8, 11)).astype(np.float32)
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[:3, 3] = [-10, 5, 30]
    out = upsample_z(MetaTensor(torch.from_numpy(coarse.copy()), affine=torch.from_numpy(affine)), 4, method=method)
    assert out.shape == (8, 8, 41)
    np.testing.assert_allclose(out.affine.numpy()[:3, 2], [0, 0, 0.5])
    np.testing.assert_allclose(out.affine.numpy()[:3, 3], [-10, 5, 30])
    error = np.abs(np.asarray(out)[4, 4, 4:-4] - truth[4:-4])  # away from the ends
    assert error.max() < 3.0  # linear interpolation would miss by up to ~3 % of 100 HU between samples
    np.testing.assert_allclose(np.asarray(out)[4, 4, ::4], truth[::4], atol=1e-3)  # original slices kept


def test_blur_widens_and_unsharp_narrows_the_edge():
    sharp = _disc(sigma_mm=0.7, shape=(96, 96, 2))
    width = edge_sharpness(sharp, SPACING, half_length_mm=4.0)["esf_10_90_mm"]
    blurred = edge_sharpness(gaussian_blur(sharp, SPACING, sigma_mm=1.0), SPACING, half_length_mm=4.0)
    sharpened = edge_sharpness(unsharp_mask(sharp, SPACING, sigma_mm=1.0, amount=1.0), SPACING, half_length_mm=4.0)
    assert blurred["esf_10_90_mm"] == pytest.approx(2.563 * np.hypot(0.7, 1.0), rel=0.1)
    assert sharpened["esf_10_90_mm"] < 0.85 * width
