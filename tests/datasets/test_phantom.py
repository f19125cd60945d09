"""The digital head phantom: tissue values where the anatomy puts them, lesions of the stated size
and contrast, seeded noise of the stated level, geometry independent of the grid."""

from __future__ import annotations

import numpy as np
import pytest

from medgan.datasets.phantom import (
    AIR_HU, CORTICAL_BONE_HU, CSF_HU, DIPLOE_HU, DEFAULT_LESIONS, FAT_HU, MIN_HU, WHITE_MATTER_HU, PhantomLesion,
    make_head_phantom, phantom_affine,
)

_SHAPE = (128, 128, 48)
_SPACING = (1.8, 1.8, 4.0)


def _value_at(image, ras_mm):
    """HU of the voxel nearest to a RAS point."""
    ijk = np.linalg.solve(image.affine.numpy(), np.append(np.asarray(ras_mm, dtype=float), 1.0))[:3]
    return int(image.numpy()[tuple(np.rint(ijk).astype(int))])


@pytest.fixture(scope="module")
def clean():
    return make_head_phantom(_SHAPE, _SPACING, noise_std_hu=0.0)


def test_grid_and_dtype(clean):
    assert tuple(clean.shape) == _SHAPE and str(clean.dtype) == "torch.int16"
    np.testing.assert_allclose(clean.affine.numpy(), phantom_affine(_SHAPE, _SPACING))
    centre = clean.affine.numpy() @ np.append((np.asarray(_SHAPE) - 1) / 2.0, 1.0)
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)
    assert clean.meta["medgan"]["phantom"]["lesions"][0]["name"] == DEFAULT_LESIONS[0].name


@pytest.mark.parametrize("ras_mm, expected", [
    ((110.0, 110.0, 80.0), AIR_HU),  # outside the head
    ((0.0, -20.0, 50.0), WHITE_MATTER_HU),  # deep brain
    ((11.0, 3.0, 16.0), CSF_HU),  # lateral ventricle
    ((0.0, -87.3, 6.0), CORTICAL_BONE_HU),  # occipital skull, outer table (voxel centres on this grid)
    ((0.0, -83.7, 6.0), DIPLOE_HU),  # occipital skull, diploe
    ((0.0, -89.1, 6.0), FAT_HU),  # scalp fat behind the head
    ((24.0, 42.0, -52.0), AIR_HU),  # maxillary sinus
])
def test_tissues_where_the_anatomy_puts_them(clean, ras_mm, expected):
    assert _value_at(clean, ras_mm) == expected


def test_lesions_have_stated_size_and_contrast():
    spacing = (0.5, 0.5, 0.5)  # fine grid: the sphere volume is measurable
    lesion = DEFAULT_LESIONS[0]
    shape = (48, 48, 48)
    affine = phantom_affine(shape, spacing)
    affine[:3, 3] += np.asarray(lesion.centre_mm)
    with_lesion = make_head_phantom(shape, affine=affine).numpy().astype(float)
    without = make_head_phantom(shape, affine=affine, lesions=()).numpy().astype(float)
    difference = with_lesion - without
    inside = difference != 0
    assert set(np.unique(difference[inside])) == {lesion.contrast_hu}
    sphere_mm3 = np.pi / 6.0 * lesion.diameter_mm ** 3
    assert inside.sum() * np.prod(spacing) == pytest.approx(sphere_mm3, rel=0.03)


def test_lesions_visible_on_default_grid(clean):
    for lesion in DEFAULT_LESIONS:
        assert _value_at(clean, lesion.centre_mm) == WHITE_MATTER_HU + lesion.contrast_hu, lesion.name


def test_custom_lesion():
    lesion = PhantomLesion("test", (0.0, -20.0, 50.0), 12.0, -25.0)
    image = make_head_phantom(_SHAPE, _SPACING, lesions=[lesion])
    assert _value_at(image, lesion.centre_mm) == WHITE_MATTER_HU - 25


def test_noise_is_seeded_and_at_the_stated_level(clean):
    first = make_head_phantom(_SHAPE, _SPACING, noise_std_hu=12.0, seed=7).numpy().astype(float)
    again = make_head_phantom(_SHAPE, _SPACING, noise_std_hu=12.0, seed=7).numpy().astype(float)
    other = make_head_phantom(_SHAPE, _SPACING, noise_std_hu=12.0, seed=8).numpy().astype(float)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    noise = first - clean.numpy()
    brain = clean.numpy() == WHITE_MATTER_HU
    assert noise[brain].std() == pytest.approx(12.0, rel=0.05)
    assert abs(noise[brain].mean()) < 0.5
    assert first.min() >= MIN_HU
    # correlated in-plane over the stated distance (sigma 1.8 mm = 1 voxel here), independent between slices
    smooth = make_head_phantom(_SHAPE, _SPACING, noise_std_hu=12.0, noise_correlation_mm=1.8, seed=7)
    noise = smooth.numpy().astype(float) - clean.numpy()
    rows = noise[40:90, 40:90, 20]
    assert np.corrcoef(rows[:-1].ravel(), rows[1:].ravel())[0, 1] > 0.6
    slices = noise[40:90, 40:90, 19:21]
    assert abs(np.corrcoef(slices[..., 0].ravel(), slices[..., 1].ravel())[0, 1]) < 0.05


def test_anatomy_does_not_depend_on_the_grid():
    coarse = make_head_phantom((64, 64, 24), (3.6, 3.6, 8.0))
    fine = make_head_phantom((128, 128, 48), (1.8, 1.8, 4.0))
    for point in [(0.0, -20.0, 50.0), (11.0, 3.0, 16.0), (110.0, 110.0, 80.0), (-31.0, 66.0, -18.0)]:
        assert _value_at(coarse, point) == _value_at(fine, point)


def test_rejects_bad_shape():
    with pytest.raises(ValueError, match="three positive sizes"):
        make_head_phantom((10, 0, 10))
