"""Body masks for masked metrics, and the same-grid check every paired metric needs."""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np
from scipy import ndimage

from medgan.errors import GeometryMismatchError

__all__ = ["as_numpy", "body_mask_from_ct", "check_same_grid"]

logger = logging.getLogger(__name__)


def as_numpy(volume) -> np.ndarray:
    """A numpy view (no copy where possible) of a numpy array, torch tensor or MONAI ``MetaTensor``."""
    if hasattr(volume, "detach"):
        return volume.detach().cpu().numpy()
    return np.asarray(volume)


def body_mask_from_ct(volume, threshold_hu: float = -500.0, fill_holes: bool = True) -> np.ndarray:
    """Body (patient or phantom) mask of a CT volume: threshold, largest component, holes filled.

    Air inside the body (lungs, sinuses, bowel gas) is kept in the mask by filling holes on each
    axial slice, so the mask is the outline a radiotherapy body contour would give. The table is
    excluded when it does not touch the body above ``threshold_hu``.

    Args:
        volume: CT in HU, shape ``(X, Y, Z)``.
        threshold_hu: voxels above it are tissue candidates.
        fill_holes: fill enclosed air on every axial slice ``[:, :, k]``.

    Returns:
        bool array ``(X, Y, Z)``.

    Raises:
        ValueError: no voxel exceeds the threshold (not a CT in HU, or an empty volume).
    """
    image = as_numpy(volume)
    if image.ndim != 3:
        raise ValueError(f"expected a (X, Y, Z) volume, got shape {image.shape}")
    candidates = image > threshold_hu
    labels, count = ndimage.label(candidates)
    if count == 0:
        raise ValueError(f"no voxel above {threshold_hu} HU: is this a CT in HU?")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mask = labels == int(np.argmax(sizes))
    if fill_holes:
        for k in range(mask.shape[2]):
            mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    logger.debug("body mask: %d of %d voxels (%d components above %.0f HU)", int(mask.sum()), mask.size,
                 count, threshold_hu)
    return mask


def check_same_grid(first, second, first_name: str = "prediction", second_name: str = "target",
                    atol_mm: float = 1e-3, affine_first: Optional[np.ndarray] = None,
                    affine_second: Optional[np.ndarray] = None) -> None:
    """Raise :class:`GeometryMismatchError` unless two volumes share shape and voxel-to-world affine.

    The affines are taken from ``MetaTensor.affine`` unless given explicitly; when neither volume has
    one only the shapes are compared.

    Args:
        first: volume ``(X, Y, Z)`` (numpy, tensor or ``MetaTensor``).
        second: volume on the grid ``first`` must share.
        first_name: file or label of ``first``, used in the message.
        second_name: file or label of ``second``.
        atol_mm: tolerance on every affine entry (mm).
        affine_first: 4x4 voxel -> RAS mm of ``first`` when it is not a ``MetaTensor``.
        affine_second: same for ``second``.
    """
    shape_a, shape_b = tuple(first.shape), tuple(second.shape)
    fix = ("resample one onto the other's grid first (for example with MONAI ResampleToMatch, or the "
           "registration step), then evaluate again")
    if shape_a != shape_b:
        raise GeometryMismatchError(
            f"{first_name} has shape {shape_a} but {second_name} has shape {shape_b}; metrics compare voxel "
            "by voxel and need one grid", first_name, fix)
    aff_a = affine_first if affine_first is not None else getattr(first, "affine", None)
    aff_b = affine_second if affine_second is not None else getattr(second, "affine", None)
    if aff_a is None or aff_b is None:
        return
    aff_a = as_numpy(aff_a).astype(np.float64)
    aff_b = as_numpy(aff_b).astype(np.float64)
    worst = float(np.max(np.abs(aff_a - aff_b)))
    if worst > atol_mm:
        raise GeometryMismatchError(
            f"{first_name} and {second_name} have the same shape but different voxel-to-world affines "
            f"(largest difference {worst:.4g} mm; tolerance {atol_mm} mm)", first_name, fix)
