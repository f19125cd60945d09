"""``SlabSpacing``: MONAI's ``Spacing`` computed slab by slab along an axis whose spacing it keeps.

MONAI's ``Spacing`` with a spline order (SciPy ``map_coordinates``) builds the coordinates of every
output voxel in float64 at once: for a 512 x 512 x 60 CT resampled to 300 slices that grid alone is
1.9 GB, and the whole preprocessing peaks above 6 GB. When an axis keeps its spacing (a thick-to-thin
z resampling keeps x and y), every output column along that axis samples the input at the same
integer position, so the volume can be resampled in slabs along it. A B-spline interpolates its
samples, so each slab's output is the whole volume's output there; the only slab-dependent part is
the spline prefilter near the slab's ends, which decays by a factor of about 0.27 per voxel for a
cubic spline, so each slab is resampled with ``halo_voxels`` of context on both sides that are then
cropped off (8 voxels: below 3e-5 of the local contrast; 12 by default).

The result, its affine and its ``applied_operations`` are those of ``Spacing`` on the whole volume,
so ``Invertd`` inverts it like ``Spacingd``.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, Spacing, Transform
from monai.utils import TraceKeys

#: Voxels along the slab axis resampled per piece: 64 columns of a 512 x 300 plane is a 0.24 GB grid
#: (512 x 512 x 60 -> 300 slices: peak 1.8 GB instead of 6.0 GB, same time; 32: 1.8 GB, 1.3x slower).
DEFAULT_SLAB_VOXELS = 64
#: Context on each side of a slab; the cubic prefilter's influence falls to 0.27**12 ~ 1.5e-7.
DEFAULT_HALO_VOXELS = 12


class SlabSpacing(InvertibleTransform, Transform):
    """Resample to ``pixdim`` like MONAI ``Spacing``, in slabs along an axis whose spacing is kept.

    Args:
        pixdim: output voxel size per spatial axis in mm; a value <= 0 keeps that axis' spacing
            (MONAI's convention). Slabs run along the first such axis.
        mode: interpolation, as for ``Spacing`` (a spline order 0-5, or ``"bilinear"``...).
        padding_mode: filling outside the field of view, as for ``Spacing``.
        slab_voxels: voxels of the slab axis resampled per piece.
        halo_voxels: extra context on each side of a piece, cropped off after resampling.

    Raises:
        ValueError: when ``pixdim`` changes every axis' spacing (nothing to cut along: use ``Spacing``),
            or when ``slab_voxels`` < 1 or ``halo_voxels`` < 0.
    """

    backend = Spacing.backend

    def __init__(self, pixdim: Sequence[float], mode: Union[str, int] = "bilinear", padding_mode: str = "border",
                 slab_voxels: int = DEFAULT_SLAB_VOXELS, halo_voxels: int = DEFAULT_HALO_VOXELS) -> None:
        pixdim = [float(p) for p in pixdim]
        kept = [axis for axis, p in enumerate(pixdim) if p <= 0]
        if not kept:
            raise ValueError(f"SlabSpacing needs an axis whose spacing is kept (pixdim <= 0 on it); got {pixdim}. "
                             "Use monai.transforms.Spacing for a resampling that changes every axis.")
        if slab_voxels < 1 or halo_voxels < 0:
            raise ValueError(f"slab_voxels must be >= 1 and halo_voxels >= 0; got {slab_voxels}, {halo_voxels}.")
        self.slab_axis = kept[0]
        self.slab_voxels = int(slab_voxels)
        self.halo_voxels = int(halo_voxels)
        self.spacing = Spacing(pixdim=pixdim, mode=mode, padding_mode=padding_mode)

    def __call__(self, img: torch.Tensor) -> MetaTensor:
        """Resample ``img`` of shape ``(C, X, Y, Z)`` (a ``MetaTensor`` carrying its affine)."""
        if not isinstance(img, MetaTensor):
            raise TypeError(f"SlabSpacing needs a MetaTensor with an affine; got {type(img).__name__}.")
        dim = self.slab_axis + 1
        length = int(img.shape[dim])
        if length <= self.slab_voxels:
            return self.spacing(img)
        data = img.as_tensor()
        affine = img.affine.to(torch.float64)
        pieces = []
        first: Optional[MetaTensor] = None
        for start in range(0, length, self.slab_voxels):
            stop = min(start + self.slab_voxels, length)
            low, high = max(0, start - self.halo_voxels), min(length, stop + self.halo_voxels)
            piece = MetaTensor(data.narrow(dim, low, high - low), meta=dict(img.meta),
                               applied_operations=list(img.applied_operations))
            shift = torch.eye(4, dtype=torch.float64)
            shift[self.slab_axis, 3] = float(low)
            piece.affine = affine @ shift
            out = self.spacing(piece)
            if out.shape[dim] != high - low:
                raise RuntimeError(f"Spacing changed the size of the kept axis {self.slab_axis} "
                                   f"({high - low} -> {out.shape[dim]}): the affine is not axis-aligned there.")
            pieces.append(out.as_tensor().narrow(dim, start - low, stop - start))
            if first is None:
                first = out
        assert first is not None
        result = MetaTensor(torch.cat(pieces, dim=dim), meta=dict(first.meta),
                            applied_operations=[dict(op) for op in first.applied_operations])
        result.affine = first.affine
        # the record is the first piece's: it must name the whole input's size for the inverse
        result.applied_operations[-1][TraceKeys.ORIG_SIZE] = tuple(int(s) for s in img.shape[1:])
        if "spatial_shape" in result.meta:
            result.meta["spatial_shape"] = np.asarray(result.shape[1:])
        return result

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """Back onto the input grid, as ``Spacing.inverse`` (the record is ``Spacing``'s)."""
        return self.spacing.inverse(data)
