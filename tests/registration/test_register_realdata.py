"""Recovering known rigid and affine transforms applied to real volumes (target registration error).

Default tests work on 2-3 mm copies so they stay fast; the ``slow`` ones repeat them at the default
2 mm working spacing with several random transforms. A moving image is the (downsampled) real volume
resampled through a known transform ``S``; the registration must find ``S^-1``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import SimpleITK as sitk

from medgan.errors import RegistrationError
from medgan.registration import ImageRegistration, cormack_to_hu, register_files
from medgan.registration._sitk import resample_isotropic
from medgan.registration.evaluation import (
    apply_known_transform,
    body_points,
    random_transform,
    target_registration_error,
)

pytestmark = pytest.mark.realdata

HEAD_MR = "mr/head_vs_seg_001/VS-SEG-001_t1_mpr_tra_gk_v4_2.nii.gz"
HEAD_CT = "ct/phantom_head_philips/thin1mm_kernelUB.nii.gz"
T1_TEMPLATE = "templates_mni/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
CT_TEMPLATE = "templates_mni/scct.nii"


def _downsampled(path, spacing_mm: float) -> sitk.Image:
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    return resample_isotropic(image, spacing_mm, float(np.percentile(sitk.GetArrayViewFromImage(image), 0.5)))


def _ct_template_hu(path) -> sitk.Image:
    """The CT template is in Cormack units (0..~3800, brain ~2590): convert to HU."""
    cormack = sitk.ReadImage(str(path), sitk.sitkFloat32)
    hu = sitk.GetImageFromArray(cormack_to_hu(sitk.GetArrayViewFromImage(cormack)))
    hu.CopyInformation(cormack)
    return hu


def _centre(image: sitk.Image):
    return image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])


def _recover(fixed: sitk.Image, source: sitk.Image, seed: int, affine: bool, registration: ImageRegistration,
             reference_transform: sitk.Transform = None) -> np.ndarray:
    """TRE (mm) at body points of ``fixed`` after registering ``fixed`` to ``source`` moved by a known transform.

    ``reference_transform`` (fixed -> source) is what registration finds without the known transform; it is
    the identity when ``source`` is ``fixed`` itself.
    """
    known = random_transform(np.random.default_rng(seed), _centre(fixed), affine=affine)
    moving = apply_known_transform(source, known)
    result = registration(fixed, moving)
    expected = sitk.CompositeTransform([known.GetInverse(), reference_transform or sitk.Transform()])
    return target_registration_error(result.transform, expected, body_points(fixed, 6.0))


@pytest.fixture(scope="module")
def head_mr(real_file):
    return _downsampled(real_file(HEAD_MR), 2.0)


@pytest.fixture(scope="module")
def head_ct(real_file):
    return _downsampled(real_file(HEAD_CT), 2.0)


@pytest.fixture(scope="module")
def templates(real_file):
    return _downsampled(real_file(T1_TEMPLATE), 2.0), _ct_template_hu(real_file(CT_TEMPLATE))


# The T1 template is skull-stripped (brain only) while the CT template shows the whole head, so their
# body masks differ by design (Dice about 0.65 at the best alignment); QC keeps its other checks.
TEMPLATE_MIN_DICE = 0.55


def test_mr_rigid_recovered_under_1mm(head_mr):
    tre = _recover(head_mr, head_mr, seed=0, affine=False, registration=ImageRegistration(working_spacing_mm=3.0))
    assert tre.mean() < 1.0 and tre.max() < 1.0, (tre.mean(), tre.max())


def test_ct_affine_recovered_under_1mm(head_ct):
    tre = _recover(head_ct, head_ct, seed=1, affine=True,
                   registration=ImageRegistration(mode="affine", working_spacing_mm=3.0))
    assert tre.mean() < 1.0 and tre.max() < 1.0, (tre.mean(), tre.max())


def test_mr_to_ct_template_rigid_recovered_under_2mm(templates):
    t1, ct = templates
    registration = ImageRegistration(working_spacing_mm=3.0, min_mask_dice=TEMPLATE_MIN_DICE)
    reference = registration(t1, ct).transform  # the templates' own best alignment
    tre = _recover(t1, ct, seed=0, affine=False, registration=registration, reference_transform=reference)
    assert tre.mean() < 2.0, (tre.mean(), tre.max())


def test_unrelated_images_raise_and_write_nothing(real_file, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RegistrationError, match="failed quality control") as caught:
        register_files(real_file(HEAD_MR), real_file("ct/abdomen_totalsegmentator/example_ct_sm.nii.gz"), out,
                       ImageRegistration(working_spacing_mm=4.0))
    message = str(caught.value)
    assert "too little shared information" in message and "NOT aligned" in message
    # the figures are in the message: mutual information of unrelated images stays far below 0.1 nats
    assert float(re.search(r"mattes similarity ([\d.]+)", message).group(1)) < 0.08
    assert not out.exists() or not any(out.iterdir())


def test_mutual_information_peaks_at_the_real_mr_ct_alignment(real_file):
    """The porcine MR and CT were registered by others: MI must be best there and worsen with any shift."""
    mr = _downsampled(real_file("mr_ct_pair_porcine/mr_t2.nii.gz"), 3.0)
    ct = _downsampled(real_file("mr_ct_pair_porcine/ct_on_mr_grid.nii.gz"), 3.0)
    registration = ImageRegistration(working_spacing_mm=3.0)
    aligned = registration.metric_value(mr, ct, sitk.Transform())
    for axis in range(3):
        values = [registration.metric_value(mr, ct, sitk.TranslationTransform(3, list(np.eye(3)[axis] * s)))
                  for s in (4.0, 8.0)]
        assert aligned < values[0] < values[1], (axis, aligned, values)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("affine", [False, True], ids=["rigid", "affine"])
def test_mono_modal_recovered_under_1mm_at_2mm(head_mr, head_ct, seed, affine):
    registration = ImageRegistration(mode="affine" if affine else "rigid")
    for image in (head_mr, head_ct):
        tre = _recover(image, image, seed=seed, affine=affine, registration=registration)
        assert tre.max() < 1.0, (tre.mean(), tre.max())


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mr_to_ct_template_recovered_under_2mm_at_2mm(templates, seed):
    t1, ct = templates
    registration = ImageRegistration(min_mask_dice=TEMPLATE_MIN_DICE)
    reference = registration(t1, ct).transform
    tre = _recover(t1, ct, seed=seed, affine=False, registration=registration, reference_transform=reference)
    assert tre.max() < 2.0, (tre.mean(), tre.max())


@pytest.mark.slow
def test_deformable_mr_keeps_rigid_accuracy_without_folding(head_mr):
    known = random_transform(np.random.default_rng(5), _centre(head_mr))
    moving = apply_known_transform(head_mr, known)
    result = ImageRegistration(mode="deformable", working_spacing_mm=3.0)(head_mr, moving)
    assert result.qc.jacobian_min > 0.5 and result.qc.jacobian_max < 2.0
    tre = target_registration_error(result.transform, known.GetInverse(), body_points(head_mr, 6.0))
    assert tre.mean() < 1.0, (tre.mean(), tre.max())


@pytest.mark.slow
def test_dicom_folder_as_fixed_image(real_file, tmp_path):
    """A DICOM series folder is read through medgan.io; the written transform recovers a known shift.

    The series is a 40 mm slab: a shift across it would move much of the content out of the field of
    view, so the known shift is in-plane (the DICOM path is what is tested here).
    """
    from medgan.registration._sitk import read_image

    folder = real_file("dicom/ct_abdomen_j2k")
    fixed = read_image(folder)
    known = sitk.TranslationTransform(3, [6.0, -8.0, 0.0])
    sitk.WriteImage(apply_known_transform(fixed, known), str(tmp_path / "moving.nii.gz"))
    paths = register_files(folder, tmp_path / "moving.nii.gz", tmp_path / "out", ImageRegistration(working_spacing_mm=3.0))
    found = sitk.ReadTransform(str(paths["transform"]))
    tre = target_registration_error(found, known.GetInverse(), body_points(fixed, 6.0))
    assert tre.max() < 1.0, (tre.mean(), tre.max())
    assert sitk.ReadImage(str(paths["registered"])).GetSize() == fixed.GetSize()
