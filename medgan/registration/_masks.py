"""Body (foreground) masks used by registration for initialisation, metric sampling and QC overlap.

A CT in HU is thresholded at ``-500`` HU (halfway between air and soft tissue); any other image
(MR, or a CT in other units) at its Otsu threshold. The foreground is closed, its holes are filled slice by
slice (air in sinuses, dark bone on MR) and the largest connected component is kept: the body outline.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

CT_BODY_THRESHOLD_HU = -500.0
# An image whose 1st intensity percentile is at or below this is taken as a CT in HU (air ~ -1000 HU).
HU_AIR_PERCENTILE_MAX = -900.0


def body_mask(image: sitk.Image, closing_mm: float = 4.0) -> tuple[sitk.Image, str]:
    """Binary body mask of ``image`` on its own grid.

    Args:
        image: a 3D SimpleITK image (any pixel type).
        closing_mm: radius of the morphological closing that bridges gaps in the outline, in mm.

    Returns:
        ``(mask, method)``: a ``sitkUInt8`` image with 1 inside the body, and a short description of the
        threshold used (recorded in the QC record).
    """
    array = sitk.GetArrayViewFromImage(image).astype(np.float32)  # (Z, Y, X)
    if not np.isfinite(array).all():
        array = np.nan_to_num(array, nan=float(np.nanmin(array)))
    if float(np.percentile(array, 1)) <= HU_AIR_PERCENTILE_MAX:
        threshold, method = CT_BODY_THRESHOLD_HU, f"CT HU > {CT_BODY_THRESHOLD_HU:g}"
    elif float(array.max()) > float(array.min()):
        threshold = _otsu(array)
        method = f"Otsu > {threshold:.4g}"
    else:
        return _like(np.zeros(array.shape, np.uint8), image), "constant image: empty"
    mask = array > threshold
    spacing_zyx = np.asarray(image.GetSpacing())[::-1]
    radius = np.maximum(1, np.round(closing_mm / spacing_zyx)).astype(int)
    mask = ndimage.binary_closing(np.pad(mask, [(r, r) for r in radius]), _ellipsoid(radius))[
        tuple(slice(r, -r) for r in radius)]
    for z in range(mask.shape[0]):  # the outline encloses dark bone, air cavities, dark MR tissue
        mask[z] = ndimage.binary_fill_holes(mask[z])
    labels, count = ndimage.label(mask)
    if count == 0:
        return _like(np.zeros(array.shape, np.uint8), image), method + ": empty"
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    mask = labels == (int(np.argmax(sizes)) + 1)
    return _like(mask.astype(np.uint8), image), method


def _otsu(array: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``array`` (between-class variance maximum over a histogram)."""
    hist, edges = np.histogram(array, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    mean0 = np.cumsum(hist * centres) / np.maximum(weight0, 1)
    mean1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def _ellipsoid(radius_zyx: np.ndarray) -> np.ndarray:
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radius_zyx)]
    return sum((g / max(r, 1)) ** 2 for g, r in zip(grids, radius_zyx)) <= 1.0


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(reference)
    return result


def dice(mask_a: sitk.Image, mask_b: sitk.Image) -> float:
    """Dice overlap of two binary masks on the same grid (0 when both are empty)."""
    a = sitk.GetArrayViewFromImage(mask_a) > 0
    b = sitk.GetArrayViewFromImage(mask_b) > 0
    total = int(a.sum()) + int(b.sum())
    return 0.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total
