"""Parallel-beam CT projector and filtered back-projection (FBP) for the degradation simulators.

Geometry: 2D parallel beam, one axial slice ``(X, Y)`` at a time, ``n_views`` angles evenly over
180 degrees, detector bins as wide as one image pixel (so the reconstruction has the resolution of
the image grid), enough bins to cover the image diagonal. Lengths inside this module are in
**pixels**: attenuation is given per pixel (``mu_per_mm * pixel_mm``) and line integrals are
dimensionless.

The forward projector and the back-projector are astra-toolbox's CPU ``linear`` (Joseph) or
``strip`` projectors; the FBP filter is applied here in numpy so that every filter (and a ratio of
two filters, used to change kernel) is defined in one place. astra releases the GIL, so slices are
processed in a thread pool.

The filters follow the usual definitions (Kak & Slaney, ch. 3): the band-limited discrete ramp
(Ram-Lak) built in the spatial domain (no DC offset), multiplied by a window of the normalised
frequency ``f / f_c`` where ``f_c = cutoff * 0.5`` cycles/pixel.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np

from medgan.errors import SimulationError


FILTER_NAMES: Tuple[str, ...] = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
PROJECTOR_TYPES: Tuple[str, ...] = ("linear", "strip")


def _import_astra():
    try:
        import astra
    except ImportError as err:  # optional dependency: the ``simulation`` extra
        raise SimulationError(
            f"the CT projector needs astra-toolbox, which cannot be imported ({err})",
            fix="pip install 'medgan[simulation]' (astra-toolbox)",
        ) from None
    return astra


@dataclass(frozen=True)
class ParallelBeamGeometry:
    """A 2D parallel-beam geometry for slices of shape ``(rows, cols)``.

    Attributes:
        rows: image rows (the first axis of a slice, X of an ``(X, Y, Z)`` volume).
        cols: image columns (Y).
        n_views: projection angles, evenly spaced over [0, pi).
        n_detectors: detector bins, each one pixel wide.
        projector: astra CPU projector type, ``"linear"`` (Joseph, fast) or ``"strip"`` (area weights).
    """

    rows: int
    cols: int
    n_views: int = 360
    n_detectors: int = 0
    projector: str = "linear"

    def __post_init__(self) -> None:
        if self.n_detectors <= 0:
            object.__setattr__(self, "n_detectors", int(math.ceil(math.hypot(self.rows, self.cols))) + 4)
        if self.n_views < 16:
            raise SimulationError(f"n_views={self.n_views} is too few for FBP", fix="use 180 to 1440 views")
        if self.projector not in PROJECTOR_TYPES:
            raise SimulationError(f"unknown projector {self.projector!r}", fix=f"use one of {PROJECTOR_TYPES}")

    @property
    def angles_rad(self) -> np.ndarray:
        return np.linspace(0.0, np.pi, self.n_views, endpoint=False)


def auto_n_views(rows: int, cols: int, min_views: int = 180, max_views: int = 360) -> int:
    """Views for an image: about pi/2 x its width (angular Nyquist), a multiple of 30, within limits.

    The 360-view cap keeps a 512 x 512 slice near 1 s of CPU. For the low-dose path only noise is
    reconstructed, and its SD and radial NPS were the same for 180, 360 and 720 views on 512 x 512
    head slices; the kernel path re-projects the image and asks for up to 720.
    """
    views = 30 * int(math.ceil(0.5 * math.pi * max(rows, cols) / 30.0))
    return int(min(max_views, max(min_views, views)))


class _AstraProjector:
    """An astra projector for one geometry; usable from several threads at once."""

    def __init__(self, geometry: ParallelBeamGeometry) -> None:
        self.astra = _import_astra()
        self.geometry = geometry
        vol_geom = self.astra.create_vol_geom(geometry.rows, geometry.cols)
        proj_geom = self.astra.create_proj_geom("parallel", 1.0, geometry.n_detectors, geometry.angles_rad)
        self.projector_id = self.astra.create_projector(geometry.projector, proj_geom, vol_geom)

    def forward(self, image: np.ndarray) -> np.ndarray:
        """Line integrals ``(n_views, n_detectors)`` of one slice ``(rows, cols)`` (per-pixel units)."""
        sino_id, sino = self.astra.create_sino(np.ascontiguousarray(image, dtype=np.float32), self.projector_id)
        self.astra.data2d.delete(sino_id)
        return sino

    def back(self, sinogram: np.ndarray) -> np.ndarray:
        """Unnormalised back-projection (sum over views) ``(rows, cols)`` of ``(n_views, n_detectors)``."""
        bp_id, image = self.astra.create_backprojection(
            np.ascontiguousarray(sinogram, dtype=np.float32), self.projector_id)
        self.astra.data2d.delete(bp_id)
        return image

    def close(self) -> None:
        self.astra.projector.delete(self.projector_id)

    def __enter__(self) -> "_AstraProjector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_filter(filter_name: str, cutoff: float) -> None:
    """Raise :class:`SimulationError` for an unknown filter or a cut-off outside (0, 1]."""
    if filter_name not in FILTER_NAMES:
        raise SimulationError(f"unknown FBP filter {filter_name!r}", fix=f"use one of {', '.join(FILTER_NAMES)}")
    if not 0.0 < cutoff <= 1.0:
        raise SimulationError(f"filter cut-off {cutoff} is outside (0, 1] (fraction of the Nyquist frequency)",
                              fix="give a cut-off such as 0.5 to 1.0")


def filter_window(filter_name: str, cutoff: float, freqs: np.ndarray) -> np.ndarray:
    """Apodisation window of an FBP filter (the factor multiplying the ramp).

    Args:
        filter_name: one of :data:`FILTER_NAMES`.
        cutoff: cut-off as a fraction of the Nyquist frequency, in (0, 1].
        freqs: frequencies in cycles/pixel (any shape; ``abs`` is taken).

    Returns:
        The window, same shape as ``freqs``; zero above the cut-off.
    """
    check_filter(filter_name, cutoff)
    f_c = 0.5 * cutoff
    u = np.abs(freqs) / f_c  # 0 .. 1 inside the pass band
    if filter_name == "ram-lak":
        window = np.ones_like(u)
    elif filter_name == "shepp-logan":
        window = np.sinc(u / 2.0)  # sin(pi u / 2) / (pi u / 2)
    elif filter_name == "cosine":
        window = np.cos(np.pi * u / 2.0)
    elif filter_name == "hamming":
        window = 0.54 + 0.46 * np.cos(np.pi * u)
    else:  # hann
        window = 0.5 + 0.5 * np.cos(np.pi * u)
    return np.where(u <= 1.0, window, 0.0)


def _ramp_response(n_padded: int) -> np.ndarray:
    """Frequency response of the band-limited discrete ramp (spatial-domain definition, no DC bias)."""
    n = np.fft.fftfreq(n_padded, d=1.0 / n_padded)  # integer offsets, wrapped
    h = np.zeros(n_padded)
    h[0] = 0.25
    odd = (n.astype(int) % 2) == 1
    h[odd] = -1.0 / (np.pi * n[odd]) ** 2
    return np.real(np.fft.fft(h))


@dataclass(frozen=True)
class SinogramFilter:
    """The FBP filter applied along the detector axis: ramp x window (x optional relative gain).

    Build one with :func:`make_filter` or :func:`make_relative_filter`.

    Attributes:
        response: frequency response of length ``n_padded`` (FFT order), including the pi/n_views
            FBP normalisation so that back-projection of the filtered sinogram is the image.
        n_padded: zero-padded length of the detector axis.
    """

    response: np.ndarray
    n_padded: int

    def __call__(self, sinogram: np.ndarray) -> np.ndarray:
        """Filter ``(n_views, n_detectors)`` along the detector axis."""
        n_det = sinogram.shape[-1]
        spectrum = np.fft.rfft(sinogram, n=self.n_padded, axis=-1)
        filtered = np.fft.irfft(spectrum * self.response[: self.n_padded // 2 + 1], n=self.n_padded, axis=-1)
        return filtered[..., :n_det].astype(np.float32)


def _padded_length(n_detectors: int) -> int:
    return int(2 ** math.ceil(math.log2(2 * n_detectors)))


def make_filter(geometry: ParallelBeamGeometry, filter_name: str = "ram-lak", cutoff: float = 1.0) -> SinogramFilter:
    """The FBP filter ``ramp x window`` for ``geometry``.

    Args:
        geometry: the projection geometry (sets the padding and the pi/n_views factor).
        filter_name: one of :data:`FILTER_NAMES`.
        cutoff: cut-off as a fraction of Nyquist, in (0, 1].
    """
    n_padded = _padded_length(geometry.n_detectors)
    freqs = np.fft.fftfreq(n_padded)
    response = _ramp_response(n_padded) * filter_window(filter_name, cutoff, freqs)
    return SinogramFilter(response * (np.pi / geometry.n_views), n_padded)


def make_relative_filter(
    geometry: ParallelBeamGeometry,
    filter_name: str,
    cutoff: float,
    reference_filter: str,
    reference_cutoff: float,
    max_gain: float = 3.0,
) -> SinogramFilter:
    """A filter that turns an image reconstructed with the reference filter into one with the target filter.

    The image is re-projected, so its projections already carry the reference window. The returned
    filter is ``ramp x (W_target / W_reference - 1)``: back-projecting the image's sinogram with it
    gives the *change* to add to the image. Where the reference window is small the gain is capped
    at ``max_gain`` (sharpening cannot restore frequencies the reference removed).

    Args:
        geometry: the projection geometry.
        filter_name, cutoff: the target filter.
        reference_filter, reference_cutoff: the filter the image is taken to be reconstructed with.
        max_gain: cap on ``W_target / W_reference`` (> 1).
    """
    n_padded = _padded_length(geometry.n_detectors)
    freqs = np.fft.fftfreq(n_padded)
    target = filter_window(filter_name, cutoff, freqs)
    reference = filter_window(reference_filter, reference_cutoff, freqs)
    ratio = np.where(reference > target / max_gain, target / np.maximum(reference, 1e-12), max_gain)
    ratio = np.where(target > 0, ratio, 0.0)
    response = _ramp_response(n_padded) * (ratio - 1.0)
    return SinogramFilter(response * (np.pi / geometry.n_views), n_padded)


def default_num_threads() -> int:
    """Threads for the slice loop: the CPUs this process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def map_slices(
    function: Callable[[int, np.ndarray], np.ndarray],
    volume: np.ndarray,
    out_dtype: "np.dtype | type" = np.float32,
    num_threads: Optional[int] = None,
) -> np.ndarray:
    """Apply ``function(k, slice)`` to every axial slice ``volume[:, :, k]`` in a thread pool.

    Args:
        function: maps the slice index and the ``(X, Y)`` slice to an ``(X, Y)`` array.
        volume: ``(X, Y, Z)``.
        out_dtype: dtype of the result.
        num_threads: threads (``None``: :func:`default_num_threads`).

    Returns:
        ``(X, Y, Z)`` array of the results.
    """
    out = np.empty(volume.shape, dtype=out_dtype)

    def run(k: int) -> None:
        out[:, :, k] = function(k, volume[:, :, k])

    threads = num_threads or default_num_threads()
    if threads == 1:
        for k in range(volume.shape[2]):
            run(k)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(run, range(volume.shape[2])))
    return out


def open_projector(geometry: ParallelBeamGeometry) -> _AstraProjector:
    """An astra projector for ``geometry`` (a context manager; shareable across threads)."""
    return _AstraProjector(geometry)
