"""A small synthetic head-like phantom in CT-like and MR-like contrast (no real data needed)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def head_phantom(modality: str = "CT", size=(56, 64, 48), spacing_mm: float = 3.0, blur_mm: float = 3.0,
                seed: int = 0) -> sitk.Image:
    """An ellipsoidal "head" with scalp, a bony shell, two off-centre inserts and a rod (asymmetric, so rotations
    are determinable). CT contrast is in HU (air -1000); MR contrast has air 0, bone dark, fat bright.
    Arrays are built as (Z, Y, X); the image origin is centred and the direction is the identity (LPS)."""
    z, y, x = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * spacing_mm for n in size[::-1]], indexing="ij")
    radius = np.sqrt((x / 70.0) ** 2 + (y / 85.0) ** 2 + (z / 60.0) ** 2)
    values = {"CT": (-1000.0, 30.0, 1000.0, 40.0, 80.0, -80.0, 300.0),
              "MR": (0.0, 500.0, 40.0, 350.0, 600.0, 900.0, 150.0)}
    air, scalp, bone, brain, insert_a, insert_b, rod = values[modality]
    array = np.full(radius.shape, air, np.float32)
    array[radius < 1.0] = scalp
    array[radius < 0.94] = bone
    array[radius < 0.86] = brain
    array[(x - 25) ** 2 + (y + 20) ** 2 + (z - 10) ** 2 < 15.0**2] = insert_a
    array[(x + 20) ** 2 + (y - 30) ** 2 + (z + 15) ** 2 < 10.0**2] = insert_b
    array[((x + 5) ** 2 + (y + 35) ** 2 < 6.0**2) & (np.abs(z) < 35)] = rod
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([spacing_mm] * 3)
    image.SetOrigin([-(n - 1) / 2 * spacing_mm for n in size])
    image = sitk.SmoothingRecursiveGaussian(image, blur_mm)  # partial-volume edges as in a real scan
    noise = sitk.GetImageFromArray(np.random.default_rng(seed).normal(0.0, 10.0, array.shape).astype(np.float32))
    noise.CopyInformation(image)
    return image + noise
