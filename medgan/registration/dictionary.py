"""Registration as a MONAI dictionary transform for pipelines."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from medgan.registration.array import RegisterToFixed
from medgan.registration.register import ImageRegistration


class RegisterToFixedd(MapTransform):
    """Dictionary version of :class:`RegisterToFixed`: put ``keys`` onto the grid of ``fixed_key``.

    Each moving key is registered to ``data[fixed_key]`` and replaced by its registered version (QC and
    transform in its ``meta["medgan"]["RegisterToFixed"]``). QC failure raises
    :class:`medgan.errors.RegistrationError`.

    Args:
        keys: keys of the moving volumes.
        fixed_key: key of the fixed volume (left unchanged).
        registration: the configured registration; ``ImageRegistration()`` if None.
        allow_missing_keys: skip moving keys that are absent.
    """

    def __init__(self, keys: KeysCollection, fixed_key: str, registration: ImageRegistration | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if fixed_key in self.keys:
            raise ValueError(f"fixed_key {fixed_key!r} cannot also be a moving key")
        self.fixed_key = fixed_key
        self.register = RegisterToFixed(registration)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.register(d[key], d[self.fixed_key])
        return d
