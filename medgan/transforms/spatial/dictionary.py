"""Dictionary version of :mod:`medgan.transforms.spatial.array`: it only routes keys."""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence, Union

from monai.config import KeysCollection
from monai.transforms import InvertibleTransform, MapTransform

from medgan.transforms.spatial.array import DEFAULT_HALO_VOXELS, DEFAULT_SLAB_VOXELS, SlabSpacing


class SlabSpacingd(MapTransform, InvertibleTransform):
    """Dictionary :class:`SlabSpacing`: ``Spacingd`` with bounded memory, inverted like it by ``Invertd``."""

    backend = SlabSpacing.backend

    def __init__(self, keys: KeysCollection, pixdim: Sequence[float], mode: Union[str, int] = "bilinear",
                 padding_mode: str = "border", slab_voxels: int = DEFAULT_SLAB_VOXELS,
                 halo_voxels: int = DEFAULT_HALO_VOXELS, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.resampler = SlabSpacing(pixdim=pixdim, mode=mode, padding_mode=padding_mode, slab_voxels=slab_voxels,
                                     halo_voxels=halo_voxels)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resampler(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resampler.inverse(d[key])
        return d
