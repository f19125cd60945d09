"""Low-dose CT simulation: noise level and scaling on real abdominal CT, HU bias, FBP noise texture,
the fast path against the projection path, and clear refusals of non-CT input."""

from __future__ import annotations

import numpy as np
import pytest

from medgan.datasets.phantom import make_head_phantom
from medgan.errors import SimulationError
from medgan.transforms.degradation.lowdose import (
    LowDoseParameters,
    check_ct_hu,
    simulate_low_dose,
    simulate_low_dose_fast,
)
from medgan.transforms.degradation.measure import radial_nps, tissue_mask

ABDOMEN = "ct/abdomen_totalsegmentator/example_ct.nii.gz"
HEAD_THIN = "ct/phantom_head_philips/thin1mm_kernelUB.nii.gz"
MR_SMALL = "mr/abdomen_totalsegmentator/example_mr_sm.nii.gz"


def _load(path, slices=slice(None)) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)[:, :, slices]


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    """A small noisy head phantom in HU, (96, 96, 4) at 2.4 mm pixels."""
    return make_head_phantom(shape=(96, 96, 4), spacing_mm=(2.4, 2.4, 3.0), noise_std_hu=5.0, seed=1).numpy() \
        .astype(np.float32)


@pytest.fixture(scope="module")
def abdomen(real_file):
    """Every 4th slice of the real 3 mm abdominal CT, its soft-tissue mask, and the noise at 3 doses."""
    hu = _load(real_file(ABDOMEN), slice(None, None, 4))
    noise = {d: simulate_low_dose(hu, 3.0, LowDoseParameters(d, seed=11)) - hu for d in (0.5, 0.25, 0.1)}
    return hu, tissue_mask(hu, 0.0, 100.0, 1), noise


# ------------------------------------------------------------------ synthetic, always run
def test_same_seed_same_noise_other_seed_other_noise_input_untouched(phantom):
    before = phantom.copy()
    a = simulate_low_dose(phantom, 2.4, LowDoseParameters(0.25, seed=3))
    b = simulate_low_dose(phantom, 2.4, LowDoseParameters(0.25, seed=3), num_threads=1)
    c = simulate_low_dose(phantom, 2.4, LowDoseParameters(0.25, seed=4))
    np.testing.assert_array_equal(a, b)  # thread count does not change the draw
    assert np.abs(a - c).mean() > 1.0
    np.testing.assert_array_equal(phantom, before)


def test_noise_power_spectrum_is_fbp_shaped_not_white(phantom):
    noise = simulate_low_dose(phantom, 2.4, LowDoseParameters(0.1, seed=0)) - phantom
    _, nps = radial_nps(noise, 2.4, roi_px=32, n_bins=8)  # FBP noise fills the whole field of view
    _, white = radial_nps(np.random.default_rng(0).normal(size=noise.shape), 2.4, roi_px=32, n_bins=8)
    assert nps[0] < 0.4 * nps.max() and white[0] > 0.8 * white.max()  # ramp-shaped, not white
    assert np.all(np.diff(nps[:4]) > 0) and np.argmax(nps) >= 3


@pytest.mark.parametrize("reference_mm,expected_ratio", [(1.0, 1.0), (None, 2.0)])
def test_noise_on_a_finer_grid_follows_the_photon_convention(reference_mm, expected_ratio):
    """With I0 quoted for a reference pixel the same dose gives the same noise on any grid; per physical bin
    (fixed fluence) halving the pixel doubles the noise."""
    sds = []
    for shape, pixel_mm in (((80, 80, 1), 2.8), ((160, 160, 1), 1.4)):
        hu = make_head_phantom(shape=shape, spacing_mm=(pixel_mm, pixel_mm, 3.0)).numpy().astype(np.float32)
        params = LowDoseParameters(0.25, seed=1, i0_reference_pixel_mm=reference_mm, n_views=240)
        noise = simulate_low_dose(hu, pixel_mm, params) - hu
        sds.append(float(noise[tissue_mask(hu, 0.0, 100.0, 3 if pixel_mm < 2 else 1)].std()))
    assert sds[1] / sds[0] == pytest.approx(expected_ratio, rel=0.15)


@pytest.mark.parametrize("dose", [0.0, -0.1, 1.5, float("nan")])
def test_dose_fraction_outside_unit_interval_is_refused(dose):
    with pytest.raises(SimulationError, match=r"outside \(0, 1\]"):
        LowDoseParameters(dose, seed=0)


def test_volume_without_air_is_refused(phantom):
    inside = phantom[30:60, 30:60]  # a crop inside the head: no air
    with pytest.raises(SimulationError, match="air"):
        simulate_low_dose(inside, 2.4, LowDoseParameters(0.25, seed=0))


def test_raw_stored_ct_without_rescale_is_refused(phantom):
    with pytest.raises(SimulationError, match="Hounsfield"):
        check_ct_hu(phantom + 1024.0, "raw.nii.gz")


# ------------------------------------------------------------------ real data
@pytest.mark.realdata
def test_mr_given_to_the_ct_simulator_is_refused(real_file):
    path = real_file(MR_SMALL)
    with pytest.raises(SimulationError) as err:
        check_ct_hu(_load(path), str(path))
    assert "not a CT in Hounsfield units" in str(err.value) and str(path) in str(err.value)


@pytest.mark.realdata
def test_quarter_dose_noise_matches_mayo_range_on_abdomen(abdomen):
    _, tissue, noise = abdomen
    assert tissue.sum() > 2000
    sd = float(noise[0.25][tissue].std())
    assert 43.0 <= sd <= 59.0, sd


@pytest.mark.realdata
def test_noise_scales_with_inverse_sqrt_dose(abdomen):
    _, tissue, noise = abdomen
    reference = float(noise[0.25][tissue].std()) * np.sqrt(0.25)
    for dose in (0.5, 0.1):
        scaled = float(noise[dose][tissue].std()) * np.sqrt(dose)
        assert abs(scaled / reference - 1.0) < 0.10, (dose, scaled, reference)


@pytest.mark.realdata
def test_mean_hu_in_tissue_rois_moves_less_than_2_hu(abdomen):
    hu, tissue, noise = abdomen
    fat = tissue_mask(hu, -150.0, -50.0, 1)
    for dose in (0.5, 0.25, 0.1):
        for mask in (tissue, fat):
            assert abs(float(noise[dose][mask].mean())) < 2.0


@pytest.mark.realdata
def test_abdomen_nps_rises_from_zero_frequency(abdomen):
    _, _, noise = abdomen
    _, nps = radial_nps(noise[0.25], 3.0, roi_px=32, n_bins=8)
    assert nps[0] < 0.4 * nps.max() and np.all(np.diff(nps[:4]) > 0)


@pytest.mark.realdata
def test_fast_path_matches_projection_path(abdomen):
    hu, tissue, noise = abdomen
    fast = simulate_low_dose_fast(hu, 3.0, LowDoseParameters(0.25, seed=5)) - hu
    assert abs(float(fast[tissue].std()) / float(noise[0.25][tissue].std()) - 1.0) < 0.10
    freqs, nps_ref = radial_nps(noise[0.25], 3.0, roi_px=32, n_bins=8)
    _, nps_fast = radial_nps(fast, 3.0, roi_px=32, n_bins=8)
    assert freqs[np.argmax(nps_fast)] == pytest.approx(freqs[np.argmax(nps_ref)], rel=0.15)
    assert np.abs(nps_fast / nps_ref.max() - nps_ref / nps_ref.max()).max() < 0.15


@pytest.mark.realdata
@pytest.mark.slow
def test_head_phantom_quarter_dose_noise_and_bias(real_file):
    hu = _load(real_file(HEAD_THIN), slice(48, 52))
    noise = simulate_low_dose(hu, 0.4512, LowDoseParameters(0.25, seed=2)) - hu
    brain = tissue_mask(hu, 0.0, 100.0, 3)
    assert 5.0 < float(noise[brain].std()) < 15.0  # a head is far more transparent than an abdomen
    assert abs(float(noise[brain].mean())) < 2.0
