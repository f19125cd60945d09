"""Fixtures of the metric tests: a crop of the real Philips head phantom in two kernels."""

from __future__ import annotations

import numpy as np
import pytest

PHANTOM = "ct/phantom_head_philips/thin1mm_kernel{}.nii.gz"
# skull, air, the soft-tissue insert and the phantom's outer edge, 160 x 160 x 32 voxels of 0.45 x 0.45 x 1 mm
CROP = (slice(140, 300), slice(260, 420), slice(36, 68))


def _load(path):
    import nibabel as nib

    image = nib.load(str(path))
    return np.asarray(image.dataobj, dtype=np.float32), image.affine


@pytest.fixture(scope="session")
def phantom_pair(real_file):
    """(smooth UB, sharp YA, affine) cropped volumes in HU, float32 ``(160, 160, 32)``."""
    ub, affine = _load(real_file(PHANTOM.format("UB")))
    ya, _ = _load(real_file(PHANTOM.format("YA")))
    return np.ascontiguousarray(ub[CROP]), np.ascontiguousarray(ya[CROP]), affine


@pytest.fixture(scope="session")
def phantom_full(real_file):
    """Whole volumes (UB, YA, affine), float32 ``(512, 512, 100)``."""
    ub, affine = _load(real_file(PHANTOM.format("UB")))
    ya, _ = _load(real_file(PHANTOM.format("YA")))
    return ub, ya, affine
