"""Dictionary versions of the body masks: read an image key, write the mask under ``mask_key``."""

from __future__ import annotations

from typing import Hashable, Mapping, Optional, Sequence

from monai.config import KeysCollection
from monai.transforms import MapTransform

from medgan.keys import Keys
from medgan.transforms.mask.array import (DEFAULT_CT_THRESHOLD_HU, DEFAULT_OPENING_RADIUS_MM, CTBodyMask,
                                          MRBodyMask)


class _BodyMaskd(MapTransform):
    def __init__(self, keys: KeysCollection, mask_key: str, allow_missing_keys: bool) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"a body mask is computed from one image key, got {self.keys}")
        self.mask_key = mask_key
        self.masker: CTBodyMask | MRBodyMask

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.mask_key] = self.masker(d[key])
        return d


class CTBodyMaskd(_BodyMaskd):
    """Dictionary :class:`CTBodyMask`: ``d[mask_key]`` = body mask of the CT ``d[keys]``."""

    backend = CTBodyMask.backend

    def __init__(self, keys: KeysCollection, mask_key: str = Keys.BODY_MASK.value,
                 threshold_hu: float = DEFAULT_CT_THRESHOLD_HU, opening_radius_mm: float = DEFAULT_OPENING_RADIUS_MM,
                 spacing_mm: Optional[Sequence[float]] = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, mask_key, allow_missing_keys)
        self.masker = CTBodyMask(threshold_hu=threshold_hu, opening_radius_mm=opening_radius_mm, spacing_mm=spacing_mm)


class MRBodyMaskd(_BodyMaskd):
    """Dictionary :class:`MRBodyMask`: ``d[mask_key]`` = body mask of the MR ``d[keys]``."""

    backend = MRBodyMask.backend

    def __init__(self, keys: KeysCollection, mask_key: str = Keys.BODY_MASK.value, method: str = "percentile",
                 percentile: float = 99.0, fraction: float = 0.1, opening_radius_mm: float = DEFAULT_OPENING_RADIUS_MM,
                 spacing_mm: Optional[Sequence[float]] = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, mask_key, allow_missing_keys)
        self.masker = MRBodyMask(method=method, percentile=percentile, fraction=fraction,
                                 opening_radius_mm=opening_radius_mm, spacing_mm=spacing_mm)
