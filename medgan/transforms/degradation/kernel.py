"""Simulated reconstruction kernels: re-filtered back-projection of a CT's own sinogram.

The image is taken to be reconstructed with a *reference* filter. It is forward-projected
(parallel beam, :mod:`.projector`) and back-projected with the filter
``ramp x (W_target / W_reference - 1)``; adding that to the image gives the image as if it had been
reconstructed with the *target* filter. With the default reference (Ram-Lak, i.e. the image is
taken as is) any target filter smooths; a sharper target than the reference boosts frequencies
up to ``max_gain``. Smooth/sharp pairs of one scan come from two targets, or from the image and
one target. FBP is linear, so only the change is reconstructed: the unchanged frequencies keep the
real image exactly, without re-projection error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np

from medgan.errors import SimulationError
from medgan.transforms.degradation.lowdose import PADDING_FLOOR_HU, check_ct_hu
from medgan.transforms.degradation.projector import (
    ParallelBeamGeometry,
    auto_n_views,
    check_filter,
    make_relative_filter,
    map_slices,
    open_projector,
)


@dataclass(frozen=True)
class KernelParameters:
    """Every parameter of one kernel simulation (recorded in the image metadata).

    Attributes:
        filter_name: target FBP filter (``ram-lak``, ``shepp-logan``, ``cosine``, ``hamming``, ``hann``).
        cutoff: target cut-off, fraction of Nyquist, in (0, 1].
        reference_filter: the filter the input is taken to be reconstructed with.
        reference_cutoff: its cut-off.
        max_gain: cap of the frequency gain when the target is sharper than the reference (> 1).
        n_views: projection angles; ``None``: about pi/2 x the slice width (180 to 720).
        projector: astra projector type.
    """

    filter_name: str = "hann"
    cutoff: float = 1.0
    reference_filter: str = "ram-lak"
    reference_cutoff: float = 1.0
    max_gain: float = 3.0
    n_views: Optional[int] = None
    projector: str = "linear"

    def __post_init__(self) -> None:
        check_filter(self.filter_name, self.cutoff)
        check_filter(self.reference_filter, self.reference_cutoff)
        if self.max_gain < 1.0:
            raise SimulationError(f"max_gain={self.max_gain} is below 1", fix="use a gain cap such as 3")

    def for_shape(self, rows: int, cols: int) -> "KernelParameters":
        """A copy with ``n_views`` resolved for slices of ``(rows, cols)``."""
        if self.n_views is not None:
            return self
        return dataclasses.replace(self, n_views=auto_n_views(rows, cols, max_views=720))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def simulate_kernel(image_hu: np.ndarray, params: KernelParameters, num_threads: Optional[int] = None) -> np.ndarray:
    """Re-reconstruct a CT volume with another FBP filter.

    Args:
        image_hu: ``(X, Y, Z)`` CT in HU (not modified).
        params: target and reference filters and geometry.
        num_threads: threads over slices (``None``: all CPUs this process may use).

    Returns:
        ``(X, Y, Z)`` float32 CT in HU as reconstructed with the target filter.
    """
    check_ct_hu(image_hu)
    volume = np.asarray(image_hu, dtype=np.float32)
    params = params.for_shape(volume.shape[0], volume.shape[1])
    geometry = ParallelBeamGeometry(volume.shape[0], volume.shape[1], params.n_views, projector=params.projector)
    sino_filter = make_relative_filter(geometry, params.filter_name, params.cutoff, params.reference_filter,
                                       params.reference_cutoff, params.max_gain)
    with open_projector(geometry) as projector:

        def one_slice(k: int, hu_slice: np.ndarray) -> np.ndarray:
            relative_mu = np.maximum(1.0 + np.maximum(hu_slice, PADDING_FLOOR_HU) / 1000.0, 0.0)  # mu / mu_water
            return hu_slice + 1000.0 * projector.back(sino_filter(projector.forward(relative_mu)))

        return map_slices(one_slice, volume, num_threads=num_threads)
