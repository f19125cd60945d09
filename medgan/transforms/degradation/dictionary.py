"""Dictionary versions of the degradation simulators: they route keys, the maths lives in ``array.py``.

To make a training pair from one real scan, copy it first and degrade the copy::

    Compose([LoadImaged("target", ensure_channel_first=False), CopyItemsd("target", names="source"),
             RandSimulateLowDosed("source", dose_fraction_range=(0.1, 0.5))])

The ``Rand*d`` versions draw once per call and apply the same parameters to every key.
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, Mapping, Optional, Sequence

from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, Transform

from medgan.transforms.degradation.array import (
    RandSimulateKernel,
    RandSimulateLowDose,
    RandSimulateThickSlices,
    SimulateKernel,
    SimulateLowDose,
    SimulateThickSlices,
)


class _Simulated(MapTransform):
    """Apply one array simulator to every key."""

    def __init__(self, keys: KeysCollection, transform: Transform, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = transform

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class _RandSimulated(RandomizableTransform, MapTransform):
    """Draw the parameters of a ``Rand*`` array simulator once and apply them to every key."""

    def __init__(self, keys: KeysCollection, transform: RandomizableTransform,
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)  # the array transform holds the probability
        self.transform = transform

    def set_random_state(self, seed: Optional[int] = None, state: Any = None) -> "_RandSimulated":
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        self.transform.randomize()

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], randomize=False)
        return d


class SimulateLowDosed(_Simulated):
    """Dictionary version of :class:`SimulateLowDose`; ``kwargs`` are its arguments."""

    def __init__(self, keys: KeysCollection, dose_fraction: float, allow_missing_keys: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(keys, SimulateLowDose(dose_fraction, **kwargs), allow_missing_keys)


class RandSimulateLowDosed(_RandSimulated):
    """Dictionary version of :class:`RandSimulateLowDose`; ``kwargs`` are its arguments."""

    def __init__(self, keys: KeysCollection, prob: float = 1.0, dose_fraction_range: Sequence[float] = (0.1, 0.5),
                 allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, RandSimulateLowDose(prob, dose_fraction_range, **kwargs), allow_missing_keys)


class SimulateKerneld(_Simulated):
    """Dictionary version of :class:`SimulateKernel`; ``kwargs`` are its arguments."""

    def __init__(self, keys: KeysCollection, filter_name: str = "hann", allow_missing_keys: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(keys, SimulateKernel(filter_name, **kwargs), allow_missing_keys)


class RandSimulateKerneld(_RandSimulated):
    """Dictionary version of :class:`RandSimulateKernel`; ``kwargs`` are its arguments."""

    def __init__(self, keys: KeysCollection, prob: float = 1.0, allow_missing_keys: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(keys, RandSimulateKernel(prob, **kwargs), allow_missing_keys)


class SimulateThickSlicesd(_Simulated):
    """Dictionary version of :class:`SimulateThickSlices`; ``kwargs`` are its arguments."""

    def __init__(self, keys: KeysCollection, thickness_mm: float, allow_missing_keys: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(keys, SimulateThickSlices(thickness_mm, **kwargs), allow_missing_keys)


class RandSimulateThickSlicesd(_RandSimulated):
    """Dictionary version of :class:`RandSimulateThickSlices`; ``kwargs`` are its arguments."""

    def __init__(self, keys: KeysCollection, prob: float = 1.0, allow_missing_keys: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(keys, RandSimulateThickSlices(prob, **kwargs), allow_missing_keys)


__all__ = [
    "SimulateLowDosed", "RandSimulateLowDosed", "SimulateKerneld", "RandSimulateKerneld",
    "SimulateThickSlicesd", "RandSimulateThickSlicesd",
]
