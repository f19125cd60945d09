"""Metric profiles against independent computations (scikit-image, plain scipy) and analytic cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage
from scipy.signal import fftconvolve
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medgan.errors import GeometryMismatchError, MedganError
from medgan.metrics import PROFILES, body_mask_from_ct, evaluate_pair
from medgan.metrics.profiles import ldct_window, synthrad2025_ms_ssim
from medgan.metrics.ssim import ssim_map

TOL = 1e-4


def _crop(array, pad):
    return array[pad:-pad, pad:-pad, pad:-pad]


# ---------------------------------------------------------------------------------------------- references
def _ref_synthrad2023(pred, target, mask):
    low, high = -1024.0, 3000.0
    t64, p64 = target.astype(np.float64), pred.astype(np.float64)
    mae = np.abs(t64 - p64)[mask].mean()
    psnr = peak_signal_noise_ratio(np.clip(t64, low, high)[mask], np.clip(p64, low, high)[mask],
                                   data_range=high - low)
    ts = np.where(mask, np.clip(t64, low, high), low) - low
    ps = np.where(mask, np.clip(p64, low, high), low) - low
    _, smap = structural_similarity(ts, ps, data_range=high - low, full=True)
    return mae, psnr, _crop(smap, 3)[_crop(mask, 3)].mean()


def _ref_lcs(x, y, data_range, weight):
    n = 7**3
    norm = n / (n - 1)
    ux, uy = ndimage.uniform_filter(x, 7), ndimage.uniform_filter(y, 7)
    vx = norm * (ndimage.uniform_filter(x * x, 7) - ux**2)
    vy = norm * (ndimage.uniform_filter(y * y, 7) - uy**2)
    vxy = norm * (ndimage.uniform_filter(x * y, 7) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    sx, sy = np.sqrt(np.maximum(vx, 0)), np.sqrt(np.maximum(vy, 0))
    lum = np.maximum((2 * ux * uy + c1) / (ux**2 + uy**2 + c1), 0)
    con = np.maximum((2 * sx * sy + c2) / (vx + vy + c2), 0)
    struc = np.maximum((vxy + c2 / 2) / (sx * sy + c2 / 2), 0)
    return lum**weight * con**weight * struc**weight


def _ref_synthrad2025_ms_ssim(pred, target, mask):
    low, high = -1024.0, 3071.0
    x = np.where(mask, np.clip(target.astype(np.float64), low, high), low) - low
    y = np.where(mask, np.clip(pred.astype(np.float64), low, high), low) - low
    m = mask.astype(np.float64)
    pads = [(max((97 - n) // 2, 0), max(97 - n - (97 - n) // 2, 0)) for n in x.shape]
    x, y, m = (np.pad(a, pads, mode="edge") for a in (x, y, m))
    value = 1.0
    for weight in (0.0448, 0.2856, 0.3001, 0.2363, 0.1333):
        smap = _ref_lcs(x, y, high - low, weight)
        value *= np.clip(_crop(smap, 3)[_crop(m, 3) > 0].mean(), 0, 1)
        box = np.ones((2, 2, 2)) / 8
        x, y = (fftconvolve(a, box, mode="same")[::2, ::2, ::2] for a in (x, y))
        m = m[::2, ::2, ::2]
    return value


# ---------------------------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_synthrad2023_matches_skimage(phantom_pair):
    ub, ya, _ = phantom_pair
    mask = body_mask_from_ct(ub)
    assert 0.2 < mask.mean() < 0.98  # the crop holds inside and outside of the phantom
    got = evaluate_pair(ya, ub, "synthrad2023", mask=mask)
    mae, psnr, ssim = _ref_synthrad2023(ya, ub, mask)
    assert got["mae_hu"] == pytest.approx(mae, abs=TOL)
    assert got["psnr_db"] == pytest.approx(psnr, abs=TOL)
    assert got["ssim"] == pytest.approx(ssim, abs=TOL)
    assert 0.3 < got["ssim"] < 0.999  # different kernels: similar but not equal


@pytest.mark.realdata
def test_synthrad2023_without_mask_is_skimage_mean(phantom_pair):
    ub, ya, _ = phantom_pair
    got = evaluate_pair(ya, ub, "synthrad2023")
    shifted = [np.clip(a.astype(np.float64), -1024, 3000) + 1024 for a in (ub, ya)]
    assert got["ssim"] == pytest.approx(structural_similarity(*shifted, data_range=4024.0), abs=TOL)


@pytest.mark.realdata
def test_synthrad2025_matches_reference(phantom_pair):
    ub, ya, _ = phantom_pair
    mask = body_mask_from_ct(ub)
    got = evaluate_pair(ya, ub, "synthrad2025", mask=mask)
    assert got["ms_ssim"] == pytest.approx(_ref_synthrad2025_ms_ssim(ya, ub, mask), abs=TOL)
    assert got["mae_hu"] == pytest.approx(np.abs(ya - ub)[mask].mean(), abs=TOL)
    clip = [np.clip(a.astype(np.float64), -1024, 3071)[mask] for a in (ub, ya)]
    assert got["psnr_db"] == pytest.approx(peak_signal_noise_ratio(*clip, data_range=4095.0), abs=TOL)
    assert 0.3 < got["ms_ssim"] < 0.999


@pytest.mark.realdata
@pytest.mark.parametrize("profile", ["ldct-chest", "ldct-abdomen", "ldct-neuro"])
def test_ldct_profiles_match_skimage_per_slice(phantom_pair, profile):
    ub, ya, _ = phantom_pair
    center, width = {"ldct-chest": (-600, 1500), "ldct-abdomen": (50, 400), "ldct-neuro": (40, 80)}[profile]

    def window(a):  # DICOM PS3.3 C.11.2.1.2, written out
        a = a.astype(np.float64)
        lower, upper = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
        out = ((a - (center - 0.5)) / (width - 1) + 0.5)
        return np.where(a <= lower, 0.0, np.where(a > upper, 1.0, out))

    wt, wp = window(ub), window(ya)
    ssims = [structural_similarity(wt[:, :, k], wp[:, :, k], data_range=1.0) for k in range(ub.shape[2])]
    psnrs = [10 * np.log10(1.0 / np.mean((wt[:, :, k] - wp[:, :, k]) ** 2)) for k in range(ub.shape[2])]
    got = evaluate_pair(ya, ub, profile)
    assert got["ssim"] == pytest.approx(np.mean(ssims), abs=TOL)
    assert got["psnr_db"] == pytest.approx(np.mean(psnrs), abs=TOL)
    assert got["n_slices"] == ub.shape[2]


@pytest.mark.realdata
def test_raw_matches_skimage_gaussian(phantom_pair):
    ub, ya, _ = phantom_pair
    mask = body_mask_from_ct(ub)
    got = evaluate_pair(ya, ub, "raw", mask=mask)
    t64, p64 = ub.astype(np.float64), ya.astype(np.float64)
    _, smap = structural_similarity(t64, p64, data_range=4095.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    assert got["ssim"] == pytest.approx(smap[mask].mean(), abs=TOL)
    assert got["psnr_db"] == pytest.approx(peak_signal_noise_ratio(t64[mask], p64[mask], data_range=4095.0), abs=TOL)
    assert got["rmse_hu"] == pytest.approx(np.sqrt(np.mean((t64 - p64)[mask] ** 2)), abs=TOL)
    assert got["mae_hu"] == pytest.approx(np.abs(t64 - p64)[mask].mean(), abs=TOL)


@pytest.mark.realdata
def test_slabs_do_not_change_the_map(phantom_pair):
    ub, ya, _ = phantom_pair
    whole = ssim_map(ub, ya, data_range=4095.0, window="gaussian", slab=1000)
    slabbed = ssim_map(ub, ya, data_range=4095.0, window="gaussian", slab=3)
    np.testing.assert_allclose(slabbed, whole, atol=1e-6)


@pytest.mark.realdata
def test_geometry_mismatch_names_both(phantom_pair):
    ub, ya, affine = phantom_pair
    shifted = affine.copy()
    shifted[0, 3] += 0.5
    with pytest.raises(GeometryMismatchError, match="different voxel-to-world"):
        evaluate_pair(MetaTensor(torch.from_numpy(ya), affine=torch.from_numpy(shifted)),
                      MetaTensor(torch.from_numpy(ub), affine=torch.from_numpy(affine)), "raw")
    with pytest.raises(GeometryMismatchError, match="shape"):
        evaluate_pair(ya[:, :, :-1], ub, "raw")


# ---------------------------------------------------------------------------------------------- analytic cases
def _smooth_volume(shape=(40, 36, 24), seed=0):
    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(rng.normal(0, 300, shape), 2) * 3).astype(np.float32)


def test_constant_offset_gives_offset_mae_and_closed_form_psnr():
    target = _smooth_volume()
    offset = 25.0
    pred = target + offset
    for profile, dr in (("synthrad2023", 4024.0), ("synthrad2025", 4095.0), ("raw", 4095.0)):
        got = evaluate_pair(pred, target, profile)
        assert got["mae_hu"] == pytest.approx(offset, abs=1e-3), profile
        assert got["psnr_db"] == pytest.approx(20 * math.log10(dr / offset), abs=1e-3), profile


def test_identical_images_are_perfect():
    target = _smooth_volume()
    for profile in PROFILES:
        got = evaluate_pair(target, target, profile)
        for key in ("ssim", "ms_ssim"):
            if key in got:
                assert got[key] == pytest.approx(1.0, abs=1e-6), profile
        assert math.isinf(got["psnr_db"]), profile


def test_mae_is_not_clipped_but_psnr_is():
    target = np.full((20, 20, 12), 3500.0, dtype=np.float32)  # above the SynthRAD 2023 range
    pred = target + 400.0
    got = evaluate_pair(pred, target, "synthrad2023")
    assert got["mae_hu"] == pytest.approx(400.0)
    assert math.isinf(got["psnr_db"])  # both clip to 3000


def test_mask_restricts_the_evaluation():
    target = _smooth_volume()
    pred = target.copy()
    mask = np.zeros(target.shape, dtype=bool)
    mask[10:30, 10:26, 6:18] = True
    pred[~mask] += 500.0  # errors only outside the mask
    got = evaluate_pair(pred, target, "synthrad2023", mask=mask)
    assert got["mae_hu"] == 0.0
    assert evaluate_pair(pred, target, "synthrad2023")["mae_hu"] > 100


def test_ldct_window_formula():
    values = np.array([-1000.0, -200.0, 50.0, 249.5, 1000.0]).reshape(5, 1, 1)
    np.testing.assert_allclose(ldct_window(values, 50.0, 400.0).ravel(),
                               [0.0, 0.0, 0.5 + 0.5 / 399, 1.0, 1.0], atol=1e-12)


def test_ms_ssim_drops_with_noise():
    target = _smooth_volume(shape=(48, 48, 40))
    rng = np.random.default_rng(1)
    small = synthrad2025_ms_ssim(target + rng.normal(0, 20, target.shape), target)
    large = synthrad2025_ms_ssim(target + rng.normal(0, 200, target.shape), target)
    assert 1.0 > small > large > 0.0


def test_unknown_profile_and_mask_on_unmasked_profile_are_refused():
    target = _smooth_volume()
    with pytest.raises(MedganError, match="unknown metric profile"):
        evaluate_pair(target, target, "psnr-of-my-own")
    with pytest.raises(MedganError, match="unmasked by definition"):
        evaluate_pair(target, target, "ldct-chest", mask=np.ones(target.shape, dtype=bool))
