"""Simulated thick slices: slab averaging along z with a slice sensitivity profile (SSP).

Each thin slice ``j`` is taken to cover ``[z_j - dz/2, z_j + dz/2]``; a thick slice centred at
``c`` weights it by the integral of the SSP over that interval (so a rectangular 5 mm profile over
1 mm slices is a plain 5-slice mean, and non-integer ratios get partial edge weights). Profiles,
all with full width at half maximum = ``thickness_mm``:

- ``rectangular``: width ``thickness_mm``;
- ``triangular``: base ``2 x thickness_mm``;
- ``gaussian``: ``sigma = thickness_mm / 2.3548``, truncated at ``+-2 x thickness_mm``.

The first thick slice is centred on the first ``thickness_mm / dz`` thin slices (its nominal
extent starts where the thin volume starts), the next ones every ``interval_mm``; only thick
slices whose nominal extent lies inside the thin volume are made. Where a wide profile runs past
the ends of the volume it is truncated and renormalised. The output affine keeps the in-plane
axes and puts each thick slice at its centre.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from scipy.special import erf

from medgan.errors import SimulationError

PROFILES: Tuple[str, ...] = ("rectangular", "triangular", "gaussian")
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass(frozen=True)
class ThickSliceParameters:
    """Every parameter of one thick-slice simulation (recorded in the image metadata).

    Attributes:
        thickness_mm: nominal slice thickness (FWHM of the SSP), mm.
        interval_mm: distance between thick slice centres, mm; ``None``: = ``thickness_mm``.
        profile: ``rectangular``, ``triangular`` or ``gaussian``.
    """

    thickness_mm: float
    interval_mm: Optional[float] = None
    profile: str = "rectangular"

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise SimulationError(f"unknown slice sensitivity profile {self.profile!r}",
                                  fix=f"use one of {', '.join(PROFILES)}")
        if not self.thickness_mm > 0 or (self.interval_mm is not None and not self.interval_mm > 0):
            raise SimulationError(
                f"thickness {self.thickness_mm} mm and interval {self.interval_mm} mm must be positive",
                fix="give e.g. thickness 5 and interval 5 (or leave the interval out)")

    @property
    def resolved_interval_mm(self) -> float:
        return self.thickness_mm if self.interval_mm is None else self.interval_mm

    def as_dict(self) -> dict:
        record = dataclasses.asdict(self)
        record["interval_mm"] = self.resolved_interval_mm
        return record


def _profile_cdf(profile: str, thickness_mm: float, z: np.ndarray) -> np.ndarray:
    """Cumulative SSP (unit area) at offsets ``z`` (mm) from the slice centre."""
    if profile == "rectangular":
        return np.clip(z / thickness_mm + 0.5, 0.0, 1.0)
    if profile == "triangular":
        u = np.clip(z / thickness_mm, -1.0, 1.0)  # base half-width = thickness
        return np.where(u < 0, 0.5 * (1.0 + u) ** 2, 1.0 - 0.5 * (1.0 - u) ** 2)
    sigma = thickness_mm * _FWHM_TO_SIGMA
    limit = 2.0 * thickness_mm
    zc = np.clip(z, -limit, limit)
    return 0.5 * (1.0 + erf(zc / (sigma * math.sqrt(2.0))))


def thick_slice_weights(n_thin: int, thin_spacing_mm: float,
                        params: ThickSliceParameters) -> Tuple[np.ndarray, np.ndarray]:
    """Weights of thin slices in each thick slice, and the thick slice centres.

    Args:
        n_thin: number of thin slices.
        thin_spacing_mm: thin slice spacing (taken as their thickness), mm.
        params: thickness, interval, profile.

    Returns:
        ``(weights, centres_vox)``: ``(n_thick, n_thin)`` rows summing to 1, and the thick slice
        centres in thin voxel coordinates ``(n_thick,)``.

    Raises:
        SimulationError: the thick slices would be thinner than the thin ones, or the volume is
            shorter than one thick slice.
    """
    thickness, interval = params.thickness_mm, params.resolved_interval_mm
    if thickness < thin_spacing_mm * (1 - 1e-6):
        raise SimulationError(
            f"thick slices of {thickness} mm cannot be made from {thin_spacing_mm:.3f} mm slices",
            fix="give a thickness at least the input slice spacing")
    extent = n_thin * thin_spacing_mm
    if thickness > extent + 1e-6:
        raise SimulationError(
            f"the volume covers only {extent:.1f} mm along z, less than one {thickness} mm slice",
            fix="give a thinner slice thickness or a longer volume")
    n_thick = int(math.floor((extent - thickness) / interval + 1e-6)) + 1
    centres_mm = 0.5 * thickness + interval * np.arange(n_thick)  # from the start of the first thin slice
    lower = thin_spacing_mm * np.arange(n_thin)
    offsets = lower[None, :] - centres_mm[:, None]
    weights = (_profile_cdf(params.profile, thickness, offsets + thin_spacing_mm)
               - _profile_cdf(params.profile, thickness, offsets))
    weights /= weights.sum(axis=1, keepdims=True)
    return weights, centres_mm / thin_spacing_mm - 0.5


def thick_slice_affine(affine: np.ndarray, centres_vox: np.ndarray, interval_mm: float,
                       thin_spacing_mm: float) -> np.ndarray:
    """Affine of the thick volume: same in-plane axes, slice axis scaled, origin at the first thick centre."""
    thin = np.asarray(affine, dtype=np.float64)
    thick = thin.copy()
    thick[:3, 2] = thin[:3, 2] * (interval_mm / thin_spacing_mm)
    thick[:3, 3] = thin[:3, :3] @ np.array([0.0, 0.0, centres_vox[0]]) + thin[:3, 3]
    return thick


def simulate_thick_slices(volume: np.ndarray, affine: np.ndarray,
                          params: ThickSliceParameters) -> Tuple[np.ndarray, np.ndarray]:
    """Average thin slices into thick ones with a slice sensitivity profile.

    Args:
        volume: ``(X, Y, Z)`` thin-slice volume (any modality; not modified).
        affine: its voxel -> RAS mm affine ``(4, 4)``; the z spacing is the norm of its third column.
        params: thickness, interval and profile.

    Returns:
        ``(thick, thick_affine)``: ``(X, Y, Z')`` float32 and its ``(4, 4)`` affine.
    """
    values = np.asarray(volume, dtype=np.float32)
    if not np.isfinite(values).all():
        raise SimulationError("the volume contains NaN or infinite values", None,
                              "give a volume without missing values (averaging would spread them into whole slabs)")
    thin_spacing_mm = float(np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, 2]))
    weights, centres = thick_slice_weights(volume.shape[2], thin_spacing_mm, params)
    thick = np.tensordot(values, weights.T.astype(np.float32), axes=([2], [0]))
    return thick.astype(np.float32), thick_slice_affine(affine, centres, params.resolved_interval_mm, thin_spacing_mm)
