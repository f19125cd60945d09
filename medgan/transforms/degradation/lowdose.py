"""Simulated low-dose CT: Poisson + electronic noise inserted in the projection domain.

Physics (per axial slice, parallel beam, see :mod:`.projector`):

1. HU -> linear attenuation ``mu = mu_water * (1 + HU / 1000)`` with ``mu_water = 0.0193 /mm``
   (water at the ~70 keV effective energy of a 120 kVp beam; NIST XCOM 0.1929 cm^2/g at 70 keV),
   clipped at 0 (values below -1024 HU are scanner padding and count as air).
2. Forward projection ``p`` (line integrals) with detector bins one pixel wide.
3. Transmitted counts ``I = Poisson(N * exp(-p)) + Normal(0, electronic_noise_sd^2)`` with
   ``N`` the incident photons per bin and view at the simulated dose, floored at 1 count, and the
   noisy line integrals ``p_noisy = -log(I / N)``.
4. ``low = image + FBP(p_noisy) - FBP(p)``. FBP is linear, so this is one FBP of ``p_noisy - p``
   with the *same* filter for both terms: the pair differs only by noise, and the real image is
   kept as the normal-dose image (no re-projection error enters the pair).

``I0`` is an *effective* photon count per detector bin at full dose, summed over one 180-degree
rotation: ``N = I0 * dose_fraction / n_views * (i0_reference_pixel_mm / pixel_mm)^2``. FBP noise
scales as ``1 / (pixel_mm * sqrt(photons per bin))``, so quoting ``I0`` for a reference pixel and
scaling it by ``1/pixel^2`` makes a dose fraction give the same noise SD in HU on any grid (the
noise a reader sees at that dose, whatever the voxel size); ``i0_reference_pixel_mm=None`` takes
``I0`` per bin of the image's own pixel size instead (fixed fluence: larger pixels, less noise).
The default was calibrated on a real 3 mm abdominal CT: at ``dose_fraction=0.25`` the noise
standard deviation of ``low - normal`` in soft tissue is in the 43-59 HU range measured on the
Mayo 2016 quarter-dose data (see docs/simulation.md). Use :func:`calibrate_i0` to reach another
noise level.

The fast path :func:`simulate_low_dose_fast` draws image-domain noise with the FBP noise power
spectrum of the same geometry and filter, scaled pixel by pixel by the variance that the
projection path would give (the back-projection of the ray variances, computed on a coarse grid).
"""

from __future__ import annotations

import logging
import math
import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Tuple

import numpy as np

from medgan.errors import SimulationError
from medgan.transforms.degradation.projector import (
    ParallelBeamGeometry,
    auto_n_views,
    check_filter,
    make_filter,
    map_slices,
    open_projector,
)

logger = logging.getLogger(__name__)

MU_WATER_PER_MM: float = 0.0193
"""Linear attenuation of water at ~70 keV (effective energy of a 120 kVp beam), 1/mm."""

AIR_HU: float = -1000.0
PADDING_FLOOR_HU: float = -1024.0
DEFAULT_I0_PHOTONS: float = 5.85e8
"""Effective incident photons per 1 mm detector bin per rotation at full dose (see the module docstring)."""
DEFAULT_I0_REFERENCE_PIXEL_MM: float = 1.0
DEFAULT_ELECTRONIC_NOISE_SD: float = 3.0
"""Electronic noise standard deviation, in detected counts per bin per view."""
_MIN_COUNTS: float = 1.0


@dataclass(frozen=True)
class LowDoseParameters:
    """Every parameter of one low-dose simulation (recorded in the image metadata).

    Attributes:
        dose_fraction: simulated dose / real dose, in (0, 1].
        seed: seed of the noise draw.
        i0_photons: effective incident photons per detector bin at full dose, summed over the
            views of one 180-degree rotation (each view receives ``i0_photons / n_views``), so the
            noise level does not depend on the number of views.
        electronic_noise_sd: electronic noise SD in counts per bin per view.
        n_views: projection angles over 180 degrees; ``None``: :func:`auto_n_views` of the slice size.
        filter_name: FBP filter of the noise reconstruction.
        cutoff: filter cut-off, fraction of Nyquist.
        mu_water_per_mm: attenuation of water, 1/mm.
        projector: astra projector type.
        i0_reference_pixel_mm: pixel size that ``i0_photons`` is quoted for; photons per bin scale
            as ``(i0_reference_pixel_mm / pixel_mm)^2`` (same noise on any grid). ``None``:
            ``i0_photons`` is per bin of the image's own pixel size.
    """

    dose_fraction: float
    seed: int
    i0_photons: float = DEFAULT_I0_PHOTONS
    electronic_noise_sd: float = DEFAULT_ELECTRONIC_NOISE_SD
    n_views: Optional[int] = None
    filter_name: str = "ram-lak"
    cutoff: float = 1.0
    mu_water_per_mm: float = MU_WATER_PER_MM
    projector: str = "linear"
    i0_reference_pixel_mm: Optional[float] = DEFAULT_I0_REFERENCE_PIXEL_MM

    def __post_init__(self) -> None:
        check_dose_fraction(self.dose_fraction)
        check_filter(self.filter_name, self.cutoff)
        if self.i0_photons <= 0 or self.electronic_noise_sd < 0 or self.mu_water_per_mm <= 0:
            raise SimulationError(
                f"i0_photons={self.i0_photons}, electronic_noise_sd={self.electronic_noise_sd} and "
                f"mu_water_per_mm={self.mu_water_per_mm} must be positive (electronic noise may be 0)",
                fix="use the defaults unless you calibrated other values")

    def for_shape(self, rows: int, cols: int) -> "LowDoseParameters":
        """A copy with ``n_views`` resolved for slices of ``(rows, cols)`` (what gets recorded)."""
        if self.n_views is not None:
            return self
        return dataclasses.replace(self, n_views=auto_n_views(rows, cols))

    def as_dict(self) -> dict:
        """Plain-type dict of the parameters (for metadata and manifests)."""
        return dataclasses.asdict(self)

    def photons_per_bin_view(self, pixel_mm: float) -> float:
        """Incident photons per detector bin and view at the simulated dose (needs ``n_views`` resolved)."""
        scale = 1.0 if self.i0_reference_pixel_mm is None else (self.i0_reference_pixel_mm / pixel_mm) ** 2
        return self.i0_photons * self.dose_fraction / self.n_views * scale


def check_dose_fraction(dose_fraction: float) -> None:
    """Raise :class:`SimulationError` unless ``0 < dose_fraction <= 1``."""
    if not (isinstance(dose_fraction, (int, float)) and math.isfinite(dose_fraction) and 0.0 < dose_fraction <= 1.0):
        raise SimulationError(
            f"dose fraction {dose_fraction!r} is outside (0, 1]: it is the simulated dose divided by the real "
            "scan's dose, and noise can only be added, not removed",
            fix="give a dose fraction such as 0.25 (quarter dose) or 0.1")


def check_ct_hu(image_hu: np.ndarray, name: str = "the input volume") -> None:
    """Check that a volume looks like a CT in Hounsfield units with air in it.

    The simulators convert HU to attenuation, which is only meaningful for CT values in HU; air
    (about -1000 HU) must be present, because it anchors the HU scale and the attenuation path.

    Args:
        image_hu: ``(X, Y, Z)`` values.
        name: how to name the volume in the error (usually its file path).

    Raises:
        SimulationError: non-finite values, no air near -1000 HU (an MR, a rescaled or raw-stored
            CT), or intensities far outside the HU range.
    """
    values = np.asarray(image_hu)
    if not np.isfinite(values).all():
        raise SimulationError("the volume contains NaN or infinite values", name,
                              fix="give a CT in Hounsfield units without missing values")
    low, high = float(values.min()), float(values.max())
    if low > -500.0:
        raise SimulationError(
            f"no voxel below -500 HU (range {low:.0f} to {high:.0f}): this is not a CT in Hounsfield units "
            "with air around the body (an MR, a CT stored without its rescale slope/intercept, or a crop "
            "inside the body)", name,
            fix="give a CT volume in HU that includes air outside the body")
    air_fraction = float(np.mean((values > -1100.0) & (values < -900.0)))
    if air_fraction < 0.001:
        raise SimulationError(
            f"only {100 * air_fraction:.3f}% of voxels are air (-1100 to -900 HU); the HU scale cannot be "
            "checked and the attenuation path is not that of a whole cross-section", name,
            fix="give a CT volume in HU whose field of view includes air around the body")
    if high > 5000.0 or low < -3100.0:
        raise SimulationError(
            f"values range from {low:.0f} to {high:.0f}, outside the Hounsfield scale (-1024..~3071, "
            "down to -3024 for padding)", name,
            fix="convert the CT to HU (apply the DICOM rescale slope and intercept) before simulating")


def hu_to_mu_per_pixel(image_hu: np.ndarray, pixel_mm: float, mu_water_per_mm: float = MU_WATER_PER_MM) -> np.ndarray:
    """Linear attenuation per pixel width, ``mu_water * (1 + HU/1000) * pixel_mm``, clipped at 0 (float32)."""
    hu = np.maximum(np.asarray(image_hu, dtype=np.float32), PADDING_FLOOR_HU)
    return np.maximum(mu_water_per_mm * pixel_mm * (1.0 + hu / 1000.0), 0.0).astype(np.float32)


def in_plane_pixel_mm(spacing_mm: Tuple[float, ...], name: str = "the input volume", tolerance: float = 0.01) -> float:
    """The in-plane pixel size; the projector needs square pixels (X and Y spacing within 1%)."""
    sx, sy = float(spacing_mm[0]), float(spacing_mm[1])
    if abs(sx - sy) > tolerance * max(sx, sy):
        raise SimulationError(f"in-plane pixels are not square ({sx:.3f} x {sy:.3f} mm)", name,
                              fix="resample the volume to square in-plane pixels first")
    return 0.5 * (sx + sy)


def _counts_to_delta_p(p: np.ndarray, rng: np.random.Generator, blank: float,
                       electronic_noise_sd: float) -> np.ndarray:
    """Noisy minus noiseless line integrals for line integrals ``p`` and ``blank`` incident photons."""
    expected = blank * np.exp(-p.astype(np.float64))
    counts = rng.poisson(expected).astype(np.float64)
    if electronic_noise_sd > 0:
        counts += rng.normal(0.0, electronic_noise_sd, size=counts.shape)
    counts = np.maximum(counts, _MIN_COUNTS)
    return (-np.log(counts / blank) - p).astype(np.float32)


def _slice_rngs(seed: int, n_slices: int) -> list:
    """One generator per slice, independent of the thread that runs it (reproducible)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n_slices)]


def simulate_low_dose(
    image_hu: np.ndarray,
    pixel_mm: float,
    params: LowDoseParameters,
    num_threads: Optional[int] = None,
) -> np.ndarray:
    """Projection-domain low-dose simulation of a CT volume (the reference path).

    Args:
        image_hu: ``(X, Y, Z)`` CT in HU (not modified); slices are ``image_hu[:, :, k]``.
        pixel_mm: in-plane pixel size, mm (square pixels).
        params: the simulation parameters (dose, photons, noise, geometry, filter, seed).
        num_threads: threads over slices (``None``: all CPUs this process may use).

    Returns:
        ``(X, Y, Z)`` float32 low-dose CT in HU: ``image_hu`` plus reconstructed noise.
    """
    check_ct_hu(image_hu)
    volume = np.asarray(image_hu, dtype=np.float32)
    params = params.for_shape(volume.shape[0], volume.shape[1])
    geometry = ParallelBeamGeometry(volume.shape[0], volume.shape[1], params.n_views, projector=params.projector)
    sino_filter = make_filter(geometry, params.filter_name, params.cutoff)
    rngs = _slice_rngs(params.seed, volume.shape[2])
    hu_per_mu_px = 1000.0 / (params.mu_water_per_mm * pixel_mm)
    blank = params.photons_per_bin_view(pixel_mm)

    with open_projector(geometry) as projector:

        def one_slice(k: int, hu_slice: np.ndarray) -> np.ndarray:
            p = projector.forward(hu_to_mu_per_pixel(hu_slice, pixel_mm, params.mu_water_per_mm))
            delta_p = _counts_to_delta_p(p, rngs[k], blank, params.electronic_noise_sd)
            delta = projector.back(sino_filter(delta_p))
            return hu_slice + hu_per_mu_px * delta

        return map_slices(one_slice, volume, num_threads=num_threads)


@dataclass(frozen=True)
class _NoiseTexture:
    """FBP noise of a geometry and filter: pixel variance per unit ray variance, and its spectrum."""

    variance_per_ray_variance: float
    amplitude: np.ndarray  # (rows, cols // 2 + 1) rfft2 amplitude giving unit-variance noise


@lru_cache(maxsize=8)
def _noise_texture(rows: int, cols: int, n_views: int, filter_name: str, cutoff: float, projector: str,
                   realisations: int = 2) -> _NoiseTexture:
    """Measure the noise that FBP makes of white, unit-variance ray noise in this geometry."""
    geometry = ParallelBeamGeometry(rows, cols, n_views, projector=projector)
    sino_filter = make_filter(geometry, filter_name, cutoff)
    rng = np.random.default_rng(20240501)
    power = np.zeros((rows, cols // 2 + 1))
    variance = 0.0
    with open_projector(geometry) as proj:
        for _ in range(realisations):
            noise = proj.back(sino_filter(rng.standard_normal((n_views, geometry.n_detectors)).astype(np.float32)))
            variance += float(noise.var()) / realisations
            power += np.abs(np.fft.rfft2(noise - noise.mean())) ** 2 / realisations
    # radially average the measured spectrum, then read it back on the 2D grid (smooth, isotropic)
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(rows), np.fft.rfftfreq(cols), indexing="ij"))
    bins = np.minimum((radius * 2 * max(rows, cols)).astype(int), max(rows, cols))
    profile = np.bincount(bins.ravel(), power.ravel()) / np.maximum(np.bincount(bins.ravel()), 1)
    spectrum = profile[bins]
    # full-spectrum mean of |F|^2 over the rfft half-plane, weighting the duplicated columns twice
    weights = np.full(spectrum.shape[1], 2.0)
    weights[0] = 1.0
    if cols % 2 == 0:
        weights[-1] = 1.0
    mean_power = float((spectrum * weights).sum() / (rows * cols))
    return _NoiseTexture(variance, np.sqrt(spectrum / mean_power))


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    rows, cols = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    trimmed = image[:rows, :cols]
    return trimmed.reshape(rows // factor, factor, cols // factor, factor).mean(axis=(1, 3))


def simulate_low_dose_fast(
    image_hu: np.ndarray,
    pixel_mm: float,
    params: LowDoseParameters,
    variance_grid_px: int = 128,
    variance_views: int = 90,
    num_threads: Optional[int] = None,
) -> np.ndarray:
    """Fast image-domain approximation of :func:`simulate_low_dose`.

    Noise = (white noise shaped by the FBP noise power spectrum of the same geometry and filter)
    x sqrt(local variance). The local variance is what FBP makes of the ray variances
    ``(lambda + sigma_e^2) / lambda^2`` (``lambda`` the expected counts): their back-projection,
    computed on a coarse grid (``variance_grid_px`` pixels across, ``variance_views`` views) and
    interpolated. It ignores count flooring (photon starvation) and the correlation between the
    variance pattern and the texture; docs/simulation.md gives its agreement with the projection path.

    Args:
        image_hu: ``(X, Y, Z)`` CT in HU (not modified).
        pixel_mm: in-plane pixel size, mm.
        params: as for :func:`simulate_low_dose`.
        variance_grid_px: longest side of the coarse grid of the variance map.
        variance_views: views of the coarse projection.
        num_threads: threads over slices.

    Returns:
        ``(X, Y, Z)`` float32 low-dose CT in HU.
    """
    from scipy.ndimage import zoom

    check_ct_hu(image_hu)
    volume = np.asarray(image_hu, dtype=np.float32)
    rows, cols = volume.shape[:2]
    params = params.for_shape(rows, cols)
    texture = _noise_texture(rows, cols, params.n_views, params.filter_name, params.cutoff, params.projector)
    factor = max(1, int(math.ceil(max(rows, cols) / variance_grid_px)))
    coarse = ParallelBeamGeometry(rows // factor, cols // factor, variance_views, projector="linear")
    rngs = _slice_rngs(params.seed, volume.shape[2])
    hu_per_mu_px = 1000.0 / (params.mu_water_per_mm * pixel_mm)
    blank = params.photons_per_bin_view(pixel_mm)

    with open_projector(coarse) as projector:
        coverage = projector.back(np.ones((coarse.n_views, coarse.n_detectors), np.float32))
        coverage = np.maximum(coverage, 1e-6 * coverage.max())

        def one_slice(k: int, hu_slice: np.ndarray) -> np.ndarray:
            mu_coarse = _block_mean(hu_to_mu_per_pixel(hu_slice, pixel_mm * factor, params.mu_water_per_mm), factor)
            expected = blank * np.exp(-projector.forward(mu_coarse).astype(np.float64))
            ray_variance = (expected + params.electronic_noise_sd ** 2) / expected ** 2
            variance = projector.back(ray_variance.astype(np.float32)) / coverage
            variance = zoom(variance, (rows / variance.shape[0], cols / variance.shape[1]), order=1)
            white = rngs[k].standard_normal((rows, cols))
            shaped = np.fft.irfft2(np.fft.rfft2(white) * texture.amplitude, s=(rows, cols))
            sd_hu = hu_per_mu_px * np.sqrt(texture.variance_per_ray_variance * np.maximum(variance, 0.0))
            return hu_slice + (shaped * sd_hu).astype(np.float32)

        return map_slices(one_slice, volume, num_threads=num_threads)


def calibrate_i0(
    image_hu: np.ndarray,
    pixel_mm: float,
    tissue_mask: np.ndarray,
    target_sd_hu: float,
    dose_fraction: float = 0.25,
    params: Optional[LowDoseParameters] = None,
    iterations: int = 3,
) -> float:
    """Find the effective ``I0`` giving ``target_sd_hu`` of ``low - normal`` inside ``tissue_mask``.

    Quantum noise SD scales as ``1/sqrt(I0)``, so each iteration rescales ``I0`` by the squared
    ratio of measured to target SD (electronic noise makes a few iterations useful).

    Args:
        image_hu: ``(X, Y, Z)`` CT in HU; a few slices suffice.
        pixel_mm: in-plane pixel size, mm.
        tissue_mask: ``(X, Y, Z)`` bool, where to measure the noise (e.g. soft tissue).
        target_sd_hu: wanted noise SD, HU.
        dose_fraction: the dose at which the target holds.
        params: other parameters (geometry, filter, seed); ``dose_fraction``/``i0_photons`` are replaced.
        iterations: rescaling steps.

    Returns:
        The calibrated ``i0_photons``.
    """
    if not tissue_mask.any():
        raise SimulationError("the tissue mask used for calibration is empty",
                              fix="give a mask of soft tissue (e.g. 0..100 HU, eroded)")
    base = params or LowDoseParameters(dose_fraction=dose_fraction, seed=0)
    i0 = base.i0_photons
    for _ in range(iterations):
        trial = dataclasses.replace(base, dose_fraction=dose_fraction, i0_photons=i0)
        noise = simulate_low_dose(image_hu, pixel_mm, trial) - np.asarray(image_hu, dtype=np.float32)
        measured = float(noise[tissue_mask].std())
        logger.info("calibrate_i0: I0=%.4g gives %.2f HU (target %.2f HU)", i0, measured, target_sd_hu)
        i0 *= (measured / target_sd_hu) ** 2
    return i0


__all__ = [
    "MU_WATER_PER_MM", "DEFAULT_I0_PHOTONS", "DEFAULT_ELECTRONIC_NOISE_SD", "LowDoseParameters",
    "check_dose_fraction", "check_ct_hu", "hu_to_mu_per_pixel", "in_plane_pixel_mm",
    "simulate_low_dose", "simulate_low_dose_fast", "calibrate_i0",
]
