"""Structural similarity (SSIM) maps for 2D slices and 3D volumes, computed slab by slab.

The local statistics follow Wang et al. 2004 (IEEE TIP 13:600): local means, variances and covariance
under a window, ``K1 = 0.01``, ``K2 = 0.03``. Two windows are offered because the published
conventions differ:

* ``uniform`` — a ``win_size`` cube (default 7) with sample covariance ``N / (N - 1)``; this is what
  the SynthRAD 2023/2025 evaluation and ldct-benchmark use (scikit-image's default).
* ``gaussian`` — a Gaussian of ``sigma`` (default 1.5 voxels) truncated at 3.5 sigma (11 taps), with
  population covariance, as in Wang et al.

Boundaries are mirrored (``reflect``) as in :mod:`scipy.ndimage`. Volumes are processed in slabs
along the last axis (with a halo of the window radius) in float64, so memory stays bounded for a
512 x 512 x 300 CT while the result equals a whole-volume computation.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

__all__ = [
    "SSIM_K1",
    "SSIM_K2",
    "GAUSSIAN_TRUNCATE",
    "ssim_window_radius",
    "ssim_map",
    "ssim_lcs_map",
    "masked_mean",
    "crop_border",
]

SSIM_K1 = 0.01
SSIM_K2 = 0.03
GAUSSIAN_TRUNCATE = 3.5  # 11 taps for sigma 1.5, as in Wang et al. 2004
_DEFAULT_SLAB = 32


def ssim_window_radius(window: str, win_size: int = 7, sigma: float = 1.5) -> int:
    """Radius in voxels of the SSIM window (3 for a 7-cube, 5 for a Gaussian of sigma 1.5).

    Raises:
        ValueError: unknown ``window`` or an even ``win_size``.
    """
    if window == "uniform":
        if win_size % 2 != 1 or win_size < 3:
            raise ValueError(f"win_size must be odd and >= 3, got {win_size}")
        return (win_size - 1) // 2
    if window == "gaussian":
        return int(GAUSSIAN_TRUNCATE * sigma + 0.5)
    raise ValueError(f"window must be 'uniform' or 'gaussian', got {window!r}")


def _make_filter(window: str, win_size: int, sigma: float, axes: Tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    if window == "uniform":

        def _filter(image: np.ndarray) -> np.ndarray:
            out = image
            for axis in axes:
                out = ndimage.uniform_filter1d(out, size=win_size, axis=axis, mode="reflect")
            return out

    else:

        def _filter(image: np.ndarray) -> np.ndarray:
            out = image
            for axis in axes:
                out = ndimage.gaussian_filter1d(out, sigma=sigma, axis=axis, mode="reflect",
                                                truncate=GAUSSIAN_TRUNCATE)
            return out

    return _filter


def _local_stats(x: np.ndarray, y: np.ndarray, centre: np.float32, filt: Callable[[np.ndarray], np.ndarray],
                 cov_norm: float):
    """Local means, variances and covariance of ``x`` and ``y`` (float32, centred for precision).

    The images are shifted by ``centre`` (their joint mean) before filtering (variances do not depend on
    the shift) so the float32 products keep their significant digits instead of losing them to
    cancellation of large HU squares.
    """
    xc = x - centre
    yc = y - centre
    mx = filt(xc)
    my = filt(yc)
    norm = np.float32(cov_norm)
    vx = norm * (filt(xc * xc) - mx * mx)
    vy = norm * (filt(yc * yc) - my * my)
    vxy = norm * (filt(xc * yc) - mx * my)
    return mx + centre, my + centre, vx, vy, vxy


def _cov_norm(window: str, win_size: int, sigma: float, n_axes: int, use_sample_covariance: Optional[bool]) -> float:
    if use_sample_covariance is None:
        use_sample_covariance = window == "uniform"
    if not use_sample_covariance:
        return 1.0
    side = 2 * ssim_window_radius(window, win_size, sigma) + 1
    n_points = side**n_axes
    return n_points / (n_points - 1.0)


def _slabwise(func: Callable[[np.ndarray, np.ndarray, np.float32], np.ndarray], x: np.ndarray, y: np.ndarray,
              halo: int, slab: int) -> np.ndarray:
    """Apply ``func(x_slab, y_slab, centre)`` to slabs along the last axis with ``halo`` slices of context.

    ``centre`` is the joint mean of both whole images, so the result does not depend on ``slab``.
    """
    if slab < 1:
        raise ValueError(f"slab must be >= 1, got {slab}")
    centre = np.float32(0.5 * (float(x.mean(dtype=np.float64)) + float(y.mean(dtype=np.float64))))
    depth = x.shape[-1]
    out = np.empty(x.shape, dtype=np.float32)
    for start in range(0, depth, slab):
        stop = min(start + slab, depth)
        lo, hi = max(start - halo, 0), min(stop + halo, depth)
        xs = np.asarray(x[..., lo:hi], dtype=np.float32)
        ys = np.asarray(y[..., lo:hi], dtype=np.float32)
        out[..., start:stop] = func(xs, ys, centre)[..., start - lo:stop - lo]
    return out


def _check_pair(x: np.ndarray, y: np.ndarray, spatial_dims: int) -> None:
    if x.shape != y.shape:
        raise ValueError(f"SSIM needs images of one shape, got {x.shape} and {y.shape}")
    if x.ndim != 3 or spatial_dims not in (2, 3):
        raise ValueError(f"SSIM expects a (X, Y, Z) volume and spatial_dims 2 or 3, got shape {x.shape}, "
                         f"spatial_dims={spatial_dims}")


def ssim_map(
    x: np.ndarray,
    y: np.ndarray,
    data_range: float,
    spatial_dims: int = 3,
    window: str = "uniform",
    win_size: int = 7,
    sigma: float = 1.5,
    use_sample_covariance: Optional[bool] = None,
    slab: int = _DEFAULT_SLAB,
) -> np.ndarray:
    """Voxel-wise SSIM map of two volumes (Wang et al. 2004, eq. 13).

    Args:
        x: reference volume, shape ``(X, Y, Z)``.
        y: compared volume, same shape.
        data_range: ``L`` in ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2`` (HU, or 1 for windowed images).
        spatial_dims: 3 for a 3D window; 2 for an in-plane window on each axial slice ``[:, :, k]``.
        window: ``"uniform"`` (cube of ``win_size``) or ``"gaussian"`` (``sigma``, 11 taps for 1.5).
        win_size: side of the uniform window in voxels (odd).
        sigma: standard deviation of the Gaussian window in voxels.
        use_sample_covariance: ``N / (N - 1)`` normalisation; default True for ``uniform`` and False
            for ``gaussian`` (the two published conventions).
        slab: slices per processing slab (memory only; the result does not depend on it).

    Returns:
        float32 array ``(X, Y, Z)``; border voxels within the window radius are included (mirrored),
        callers crop them where a convention says so (:func:`crop_border`).
    """
    _check_pair(x, y, spatial_dims)
    radius = ssim_window_radius(window, win_size, sigma)
    axes = (0, 1, 2)[:spatial_dims]
    filt = _make_filter(window, win_size, sigma, axes)
    cov_norm = _cov_norm(window, win_size, sigma, spatial_dims, use_sample_covariance)
    c1 = np.float32((SSIM_K1 * data_range) ** 2)
    c2 = np.float32((SSIM_K2 * data_range) ** 2)

    def _one(xs: np.ndarray, ys: np.ndarray, centre: np.float32) -> np.ndarray:
        ux, uy, vx, vy, vxy = _local_stats(xs, ys, centre, filt, cov_norm)
        num = (2 * ux * uy + c1) * (2 * vxy + c2)
        den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
        return num / den

    return _slabwise(_one, x, y, radius if spatial_dims == 3 else 0, slab)


def ssim_lcs_map(
    x: np.ndarray,
    y: np.ndarray,
    data_range: float,
    exponents: Tuple[float, float, float],
    win_size: int = 7,
    slab: int = _DEFAULT_SLAB,
) -> np.ndarray:
    """3D SSIM map as the product ``L^a C^b S^c`` of its luminance, contrast and structure terms.

    This is the per-scale term of the SynthRAD 2025 masked MS-SSIM: uniform ``win_size`` window,
    sample covariance, ``C3 = C2 / 2``, each term clipped at 0 and the standard deviations taken as
    ``sqrt(max(var, 0))``.

    Args:
        x: reference volume ``(X, Y, Z)``.
        y: compared volume, same shape.
        data_range: ``L`` of the stabilising constants.
        exponents: ``(a, b, c)`` for luminance, contrast and structure.
        win_size: side of the uniform window (odd).
        slab: slices per processing slab.

    Returns:
        float32 map ``(X, Y, Z)``.
    """
    _check_pair(x, y, 3)
    radius = ssim_window_radius("uniform", win_size)
    filt = _make_filter("uniform", win_size, 1.5, (0, 1, 2))
    cov_norm = _cov_norm("uniform", win_size, 1.5, 3, True)
    c1 = np.float32((SSIM_K1 * data_range) ** 2)
    c2 = np.float32((SSIM_K2 * data_range) ** 2)
    c3 = c2 / 2
    lum_exp, con_exp, str_exp = exponents

    def _one(xs: np.ndarray, ys: np.ndarray, centre: np.float32) -> np.ndarray:
        ux, uy, vx, vy, vxy = _local_stats(xs, ys, centre, filt, cov_norm)
        sx = np.sqrt(np.clip(vx, 0, None))
        sy = np.sqrt(np.clip(vy, 0, None))
        lum = np.clip((2 * ux * uy + c1) / (ux * ux + uy * uy + c1), 0, None)
        con = np.clip((2 * sx * sy + c2) / (vx + vy + c2), 0, None)
        struc = np.clip((vxy + c3) / (sx * sy + c3), 0, None)
        return (lum ** np.float32(lum_exp)) * (con ** np.float32(con_exp)) * (struc ** np.float32(str_exp))

    return _slabwise(_one, x, y, radius, slab)


def crop_border(array: np.ndarray, pad: int, axes: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """View of ``array`` without ``pad`` voxels on both sides of each axis in ``axes``."""
    if pad <= 0:
        return array
    index = [slice(None)] * array.ndim
    for axis in axes:
        index[axis] = slice(pad, array.shape[axis] - pad)
    return array[tuple(index)]


def masked_mean(values: np.ndarray, mask: Optional[np.ndarray]) -> float:
    """Mean of ``values`` over ``mask`` (all voxels when ``mask`` is None), accumulated in float64.

    Raises:
        ValueError: the mask selects no voxel.
    """
    if mask is None:
        return float(values.mean(dtype=np.float64))
    selected = values[mask]
    if selected.size == 0:
        raise ValueError("the mask selects no voxel")
    return float(selected.mean(dtype=np.float64))
