"""Lesion-insertion harness: partial-volume spheres, placement, contrast retained, CNR, spurious blobs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from medgan.metrics.lesions import (Lesion, insert_lesions, lesion_fraction, measure_lesions, place_lesions,
                                    spurious_structure)


def _soft_tissue_block(shape=(64, 64, 24), noise_hu=10.0, seed=0) -> np.ndarray:
    """Air around a 40 HU block with white noise: homogeneous tissue with edges."""
    rng = np.random.default_rng(seed)
    volume = np.full(shape, -1000.0, dtype=np.float32)
    volume[8:-8, 8:-8, :] = 40.0
    return volume + rng.normal(0.0, noise_hu, shape).astype(np.float32)


@pytest.mark.parametrize("diameter_mm, spacing", [(5.0, (1.0, 1.0, 1.0)), (10.0, (0.7, 0.7, 2.0)),
                                                  (3.0, (0.5, 0.5, 0.5))])
def test_fraction_integrates_to_the_sphere_volume(diameter_mm, spacing):
    lesion = Lesion((20.3, 20.6, 10.1), diameter_mm, 1.0)
    _, fraction = lesion_fraction(lesion, spacing, (64, 64, 32))
    volume_mm3 = fraction.sum() * np.prod(spacing)
    assert volume_mm3 == pytest.approx(math.pi / 6 * diameter_mm ** 3, rel=0.03)
    assert fraction.max() == pytest.approx(1.0) and fraction.min() == 0.0


def test_insert_adds_contrast_with_partial_volume_and_keeps_the_input():
    volume = _soft_tissue_block()
    before = volume.copy()
    lesions = [Lesion((32.0, 32.0, 12.0), 10.0, -20.0), Lesion((20.0, 44.0, 12.0), 3.0, 100.0)]
    out = insert_lesions(volume, (1.0, 1.0, 1.0), lesions)
    np.testing.assert_array_equal(volume, before)
    difference = out - volume
    assert difference[32, 32, 12] == pytest.approx(-20.0)
    assert difference[32, 40, 12] == pytest.approx(0.0)  # 8 mm from the centre of a 10 mm sphere
    assert 0 < difference[20, 45, 12] < 100.0  # partial volume at the rim of the 3 mm lesion
    assert difference.sum() == pytest.approx(-20 * math.pi / 6 * 1000 + 100 * math.pi / 6 * 27, rel=0.03)


def test_identity_keeps_every_lesion_and_blurring_loses_small_ones():
    spacing = (1.0, 1.0, 1.0)
    volume = _soft_tissue_block()
    lesions = place_lesions(volume, spacing, [3.0, 5.0, 10.0], [-20.0, 20.0], seed=1)
    with_lesions = insert_lesions(volume, spacing, lesions)
    identity = measure_lesions(with_lesions, volume, lesions, spacing)
    assert all(row["retained"] == pytest.approx(1.0, abs=1e-5) for row in identity)
    assert all(row["cnr"] > 0 for row in identity)

    def blurred(sigma_vox: float):
        rows = measure_lesions(ndimage.gaussian_filter(with_lesions, sigma_vox), ndimage.gaussian_filter(volume, sigma_vox),
                               lesions, spacing)
        return {(row["diameter_mm"], row["contrast_hu"]): row["retained"] for row in rows}

    mild, strong = blurred(0.8), blurred(2.0)
    for key in mild:
        assert strong[key] < mild[key] < 1.0
    assert mild[(3.0, 20.0)] < mild[(5.0, 20.0)] < mild[(10.0, 20.0)]
    removed = measure_lesions(volume, volume, lesions, spacing)
    assert all(row["retained"] == 0.0 for row in removed)


def test_placement_stays_in_homogeneous_tissue_apart_and_refuses_overfilling():
    spacing = (1.0, 1.0, 2.0)
    volume = _soft_tissue_block()
    lesions = place_lesions(volume, spacing, [5.0, 10.0], [-10.0, 10.0, 100.0], copies=2, seed=4)
    assert len(lesions) == 12
    centres = np.array([lesion.centre_vox for lesion in lesions]) * np.asarray(spacing)
    for lesion, centre in zip(lesions, centres):
        i, j, k = (int(v) for v in lesion.centre_vox)
        assert 8 <= i < 56 and 8 <= j < 56
        others = np.delete(centres, list(map(tuple, centres)).index(tuple(centre)), axis=0)
        assert np.min(np.linalg.norm(others - centre, axis=1)) > lesion.diameter_mm
    with pytest.raises(ValueError, match="fit"):
        place_lesions(volume, spacing, [10.0], [20.0], copies=200)
    with pytest.raises(ValueError, match="no voxel"):
        place_lesions(np.full((32, 32, 8), -1000.0, np.float32), spacing, [5.0], [20.0])


def test_thin_slab_takes_lesions_with_a_radius_border():
    spacing = (0.5, 0.5, 1.0)
    slab = _soft_tissue_block(shape=(128, 128, 20))  # 20 slices of 1 mm: a 10 mm lesion cannot keep 10 mm from both faces
    with pytest.raises(ValueError, match="no voxel"):
        place_lesions(slab, spacing, [10.0], [20.0])
    lesions = place_lesions(slab, spacing, [10.0, 5.0], [20.0], border_mm=5.0, seed=1)
    assert len(lesions) == 2
    for lesion in lesions:  # centres at least radius + 1 voxel from every face
        assert 6 <= lesion.centre_vox[2] < 14 and 11 <= lesion.centre_vox[0] < 117


def test_spurious_structure_finds_a_planted_blob():
    spacing = (1.0, 1.0, 1.0)
    reference = _soft_tissue_block(noise_hu=0.0)
    clean = spurious_structure(reference, reference, spacing)
    assert clean["max_abs_hu"] == 0.0 and clean["fraction_above_threshold"] == 0.0
    planted = insert_lesions(reference, spacing, [Lesion((30.0, 30.0, 12.0), 6.0, 60.0)])
    found = spurious_structure(planted, reference, spacing, diameter_mm=5.0, threshold_hu=20.0)
    assert 30.0 < found["max_abs_hu"] <= 60.0 and found["fraction_above_threshold"] > 0
    noisy = reference + np.random.default_rng(2).normal(0, 20, reference.shape).astype(np.float32)
    assert spurious_structure(noisy, reference, spacing)["p99_abs_hu"] > spurious_structure(
        ndimage.gaussian_filter(noisy, 1.0), reference, spacing)["p99_abs_hu"]


@pytest.mark.realdata
def test_real_abdomen_lesions_measured_exactly_through_an_identity(real_file):
    from medgan.io import load_volume

    image = load_volume(real_file("ct/abdomen_totalsegmentator/example_ct_sm.nii.gz")).numpy().astype(np.float32)
    spacing = (3.0, 3.0, 3.0)
    lesions = place_lesions(image, spacing, [5.0, 10.0], [-20.0, 20.0], seed=0)
    for lesion in lesions:
        i, j, k = (int(v) for v in lesion.centre_vox)
        assert -50.0 < float(image[i - 1:i + 2, j - 1:j + 2, k].mean()) < 200.0
    with_lesions = insert_lesions(image, spacing, lesions)
    rows = measure_lesions(with_lesions, image, lesions, spacing)
    assert [row["retained"] for row in rows] == pytest.approx([1.0] * len(rows), abs=1e-5)
    five = [row for row in rows if row["diameter_mm"] == 5.0]
    assert all(abs(row["inserted_hu"]) == pytest.approx(20.0, rel=0.2) for row in five)


def _lowdose_pipeline():
    """``pipelines/train_lowdose_denoising.py`` as a module (pipelines are scripts, not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "pipelines" / "train_lowdose_denoising.py"
    spec = importlib.util.spec_from_file_location("train_lowdose_denoising", path)
    pipeline = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pipeline  # its dataclasses look their module up
    try:
        spec.loader.exec_module(pipeline)
    finally:
        sys.modules.pop(spec.name, None)
    return pipeline


@pytest.mark.realdata
def test_baselines_are_matched_on_the_noise_of_two_realisations(real_file):
    """The evaluation matches each filter to the model's noise measured from two noise realisations; a
    local SD of one image would call non-local means far quieter than it is."""
    from medgan.io import load_volume
    from medgan.metrics import baselines, body_mask_from_ct
    from medgan.metrics.image_quality import noise_sd
    from medgan.transforms.degradation import SimulateLowDose

    pipeline = _lowdose_pipeline()
    normal = load_volume(real_file("ct/abdomen_totalsegmentator/example_ct_sm.nii.gz")).float()
    spacing = [float(v) for v in np.linalg.norm(normal.affine[:3, :3].numpy(), axis=0)]
    lows = [np.rint(SimulateLowDose(0.25, seed=seed, num_threads=1)(normal).numpy()) for seed in (11, 12)]
    region = pipeline.noise_region(body_mask_from_ct(normal.numpy()))
    input_sd = pipeline.repeat_noise_sd(lows[0], lows[1], region)
    assert 35.0 < input_sd < 65.0  # the simulator's quarter-dose noise on abdominal CT

    def gaussian(low, sigma):
        return baselines.gaussian_denoise(low, spacing, sigma_mm=sigma * spacing[0])

    strength, image, repeat, tried = pipeline.matched_baseline(gaussian, lows[0], lows[1], (0.2, 4.0), 25.0, region, 7)
    assert len(tried) == 7 and 0.2 < strength < 4.0
    np.testing.assert_array_equal(repeat, gaussian(lows[1], strength))
    assert pipeline.repeat_noise_sd(image, repeat, region) == pytest.approx(25.0, abs=2.0)
    nlm = [baselines.nlm_denoise(low, h_factor=0.8, noise_sd_hu=input_sd) for low in lows]
    local = noise_sd(nlm[0], spacing, mask=body_mask_from_ct(normal.numpy()))["noise_sd_hu"]
    assert pipeline.repeat_noise_sd(nlm[0], nlm[1], region) > 2.0 * local


@pytest.mark.realdata
def test_training_lesions_stay_in_the_training_slices(real_file):
    """The low-dose pipeline's lesion augmentation never touches the gap or the held-out slab."""
    real_file("ct/abdomen_totalsegmentator/example_ct.nii.gz")
    pipeline = _lowdose_pipeline()
    source = pipeline.SOURCES["abdomen"]
    image = pipeline.load_hu(pipeline.DATA, source)
    lesioned, array, lesions = pipeline.with_training_lesions(image, source, copies=1, seed=1000)
    wanted = len(pipeline.TRAIN_LESION_DIAMETERS_MM) * len(pipeline.TRAIN_LESION_CONTRASTS_HU)
    assert len(lesions) == wanted and lesioned.shape == image.shape
    first_excluded = image.shape[2] - source.heldout_slices - source.gap_slices
    changed = np.abs(array - image.numpy()) > 0
    assert changed[:, :, :first_excluded].sum() > 0 and not changed[:, :, first_excluded:].any()
    assert np.allclose(np.asarray(lesioned.affine), np.asarray(image.affine))
    again = pipeline.with_training_lesions(image, source, copies=1, seed=1000)[2]
    assert again == lesions  # seeded: a rerun makes the same training pairs
