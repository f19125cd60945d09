"""Dictionary versions of :mod:`medgan.transforms.intensity.array`: they only route keys."""

from __future__ import annotations

from typing import Hashable, Mapping, Optional, Sequence

import numpy as np
from monai.config import DtypeLike, KeysCollection
from monai.transforms import InvertibleTransform, MapTransform

from medgan.transforms.intensity.array import (DEFAULT_OUTPUT_RANGE, DEFAULT_WINDOW_HU, BlendWithSource, DenormalizeHU,
                                               NormalizeHU, NormalizeMRPercentile)


class NormalizeHUd(MapTransform, InvertibleTransform):
    """Dictionary :class:`NormalizeHU`: one HU window for every key (``source`` and ``target`` of a CT pair)."""

    backend = NormalizeHU.backend

    def __init__(self, keys: KeysCollection, window_hu: Sequence[float] = DEFAULT_WINDOW_HU,
                 output_range: Sequence[float] = DEFAULT_OUTPUT_RANGE, clip: bool = True,
                 dtype: DtypeLike = np.float32, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = NormalizeHU(window_hu=window_hu, output_range=output_range, clip=clip, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer.inverse(d[key])
        return d


class DenormalizeHUd(MapTransform):
    """Dictionary :class:`DenormalizeHU` (e.g. ``pred`` of an MR -> CT model back to HU)."""

    backend = DenormalizeHU.backend

    def __init__(self, keys: KeysCollection, window_hu: Sequence[float] = DEFAULT_WINDOW_HU,
                 output_range: Sequence[float] = DEFAULT_OUTPUT_RANGE, clip_hu: bool = False,
                 dtype: DtypeLike = np.float32, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.denormalizer = DenormalizeHU(window_hu=window_hu, output_range=output_range, clip_hu=clip_hu, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.denormalizer(d[key])
        return d


class NormalizeMRPercentiled(MapTransform):
    """Dictionary :class:`NormalizeMRPercentile`; ``mask_key`` (optional) names the foreground mask."""

    backend = NormalizeMRPercentile.backend

    def __init__(self, keys: KeysCollection, lower_percentile: float = 0.5, upper_percentile: float = 99.5,
                 output_range: Sequence[float] = DEFAULT_OUTPUT_RANGE, clip: bool = True,
                 foreground_threshold: float = 0.0, mask_key: Optional[str] = None, dtype: DtypeLike = np.float32,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.normalizer = NormalizeMRPercentile(lower_percentile=lower_percentile, upper_percentile=upper_percentile,
                                                output_range=output_range, clip=clip,
                                                foreground_threshold=foreground_threshold, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        mask = d[self.mask_key] if self.mask_key is not None else None
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key], mask=mask)
        return d


class BlendWithSourced(MapTransform):
    """Dictionary :class:`BlendWithSource`: ``keys`` (e.g. ``pred``) get back part of what separates them from
    ``source_key`` (e.g. ``image``), by frequency band."""

    backend = BlendWithSource.backend

    def __init__(self, keys: KeysCollection, source_key: str, weight: float = 0.0, sigma_vox: float = 0.0,
                 highpass_weight: float = 0.0, highpass_cutoff: float = 0.25, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key = source_key
        self.blender = BlendWithSource(weight=weight, sigma_vox=sigma_vox, highpass_weight=highpass_weight,
                                       highpass_cutoff=highpass_cutoff)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.blender(d[key], d[self.source_key])
        return d
