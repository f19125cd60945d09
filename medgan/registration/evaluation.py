"""Measuring registration accuracy with known transforms: target registration error (TRE).

A moving image is made from a real one by resampling it through a known transform ``S`` (moving
point -> source point). The registration of the source (fixed) onto that moving image should then
find ``S^-1`` (fixed point -> moving point); the TRE at a fixed point ``p`` is
``|T_found(p) - S^-1(p)|`` in mm, measured on a grid of points inside the fixed body mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from medgan.registration._masks import body_mask
from medgan.registration._sitk import physical_grid, resample_isotropic


def random_transform(rng: np.random.Generator, centre_mm: Sequence[float], affine: bool = False,
                     max_rotation_deg: float = 10.0, max_shift_mm: float = 20.0,
                     max_linear_deviation: float = 0.08) -> sitk.Transform:
    """A random rigid (or affine) transform about ``centre_mm`` (LPS mm).

    Rotations about each axis are uniform in ``+-max_rotation_deg``, shifts uniform in ``+-max_shift_mm``;
    the affine version multiplies the rotation by ``I + E`` with ``E`` uniform in
    ``+-max_linear_deviation`` (scaling and shear of up to about 8 %).
    """
    angles = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, 3))
    shift = rng.uniform(-max_shift_mm, max_shift_mm, 3)
    euler = sitk.Euler3DTransform()
    euler.SetCenter([float(c) for c in centre_mm])
    euler.SetRotation(*angles.tolist())
    euler.SetTranslation(shift.tolist())
    if not affine:
        return euler
    linear = np.asarray(euler.GetMatrix()).reshape(3, 3) @ (
        np.eye(3) + rng.uniform(-max_linear_deviation, max_linear_deviation, (3, 3)))
    result = sitk.AffineTransform(3)
    result.SetCenter(euler.GetCenter())
    result.SetMatrix(linear.flatten().tolist())
    result.SetTranslation(shift.tolist())
    return result


def apply_known_transform(source: sitk.Image, transform: sitk.Transform,
                          reference: sitk.Image | None = None) -> sitk.Image:
    """Resample ``source`` through ``transform`` (moving point -> source point) onto ``reference``'s grid.

    The background is the source's 0.5th percentile (air). ``reference`` defaults to the source grid.
    """
    background = float(np.percentile(sitk.GetArrayViewFromImage(source), 0.5))
    return sitk.Resample(source, reference if reference is not None else source, transform, sitk.sitkLinear,
                         background, sitk.sitkFloat32)


def body_points(image: sitk.Image, step_mm: float = 5.0) -> np.ndarray:
    """Points ``(N, 3)`` (LPS mm) on a regular grid of ``step_mm`` inside the body mask of ``image``."""
    coarse = resample_isotropic(sitk.Cast(image, sitk.sitkFloat32), step_mm,
                                float(np.percentile(sitk.GetArrayViewFromImage(image), 0.5)))
    mask, _ = body_mask(coarse)
    inside = sitk.GetArrayViewFromImage(mask).transpose(2, 1, 0).reshape(-1) > 0
    return physical_grid(coarse, (1, 1, 1))[inside]


def target_registration_error(found: sitk.Transform, expected: sitk.Transform, points: np.ndarray) -> np.ndarray:
    """Distances ``(N,)`` in mm between where ``found`` and ``expected`` send each point of ``points`` ``(N, 3)``."""
    return np.array([np.linalg.norm(np.subtract(found.TransformPoint(p), expected.TransformPoint(p)))
                     for p in np.asarray(points, dtype=np.float64).tolist()])
