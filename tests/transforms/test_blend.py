"""BlendWithSource / BlendWithSourced: the fraction of the input put back into a denoised output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medgan.transforms.intensity import BlendWithSource, BlendWithSourced


def _pair(seed: int = 0):
    rng = np.random.default_rng(seed)
    source = torch.from_numpy(rng.normal(0.0, 0.1, size=(1, 12, 10, 8)).astype(np.float32))
    pred = MetaTensor(torch.from_numpy(rng.normal(0.0, 0.02, size=(1, 12, 10, 8)).astype(np.float32)),
                      affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])), meta={"filename_or_obj": "pred"})
    return pred, MetaTensor(source)


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_blend_is_the_stated_mixture_and_keeps_the_output_metadata(weight):
    pred, source = _pair()
    out = BlendWithSource(weight)(pred, source)
    expected = (1.0 - weight) * pred.as_tensor() + weight * source.as_tensor()
    np.testing.assert_allclose(out.as_tensor().numpy(), expected.numpy(), atol=1e-7)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "pred"
    np.testing.assert_array_equal(out.affine.numpy(), pred.affine.numpy())


def test_blend_dictionary_form_and_refusals():
    pred, source = _pair(1)
    out = BlendWithSourced("pred", source_key="image", weight=0.25)({"pred": pred, "image": source})
    np.testing.assert_allclose(out["pred"].as_tensor().numpy(),
                               (0.75 * pred.as_tensor() + 0.25 * source.as_tensor()).numpy(), atol=1e-7)
    assert out["image"] is source
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        BlendWithSource(1.5)
    with pytest.raises(ValueError, match="blend before any transform that changes the grid"):
        BlendWithSource(0.5)(pred, source[:, :6])


@pytest.mark.parametrize("sigma_vox", [0.7, 1.5])
def test_low_passed_restore_matches_scipy_and_keeps_metadata(sigma_vox):
    """``img + weight * G_sigma(source - img)`` against scipy's Gaussian (edges replicated, 4 sigma) on a real CT crop."""
    from scipy.ndimage import gaussian_filter

    pred, source = _pair(2)
    out = BlendWithSource(0.6, sigma_vox=sigma_vox)(pred, source)
    difference = (source.as_tensor() - pred.as_tensor()).numpy()
    expected = pred.as_tensor().numpy() + 0.6 * gaussian_filter(difference, [0, sigma_vox, sigma_vox, sigma_vox],
                                                                   mode="nearest", truncate=4.0)
    np.testing.assert_allclose(out.as_tensor().numpy(), expected, atol=1e-6)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "pred"
    np.testing.assert_array_equal(out.affine.numpy(), pred.affine.numpy())
    with pytest.raises(ValueError, match="sigma_vox"):
        BlendWithSource(0.5, sigma_vox=-1.0)


def test_low_pass_gives_back_a_lesion_and_little_of_the_noise(real_file):
    """On real CT: where the 'denoiser' removed white noise and a 10 mm lesion, the low-passed restore brings
    back over half of the lesion's contrast and a small part of the noise; the plain blend of the same weight
    brings back all of both in proportion."""
    from medgan.io import load_volume
    from medgan.metrics.lesions import Lesion, insert_lesions

    ct = load_volume(real_file("ct/abdomen_totalsegmentator/example_ct_sm.nii.gz")).float()
    spacing = [float(v) for v in np.linalg.norm(ct.affine[:3, :3].numpy(), axis=0)]
    clean = ct.numpy().astype(np.float32)
    centre = tuple(s // 2 for s in clean.shape)
    lesion = Lesion(centre_vox=centre, diameter_mm=10.0, contrast_hu=100.0)
    with_lesion = insert_lesions(clean, spacing, [lesion])
    noise = np.random.default_rng(0).normal(0.0, 40.0, clean.shape).astype(np.float32)
    source = torch.from_numpy(with_lesion + noise)[None]
    denoised = MetaTensor(torch.from_numpy(clean)[None])  # removed: the noise and the lesion
    plain = BlendWithSource(1.0, sigma_vox=0.0)(denoised, source).numpy()[0] - clean
    low = BlendWithSource(1.0, sigma_vox=0.7)(denoised, source).numpy()[0] - clean
    np.testing.assert_allclose(plain, with_lesion - clean + noise, atol=1e-3)
    core = tuple(slice(c - 1, c + 2) for c in centre)
    far = np.zeros(clean.shape, bool)
    far[:, : clean.shape[1] // 4] = True
    lesion_back = low[core].mean() / (with_lesion - clean)[core].mean()
    noise_back = low[far].std() / noise[far].std()
    assert lesion_back > 0.5  # measured 0.61 (3 mm grid)
    assert 0.15 < noise_back < 0.4  # white noise through a 0.7-voxel 3D Gaussian: 0.26 in theory, 0.27 measured


def test_inplane_highpass_matches_numpy_fft():
    from medgan.transforms.intensity.array import inplane_highpass

    values = np.random.default_rng(3).normal(size=(2, 40, 34, 5)).astype(np.float32)
    fx, fy = np.fft.fftfreq(40), np.fft.fftfreq(34)
    response = 1.0 - np.exp(-((np.sqrt(fx[:, None] ** 2 + fy[None, :] ** 2) / 0.25) ** 4))
    expected = np.real(np.fft.ifft2(np.fft.fft2(values, axes=(1, 2)) * response[None, :, :, None], axes=(1, 2)))
    np.testing.assert_allclose(inplane_highpass(torch.from_numpy(values), 0.25).numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="cycles per voxel"):
        BlendWithSource(0.0, highpass_weight=0.4, highpass_cutoff=0.7)


def test_texture_restore_brings_back_the_noise_power_spectrum_peak(real_file):
    """Real CT with simulated quarter-dose noise; a 'denoiser' that leaves only the coarse part of the noise
    moves the noise power spectrum's peak to low frequencies. Giving back 40 % of the fine in-plane band puts
    the peak back near the input noise's and the spectrum's shape with it, with the noise SD still well
    below the input's."""
    from medgan.io import load_volume
    from medgan.metrics import body_mask_from_ct
    from medgan.metrics.image_quality import noise_power_spectrum
    from medgan.transforms.degradation import SimulateLowDose
    from scipy.ndimage import gaussian_filter

    ct = load_volume(real_file("ct/abdomen_totalsegmentator/example_ct_sm.nii.gz")).float()
    spacing = [float(v) for v in np.linalg.norm(ct.affine[:3, :3].numpy(), axis=0)]
    clean = ct.numpy().astype(np.float32)
    noise = SimulateLowDose(0.25, seed=3, num_threads=1)(ct).numpy() - clean
    coarse = 0.5 * gaussian_filter(noise, (1.5, 1.5, 0.0))  # the part of it a denoiser leaves: coarse, halved
    out = BlendWithSource(0.0, highpass_weight=0.4, highpass_cutoff=0.25)(
        MetaTensor(torch.from_numpy(clean + coarse)[None]), torch.from_numpy(clean + noise)[None]).numpy()[0]
    mask = body_mask_from_ct(clean)
    zero = np.zeros_like(clean)

    def nps(image):  # the noise alone: NPS of image - 0
        return noise_power_spectrum(image, spacing, roi_size_vox=64, second=zero)  # 64-pixel ROIs tiling each slice

    reference, smoothed, restored = nps(noise), nps(coarse), nps(out - clean)
    peak = {name: r["peak_frequency_per_mm"] for name, r in (("reference", reference), ("smoothed", smoothed),
                                                             ("restored", restored))}
    assert peak["smoothed"] < 0.3 * peak["reference"]  # measured 0.026 vs 0.104 /mm
    assert abs(peak["restored"] - peak["reference"]) <= 0.25 * peak["reference"]  # measured 0.130
    shape = {name: np.corrcoef(reference["nps_radial_hu2mm2"], r["nps_radial_hu2mm2"])[0, 1]
             for name, r in (("smoothed", smoothed), ("restored", restored))}
    assert shape["smoothed"] < 0.0 < 0.5 < shape["restored"]  # measured -0.71 and 0.70
    assert np.std((out - clean)[mask]) < 0.6 * np.std(noise[mask])  # measured 0.37
