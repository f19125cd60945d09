"""Invertible spatial preprocessing: orientation and spacing with MONAI's own transforms.

MONAI's ``Orientationd`` and ``Spacingd`` are invertible (they record what they did in each
``MetaTensor``'s ``applied_operations``), so ``Invertd`` puts a prediction back onto the patient's
native grid: same shape, same affine. medgan adds only the composition: channel handling for medgan's
channel-less ``(X, Y, Z)`` volumes, nearest-neighbour resampling for masks, and optional HU
normalisation (itself invertible, see :class:`medgan.transforms.intensity.NormalizeHU`).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

from monai.transforms import Compose, EnsureChannelFirstd, Orientationd, Spacingd, Transform

from medgan.transforms.intensity.array import DEFAULT_OUTPUT_RANGE
from medgan.transforms.intensity.dictionary import NormalizeHUd
from medgan.transforms.spatial.dictionary import SlabSpacingd

#: Axis labels of medgan's RAS affines (explicit: MONAI's default follows the MetaTensor's space).
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
#: Default orientation of medgan's working grid (MONAI's and NIfTI's convention).
DEFAULT_AXCODES = "RAS"


def preprocessing(keys: Sequence[str], pixdim_mm: Optional[Sequence[float]], axcodes: str = DEFAULT_AXCODES,
                  mask_keys: Sequence[str] = (), window_hu: Optional[Sequence[float]] = None,
                  output_range: Sequence[float] = DEFAULT_OUTPUT_RANGE, image_mode: str = "bilinear",
                  padding_mode: str = "border", slab_voxels: Optional[int] = None) -> Compose:
    """Channel first -> orientation -> spacing (-> HU normalisation), every step invertible by ``Invertd``.

    Args:
        keys: image keys (e.g. ``["source", "target"]``), resampled with ``image_mode``.
        pixdim_mm: target voxel size ``(X, Y, Z)`` in mm; None keeps the native spacing; a value
            <= 0 keeps that axis' native spacing (MONAI ``Spacing`` convention).
        axcodes: target orientation, e.g. ``"RAS"``.
        mask_keys: mask keys, resampled with nearest neighbour.
        window_hu: when given, ``NormalizeHUd`` maps this HU window of ``keys`` onto ``output_range``
            (CT inputs only; use :class:`medgan.transforms.intensity.NormalizeMRPercentiled` for MR).
        output_range: range of the HU normalisation.
        image_mode: interpolation of images (``"bilinear"``; ``"bicubic"`` is sharper but overshoots).
        padding_mode: how resampling fills outside the field of view (``"border"`` repeats the edge,
            so CT air stays air).
        slab_voxels: resample ``keys`` with :class:`medgan.transforms.spatial.SlabSpacingd` in slabs of this
            many voxels along the first axis whose spacing is kept (same output, bounded memory: a
            spline-order resampling of a whole CT otherwise holds a float64 grid of every output voxel).
            None resamples in one piece with MONAI ``Spacingd``.

    Returns:
        A MONAI ``Compose`` taking a dict of ``(X, Y, Z)`` ``MetaTensor``s and returning ``(1, X', Y', Z')``
        ones. ``Invertd(keys="pred", transform=this, orig_keys="source")`` maps a prediction back.
    """
    all_keys = list(keys) + list(mask_keys)
    steps: List[Transform] = [
        EnsureChannelFirstd(keys=all_keys, channel_dim="no_channel"),
        Orientationd(keys=all_keys, axcodes=axcodes, labels=_RAS_LABELS),
    ]
    if pixdim_mm is not None:
        if slab_voxels is None:
            steps.append(Spacingd(keys=list(keys), pixdim=pixdim_mm, mode=image_mode, padding_mode=padding_mode))
        else:
            steps.append(SlabSpacingd(keys=list(keys), pixdim=pixdim_mm, mode=image_mode, padding_mode=padding_mode,
                                      slab_voxels=slab_voxels))
        if mask_keys:
            steps.append(Spacingd(keys=list(mask_keys), pixdim=pixdim_mm, mode="nearest", padding_mode="zeros"))
    if window_hu is not None:
        steps.append(NormalizeHUd(keys=list(keys), window_hu=window_hu, output_range=output_range))
    return Compose(steps)
