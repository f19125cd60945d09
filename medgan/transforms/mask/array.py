"""Body masks for CT and MR: the patient (or phantom) without the air around it and, for CT, without the table.

Both work on a 3D volume ``(X, Y, Z)`` (or ``(1, X, Y, Z)``) and return a ``uint8`` mask of the same
shape and metadata (1 = body). Distances are in millimetres, turned into voxels with the spacing
taken from the ``MetaTensor`` affine (or ``spacing_mm`` for plain arrays), so results do not depend
on the resolution.

Steps (both modalities, after a modality-specific threshold); steps 0-3 run on a working grid of
about 2 mm (whole-voxel blocks), the final mask is cut from the full-resolution threshold:

0. **Slice-wise hole filling** of the thresholded volume, so a hollow shell (a skull, a phantom's
   wall) becomes the solid it encloses before thin structures are removed.
1. **Opening** by a ball of ``opening_radius_mm`` (Euclidean distance transforms, exact for
   anisotropic voxels): removes structures thinner than its diameter, such as the CT table, its
   cushions and MR ghosting, and cuts their thin contacts with the body.
2. **Largest connected component** (6-connectivity) of what remains: the body.
3. **Detail recovery**: (slice-filled) thresholded voxels within one working voxel (plus
   ``recover_mm``, default 0) of that component are put back at full resolution, so the boundary
   follows the full-resolution skin; a table the body lies on is kept only within that distance of
   the body (a band of 2-4 mm at the contact), and protrusions thinner than the opening's
   diameter (ear rims) are trimmed to that distance.
4. **Hole filling** at full resolution, in 3D and then slice by slice across the axial axis (the
   voxel axis closest to superior-inferior) and the two others, so lungs, bowel gas and sinuses
   that reach the edge of the field of view in 3D are filled too.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence, Tuple

import numpy as np
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import Transform
from monai.utils import TransformBackends
from scipy import ndimage

from medgan.transforms.intensity.array import record_meta

logger = logging.getLogger(__name__)

#: HU above which a CT voxel is tissue rather than air (fat is about -100, lung about -850).
DEFAULT_CT_THRESHOLD_HU = -500.0
#: Default opening radius (mm): wider than a CT table top's shell and cushion seams.
DEFAULT_OPENING_RADIUS_MM = 4.0


def _spacing(img: NdarrayOrTensor, spacing_mm: Optional[Sequence[float]]) -> Tuple[float, float, float]:
    if spacing_mm is not None:
        return tuple(float(s) for s in spacing_mm)  # type: ignore[return-value]
    if isinstance(img, MetaTensor):
        affine = np.asarray(img.affine, dtype=np.float64)
        return tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))  # type: ignore[return-value]
    raise ValueError("spacing_mm is needed for an image without an affine (not a MetaTensor)")


def _axial_axis(img: NdarrayOrTensor) -> int:
    if isinstance(img, MetaTensor):
        affine = np.asarray(img.affine, dtype=np.float64)[:3, :3]
        return int(np.argmax(np.abs(affine[2]) / np.linalg.norm(affine, axis=0)))
    return 2


def _volume(img: NdarrayOrTensor) -> np.ndarray:
    array = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"body masks need a 3D volume (X, Y, Z) or (1, X, Y, Z), got shape {array.shape}")
    return array


def _as_output(mask: np.ndarray, img: NdarrayOrTensor) -> NdarrayOrTensor:
    out = mask.astype(np.uint8)
    if hasattr(img, "shape") and len(img.shape) == 4:
        out = out[None]
    if isinstance(img, MetaTensor):
        result = MetaTensor(out, affine=img.affine, meta=dict(img.meta))
        result.meta.pop("medgan", None)
        return result
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a boolean 3D mask (empty in, empty out)."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes(mask: np.ndarray, axes: Sequence[int], three_d: bool = True) -> np.ndarray:
    """Fill holes in 3D (when ``three_d``), then in every 2D slice across each of ``axes`` in turn."""
    filled = ndimage.binary_fill_holes(mask) if three_d else mask.copy()
    for axis in axes:
        for index in range(filled.shape[axis]):
            where = [slice(None)] * 3
            where[axis] = index
            filled[tuple(where)] = ndimage.binary_fill_holes(filled[tuple(where)])
    return filled


def _block_reduce(mask: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Coarse mask: a block is set when at least half of its voxels are (edge blocks padded with 0)."""
    padded_shape = [-(-n // f) * f for n, f in zip(mask.shape, factors)]
    padded = np.zeros(padded_shape, dtype=np.uint8)
    padded[tuple(slice(0, n) for n in mask.shape)] = mask
    blocks = padded.reshape(padded_shape[0] // factors[0], factors[0], padded_shape[1] // factors[1], factors[1],
                            padded_shape[2] // factors[2], factors[2])
    return blocks.mean(axis=(1, 3, 5)) >= 0.5


def _block_expand(mask: np.ndarray, factors: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    for axis, factor in enumerate(factors):
        mask = np.repeat(mask, factor, axis=axis)
    return mask[tuple(slice(0, n) for n in shape)]


def clean_body_mask(foreground: np.ndarray, spacing_mm: Sequence[float], opening_radius_mm: float,
                    axial_axis: int, work_spacing_mm: float = 2.0, recover_mm: float = 0.0) -> np.ndarray:
    """Find the body in a thresholded volume (see the module docstring).

    The opening and the component search run on a grid of about ``work_spacing_mm`` (blocks of
    whole voxels), which makes a 512 x 512 x 100 CT take seconds; the final mask is cut from the
    full-resolution ``foreground``, so its boundary keeps the native resolution.

    Args:
        foreground: ``(X, Y, Z)`` boolean, thresholded volume.
        spacing_mm: voxel size ``(X, Y, Z)``.
        opening_radius_mm: radius of the ball opening (0: none).
        axial_axis: voxel axis closest to superior-inferior (2D hole filling runs across it).
        work_spacing_mm: voxel size of the coarse working grid.
        recover_mm: how far beyond the opened body (plus one working voxel) thresholded voxels are
            put back. Larger keeps more thin detail (ears, fingers) but also more of a table the
            body lies on: the table is cut at this distance from the body.
    """
    if not foreground.any():
        return foreground.copy()
    factors = [max(1, int(work_spacing_mm // s)) for s in spacing_mm]
    coarse_spacing = [s * f for s, f in zip(spacing_mm, factors)]
    coarse = fill_holes(_block_reduce(foreground, factors), [axial_axis], three_d=False)
    body = coarse
    if opening_radius_mm > 0:
        inside = ndimage.distance_transform_edt(coarse, sampling=coarse_spacing) > opening_radius_mm
        if inside.any():
            body = ndimage.distance_transform_edt(~inside, sampling=coarse_spacing) <= opening_radius_mm
        else:
            logger.warning("nothing is thicker than the %.1f mm opening; the mask is not opened", opening_radius_mm)
    body = largest_component(body & coarse)
    if not body.any():
        return body
    near = ndimage.distance_transform_edt(~body, sampling=coarse_spacing) <= recover_mm + max(coarse_spacing)
    solid = fill_holes(foreground, [axial_axis], three_d=False)
    body = largest_component(solid & _block_expand(near, factors, foreground.shape))
    return fill_holes(body, [axial_axis] + [a for a in range(3) if a != axial_axis])


class CTBodyMask(Transform):
    """Body mask of a CT in HU: threshold, opening (drops the table), largest component, holes filled.

    Args:
        threshold_hu: voxels above this are tissue (default -500 HU: keeps fat, drops air and lung,
            which hole filling puts back).
        opening_radius_mm: radius of the ball opening; 0 disables opening and detail recovery.
        spacing_mm: voxel size ``(X, Y, Z)`` for plain arrays (MetaTensors use their affine).

    Returns a ``uint8`` mask shaped like the input; its metadata records the body fraction under
    ``meta["medgan"]["CTBodyMask"]``.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, threshold_hu: float = DEFAULT_CT_THRESHOLD_HU,
                 opening_radius_mm: float = DEFAULT_OPENING_RADIUS_MM,
                 spacing_mm: Optional[Sequence[float]] = None) -> None:
        self.threshold_hu = threshold_hu
        self.opening_radius_mm = opening_radius_mm
        self.spacing_mm = spacing_mm

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        volume = _volume(img)
        mask = clean_body_mask(volume > self.threshold_hu, _spacing(img, self.spacing_mm), self.opening_radius_mm,
                               _axial_axis(img))
        out = _as_output(mask, img)
        record_meta(out, type(self).__name__, {"threshold_hu": self.threshold_hu,
                                               "opening_radius_mm": self.opening_radius_mm,
                                               "body_fraction": float(mask.mean())})
        return out


class MRBodyMask(Transform):
    """Body mask of an MR: percentile (or Otsu) threshold, opening, largest component, holes filled.

    Args:
        method: ``"percentile"`` (``fraction`` times the ``percentile``-th percentile of all voxels;
            the default: it keeps the dark skull and scalp of head MR inside the outline) or
            ``"otsu"`` (between the background and tissue histograms; higher, it cuts into head MR).
        percentile: percentile for the ``percentile`` method.
        fraction: multiplier for the ``percentile`` method.
        opening_radius_mm: radius of the ball opening (ghosts, noise specks); 0 disables it.
        spacing_mm: voxel size for plain arrays.

    Returns a ``uint8`` mask shaped like the input; ``meta["medgan"]["MRBodyMask"]`` records the
    threshold used and the body fraction.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, method: str = "percentile", percentile: float = 99.0, fraction: float = 0.1,
                 opening_radius_mm: float = DEFAULT_OPENING_RADIUS_MM,
                 spacing_mm: Optional[Sequence[float]] = None) -> None:
        if method not in ("otsu", "percentile"):
            raise ValueError(f"method must be 'otsu' or 'percentile', got {method!r}")
        self.method = method
        self.percentile = percentile
        self.fraction = fraction
        self.opening_radius_mm = opening_radius_mm
        self.spacing_mm = spacing_mm

    def threshold(self, volume: np.ndarray) -> float:
        """The intensity separating background from body in ``volume``."""
        if self.method == "percentile":
            return float(self.fraction * np.percentile(volume, self.percentile))
        from skimage.filters import threshold_otsu

        # Otsu on the range below the 99.9th percentile, so a few bright vessels do not move it.
        top = np.percentile(volume, 99.9)
        return float(threshold_otsu(np.clip(volume, None, top)))

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        volume = _volume(img).astype(np.float32)
        level = self.threshold(volume)
        mask = clean_body_mask(volume > level, _spacing(img, self.spacing_mm), self.opening_radius_mm,
                               _axial_axis(img))
        out = _as_output(mask, img)
        record_meta(out, type(self).__name__, {"method": self.method, "threshold": level,
                                               "opening_radius_mm": self.opening_radius_mm,
                                               "body_fraction": float(mask.mean())})
        return out
