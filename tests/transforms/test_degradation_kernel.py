"""Simulated reconstruction kernels: filters order edge width and noise as expected; FBP filters are exact."""

from __future__ import annotations

import numpy as np
import pytest

from medgan.datasets.phantom import make_head_phantom
from medgan.errors import SimulationError
from medgan.transforms.degradation.kernel import KernelParameters, simulate_kernel
from medgan.transforms.degradation.measure import edge_width_10_90, slice_difference_noise_sd, tissue_mask
from medgan.transforms.degradation.projector import (
    FILTER_NAMES,
    ParallelBeamGeometry,
    filter_window,
    make_filter,
    open_projector,
)

HEAD_UB = "ct/phantom_head_philips/thin1mm_kernelUB.nii.gz"
HEAD_YA = "ct/phantom_head_philips/thin1mm_kernelYA.nii.gz"
SMOOTH_TO_SHARP = [("hann", 0.5), ("hann", 1.0), ("shepp-logan", 1.0), ("ram-lak", 1.0)]


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    """Noiseless head phantom, (128, 128, 3) at 1.8 mm."""
    return make_head_phantom(shape=(128, 128, 3), spacing_mm=(1.8, 1.8, 3.0)).numpy().astype(np.float32)


@pytest.mark.parametrize("filter_name", FILTER_NAMES)
def test_fbp_of_a_disk_recovers_its_attenuation(filter_name):
    geometry = ParallelBeamGeometry(128, 128, 180)
    yy, xx = np.mgrid[:128, :128]
    disk = np.where((xx - 64) ** 2 + (yy - 64) ** 2 < 45 ** 2, 0.02, 0.0).astype(np.float32)
    with open_projector(geometry) as projector:
        image = projector.back(make_filter(geometry, filter_name, 1.0)(projector.forward(disk)))
    inner = (xx - 64) ** 2 + (yy - 64) ** 2 < 35 ** 2
    assert float(np.abs(image[inner] - 0.02).mean()) < 0.0004  # < 2 % of the value (20 HU of water)


def test_windows_fall_from_one_and_vanish_above_the_cutoff():
    freqs = np.linspace(0.0, 0.5, 11)
    for name in FILTER_NAMES:
        window = filter_window(name, 0.6, freqs)
        assert window[0] == pytest.approx(1.0) and np.all(np.diff(window) <= 1e-12)
        assert np.all(window[freqs > 0.3 + 1e-9] == 0.0)


def test_smooth_to_sharp_filters_order_edge_width_and_noise(phantom):
    widths, noises = [], []
    tissue = tissue_mask(phantom, 0.0, 100.0, 3)
    noisy = phantom + np.random.default_rng(0).normal(0.0, 20.0, phantom.shape).astype(np.float32)
    for name, cutoff in SMOOTH_TO_SHARP:
        image = simulate_kernel(phantom, KernelParameters(name, cutoff))
        widths.append(edge_width_10_90(image, 1.8))
        noise = simulate_kernel(noisy, KernelParameters(name, cutoff)) - image  # the filter is linear
        noises.append(float(noise[tissue].std()))
    assert widths == sorted(widths, reverse=True), widths
    assert noises == sorted(noises), noises
    assert widths[0] > 1.3 * widths[-1] and noises[-1] > 1.5 * noises[0]


def test_ram_lak_target_keeps_the_image(phantom):
    same = simulate_kernel(phantom, KernelParameters("ram-lak", 1.0))
    np.testing.assert_allclose(same, phantom, atol=1e-2)


def test_bad_filter_is_refused():
    with pytest.raises(SimulationError, match="unknown FBP filter"):
        KernelParameters("gaussian")
    with pytest.raises(SimulationError, match="cut-off"):
        KernelParameters("hann", cutoff=1.5)


@pytest.mark.realdata
@pytest.mark.slow
def test_real_kernel_pair_is_sharper_and_noisier_and_simulation_goes_the_same_way(real_file):
    import nibabel as nib

    ub = np.asarray(nib.load(str(real_file(HEAD_UB))).dataobj, dtype=np.float32)[:, :, 48:52]
    ya = np.asarray(nib.load(str(real_file(HEAD_YA))).dataobj, dtype=np.float32)[:, :, 48:52]
    tissue = tissue_mask(ub, 0.0, 100.0, 4)
    sharp = simulate_kernel(ub, KernelParameters("ram-lak", 1.0, reference_filter="hann", reference_cutoff=0.8))
    real_noise = slice_difference_noise_sd(ya, tissue) / slice_difference_noise_sd(ub, tissue)
    sim_noise = slice_difference_noise_sd(sharp, tissue) / slice_difference_noise_sd(ub, tissue)
    assert real_noise > 2.0 and 1.0 < sim_noise < real_noise
    assert edge_width_10_90(ya, 0.4512) < edge_width_10_90(sharp, 0.4512) < edge_width_10_90(ub, 0.4512)
