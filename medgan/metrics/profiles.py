"""Metric profiles: each community's published convention for MAE / PSNR / SSIM, reproduced exactly.

Every peer computes PSNR and SSIM differently (clipping, masking, window, data range, 2D or 3D), so
numbers are only comparable under one named convention. A profile is that convention:

========================  ================================================================================
``synthrad2023``          SynthRAD 2023 challenge: HU range [-1024, 3000]. MAE over the mask, not clipped.
                          PSNR over the mask on clipped values, data range 4024. 3D SSIM (uniform 7^3
                          window, sample covariance) on clipped values with outside-mask voxels set to
                          -1024, shifted by +1024, data range 4024; map averaged over the mask after
                          removing a 3-voxel border.
``synthrad2025``          SynthRAD 2025: range [-1024, 3071]; outside-mask voxels set to -1024; masked MAE;
                          masked PSNR on clipped values (data range 4095); masked 3D MS-SSIM (5 scales).
``ldct-chest`` etc.       ldct-benchmark (Eulig et al. 2024): each axial slice windowed to [0, 1] (chest
                          C -600/W 1500, abdomen C 50/W 400, neuro C 40/W 80, DICOM window formula), 2D
                          SSIM (uniform 7^2, sample covariance, 3-pixel border removed) and PSNR with data
                          range 1, averaged over slices; RMSE in HU on values clipped to [-1024, 1900].
                          Unmasked by definition.
``raw``                   MAE, RMSE, PSNR and SSIM in HU without clipping over the mask (whole volume when
                          none), PSNR data range = the stated range (default [-1024, 3071], 4095 HU), 3D
                          SSIM with a Gaussian window (sigma 1.5 voxels, 11 taps, population covariance,
                          Wang et al. 2004), averaged over the mask.
========================  ================================================================================

All functions take ``(X, Y, Z)`` volumes in HU (numpy, torch or ``MetaTensor``) with the prediction
first, and return a ``dict`` of floats whose keys carry units (``mae_hu``, ``psnr_db``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from medgan.errors import MedganError
from medgan.metrics.masks import as_numpy, check_same_grid
from medgan.metrics.ssim import crop_border, masked_mean, ssim_lcs_map, ssim_map

__all__ = [
    "MetricProfile",
    "PROFILES",
    "SYNTHRAD2023_RANGE_HU",
    "SYNTHRAD2025_RANGE_HU",
    "SYNTHRAD2025_SCALE_WEIGHTS",
    "LDCT_WINDOWS_HU",
    "evaluate_pair",
    "synthrad2023_metrics",
    "synthrad2025_metrics",
    "synthrad2025_ms_ssim",
    "ldct_window",
    "ldct_metrics",
    "raw_metrics",
    "psnr_db",
]

logger = logging.getLogger(__name__)

SYNTHRAD2023_RANGE_HU: Tuple[float, float] = (-1024.0, 3000.0)
SYNTHRAD2025_RANGE_HU: Tuple[float, float] = (-1024.0, 3071.0)
# Wang, Simoncelli, Bovik 2003 (MS-SSIM), eq. 7 weights as used by SynthRAD 2025.
SYNTHRAD2025_SCALE_WEIGHTS: Tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_SYNTHRAD2025_MIN_SIZE = 97  # volumes are edge-padded to at least this many voxels per axis
_SYNTHRAD_BORDER = 3  # voxels removed from each side before averaging the SSIM map (7-voxel window)
# ldct-benchmark windows (centre HU, width HU) and RMSE clipping range
LDCT_WINDOWS_HU: Dict[str, Tuple[float, float]] = {
    "ldct-chest": (-600.0, 1500.0),
    "ldct-abdomen": (50.0, 400.0),
    "ldct-neuro": (40.0, 80.0),
}
_LDCT_RMSE_RANGE_HU = (-1024.0, 1900.0)
_RAW_RANGE_HU: Tuple[float, float] = (-1024.0, 3071.0)


def _prepare(pred, target, mask) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    check_same_grid(pred, target)
    p = as_numpy(pred)
    t = as_numpy(target)
    if p.ndim != 3:
        raise ValueError(f"metric profiles expect (X, Y, Z) volumes, got shape {p.shape}")
    m = None
    if mask is not None:
        m = as_numpy(mask)
        if m.shape != t.shape:
            raise ValueError(f"mask shape {m.shape} differs from image shape {t.shape}")
        m = m > 0
        if not m.any():
            raise ValueError("the mask is empty: no voxel to evaluate")
    return p, t, m


def psnr_db(mse: float, data_range: float) -> float:
    """``10 log10(data_range^2 / mse)``; ``inf`` for identical images."""
    if mse <= 0.0:
        return math.inf
    return float(10.0 * math.log10(data_range**2 / mse))


def _masked_mse(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray]) -> float:
    diff = a.astype(np.float64) - b.astype(np.float64) if mask is None else (
        a[mask].astype(np.float64) - b[mask].astype(np.float64))
    return float(np.mean(diff * diff))


def _masked_mae(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray]) -> float:
    diff = a.astype(np.float64) - b.astype(np.float64) if mask is None else (
        a[mask].astype(np.float64) - b[mask].astype(np.float64))
    return float(np.mean(np.abs(diff)))


def _mae_and_clipped_psnr(p: np.ndarray, t: np.ndarray, m: Optional[np.ndarray],
                          hu_range: Tuple[float, float]) -> Tuple[float, float]:
    """SynthRAD's MAE (unclipped) and PSNR (clipped to ``hu_range``, data range its width) over the mask."""
    low, high = hu_range
    mse = _masked_mse(np.clip(p, low, high), np.clip(t, low, high), m)
    return _masked_mae(p, t, m), psnr_db(mse, high - low)


def _clip_mask_shift(image: np.ndarray, mask: Optional[np.ndarray], hu_range: Tuple[float, float]) -> np.ndarray:
    """Clip to ``hu_range``, set outside-mask voxels to its lower end, shift so it starts at 0."""
    low, high = hu_range
    out = np.clip(image.astype(np.float32), low, high)
    if mask is not None:
        out[~mask] = low
    out -= np.float32(low)
    return out


def synthrad2023_metrics(pred, target, mask=None) -> Dict[str, float]:
    """SynthRAD 2023 image metrics of a synthetic CT against the CT.

    Args:
        pred: synthetic CT in HU, ``(X, Y, Z)``.
        target: reference CT in HU, same grid.
        mask: body mask (nonzero = inside); the whole volume when None.

    Returns:
        ``{"mae_hu", "psnr_db", "ssim"}``.
    """
    p, t, m = _prepare(pred, target, mask)
    low, high = SYNTHRAD2023_RANGE_HU
    mae, psnr = _mae_and_clipped_psnr(p, t, m, SYNTHRAD2023_RANGE_HU)
    shifted_t = _clip_mask_shift(t, m, SYNTHRAD2023_RANGE_HU)
    shifted_p = _clip_mask_shift(p, m, SYNTHRAD2023_RANGE_HU)
    smap = ssim_map(shifted_t, shifted_p, data_range=high - low, spatial_dims=3, window="uniform", win_size=7)
    crop_mask = None if m is None else crop_border(m, _SYNTHRAD_BORDER)
    ssim = masked_mean(crop_border(smap, _SYNTHRAD_BORDER), crop_mask)
    return {"mae_hu": mae, "psnr_db": psnr, "ssim": ssim}


def _synthrad_halve(image: np.ndarray) -> np.ndarray:
    """Halve each axis as SynthRAD 2025 does: mean of voxels ``2j - 1`` and ``2j`` (zero before 0).

    Equals ``fftconvolve(image, ones((2, 2, 2)) / 8, mode="same")[::2, ::2, ::2]``.
    """
    out = image.astype(np.float64, copy=False)
    for axis in range(out.ndim):
        n = out.shape[axis]
        half = (n + 1) // 2
        pad = [(0, 0)] * out.ndim
        pad[axis] = (1, 0)
        padded = np.pad(out, pad)
        even = np.take(padded, np.arange(0, 2 * half, 2), axis=axis)
        odd = np.take(padded, np.arange(1, 2 * half + 1, 2), axis=axis)
        out = 0.5 * (even + odd)
    return out


def synthrad2025_ms_ssim(pred, target, mask=None,
                         scale_weights: Tuple[float, ...] = SYNTHRAD2025_SCALE_WEIGHTS) -> float:
    """Masked 3D multi-scale SSIM as in the SynthRAD 2025 evaluation.

    Both volumes are clipped to [-1024, 3071], set to -1024 outside the mask, shifted to [0, 4095] and
    edge-padded to at least 97 voxels per axis. At each of the 5 scales the SSIM map is
    ``L^w C^w S^w`` with the scale's weight ``w`` on all three terms (the published code passes the
    scale weights as luminance weights too), a uniform 7^3 window and data range 4095; its mean over
    the mask (3-voxel border removed) is clipped to [0, 1]. Images are then halved by 2x2x2 averaging
    and the mask subsampled by 2. The result is the product over scales.

    Args:
        pred: synthetic CT in HU ``(X, Y, Z)``.
        target: reference CT in HU.
        mask: body mask; the whole volume when None.
        scale_weights: exponent per scale.

    Returns:
        the masked MS-SSIM in [0, 1].
    """
    p, t, m = _prepare(pred, target, mask)
    low, high = SYNTHRAD2025_RANGE_HU
    if m is None:
        m = np.ones(t.shape, dtype=bool)
    x = _clip_mask_shift(t, m, SYNTHRAD2025_RANGE_HU)
    y = _clip_mask_shift(p, m, SYNTHRAD2025_RANGE_HU)
    pad = [(max((_SYNTHRAD2025_MIN_SIZE - n) // 2, 0),
            max(_SYNTHRAD2025_MIN_SIZE - n - (_SYNTHRAD2025_MIN_SIZE - n) // 2, 0)) for n in t.shape]
    x, y, m = (np.pad(a, pad, mode="edge") for a in (x, y, m))
    product = 1.0
    for level, weight in enumerate(scale_weights):
        smap = ssim_lcs_map(x, y, data_range=high - low, exponents=(weight, weight, weight), win_size=7)
        value = masked_mean(crop_border(smap, _SYNTHRAD_BORDER), crop_border(m, _SYNTHRAD_BORDER))
        logger.debug("synthrad2025 MS-SSIM scale %d: %.6f on shape %s", level, value, x.shape)
        product *= min(max(value, 0.0), 1.0)
        if level + 1 < len(scale_weights):
            x, y, m = _synthrad_halve(x), _synthrad_halve(y), m[::2, ::2, ::2]
    return float(product)


def synthrad2025_metrics(pred, target, mask=None) -> Dict[str, float]:
    """SynthRAD 2025 image metrics: masked MAE, masked PSNR (range 4095) and masked MS-SSIM.

    Args:
        pred: synthetic CT in HU ``(X, Y, Z)``.
        target: reference CT in HU, same grid.
        mask: body mask; the whole volume when None.

    Returns:
        ``{"mae_hu", "psnr_db", "ms_ssim"}``.
    """
    p, t, m = _prepare(pred, target, mask)
    mae, psnr = _mae_and_clipped_psnr(p, t, m, SYNTHRAD2025_RANGE_HU)
    return {"mae_hu": mae, "psnr_db": psnr, "ms_ssim": synthrad2025_ms_ssim(p, t, m)}


def ldct_window(image: np.ndarray, center_hu: float, width_hu: float) -> np.ndarray:
    """DICOM linear window to [0, 1] as ldct-benchmark applies it (PS3.3 C.11.2.1.2 formula).

    ``((x - (c - 0.5)) / (w - 1) + 0.5)`` clipped to [0, 1]; float32 ``(X, Y, Z)``.
    """
    scaled = (image.astype(np.float32) - np.float32(center_hu - 0.5)) / np.float32(width_hu - 1.0) + np.float32(0.5)
    return np.clip(scaled, 0, 1)


def ldct_metrics(pred, target, center_hu: float, width_hu: float) -> Dict[str, float]:
    """ldct-benchmark's windowed metrics, averaged over axial slices ``[:, :, k]``.

    Args:
        pred: denoised CT in HU ``(X, Y, Z)``.
        target: routine-dose CT in HU, same grid.
        center_hu: window centre.
        width_hu: window width.

    Returns:
        ``{"ssim", "psnr_db", "rmse_hu", "n_slices", "n_slices_identical"}``; slices where the windowed
        images are identical (PSNR infinite) are left out of the PSNR mean and counted.
    """
    p, t, _ = _prepare(pred, target, None)
    wp = ldct_window(p, center_hu, width_hu)
    wt = ldct_window(t, center_hu, width_hu)
    smap = ssim_map(wt, wp, data_range=1.0, spatial_dims=2, window="uniform", win_size=7)
    per_slice_ssim = crop_border(smap, _SYNTHRAD_BORDER, axes=(0, 1)).mean(axis=(0, 1), dtype=np.float64)
    mse_slices = np.mean(np.square(wp - wt, dtype=np.float64), axis=(0, 1))
    finite = mse_slices > 0
    psnr = float(np.mean(10.0 * np.log10(1.0 / mse_slices[finite]))) if finite.any() else math.inf
    low, high = _LDCT_RMSE_RANGE_HU
    diff = np.clip(p.astype(np.float64), low, high) - np.clip(t.astype(np.float64), low, high)
    rmse = float(np.mean(np.sqrt(np.mean(diff * diff, axis=(0, 1)))))
    n_identical = int((~finite).sum())
    if n_identical:
        logger.warning("%d of %d slices are identical after windowing; left out of the PSNR mean",
                       n_identical, finite.size)
    return {"ssim": float(per_slice_ssim.mean()), "psnr_db": psnr, "rmse_hu": rmse,
            "n_slices": float(finite.size), "n_slices_identical": float(n_identical)}


def raw_metrics(pred, target, mask=None, hu_range: Tuple[float, float] = _RAW_RANGE_HU) -> Dict[str, float]:
    """MAE, RMSE, PSNR and 3D Gaussian-window SSIM in HU, unclipped, over the mask.

    Args:
        pred: predicted volume in HU ``(X, Y, Z)``.
        target: reference volume, same grid.
        mask: voxels to evaluate; the whole volume when None.
        hu_range: (low, high) HU; ``high - low`` is the data range of PSNR and SSIM.

    Returns:
        ``{"mae_hu", "rmse_hu", "psnr_db", "ssim", "data_range_hu"}``.
    """
    p, t, m = _prepare(pred, target, mask)
    data_range = float(hu_range[1] - hu_range[0])
    if data_range <= 0:
        raise ValueError(f"hu_range must be increasing, got {hu_range}")
    mse = _masked_mse(p, t, m)
    smap = ssim_map(t, p, data_range=data_range, spatial_dims=3, window="gaussian", sigma=1.5)
    return {"mae_hu": _masked_mae(p, t, m), "rmse_hu": math.sqrt(mse), "psnr_db": psnr_db(mse, data_range),
            "ssim": masked_mean(smap, m), "data_range_hu": data_range}


@dataclass(frozen=True)
class MetricProfile:
    """A named metric convention.

    Attributes:
        name: profile name used on the command line.
        description: one line saying what it reproduces.
        uses_mask: False where the convention is unmasked by definition (a mask is then refused).
        compute: ``compute(pred, target, mask) -> dict``.
    """

    name: str
    description: str
    uses_mask: bool
    compute: Callable[..., Dict[str, float]]


def _ldct_profile(name: str) -> MetricProfile:
    center, width = LDCT_WINDOWS_HU[name]
    return MetricProfile(
        name, f"ldct-benchmark windowed 2D SSIM/PSNR, window C {center:g} / W {width:g} HU", False,
        lambda pred, target, mask=None: ldct_metrics(pred, target, center, width))


PROFILES: Dict[str, MetricProfile] = {
    "synthrad2023": MetricProfile(
        "synthrad2023", "SynthRAD 2023: masked MAE, PSNR [-1024, 3000], masked 3D SSIM", True, synthrad2023_metrics),
    "synthrad2025": MetricProfile(
        "synthrad2025", "SynthRAD 2025: masked MAE, PSNR [-1024, 3071], masked 3D MS-SSIM", True,
        synthrad2025_metrics),
    **{name: _ldct_profile(name) for name in LDCT_WINDOWS_HU},
    "raw": MetricProfile("raw", "MAE/RMSE/PSNR/Gaussian 3D SSIM in HU over the mask, range [-1024, 3071]", True,
                         raw_metrics),
}


def evaluate_pair(pred, target, profile: str = "synthrad2023", mask=None) -> Dict[str, float]:
    """Metrics of ``pred`` against ``target`` under a named profile (see :data:`PROFILES`).

    Args:
        pred: prediction in HU ``(X, Y, Z)`` (numpy, tensor or ``MetaTensor``).
        target: reference on the same grid (shape and affine are checked).
        profile: a key of :data:`PROFILES`.
        mask: evaluation mask ``(X, Y, Z)`` or None.

    Raises:
        MedganError: unknown profile, or a mask given to an unmasked profile.
        GeometryMismatchError: the two volumes are not on one grid.
    """
    if profile not in PROFILES:
        raise MedganError(f"unknown metric profile {profile!r}", fix=f"choose one of {', '.join(PROFILES)}")
    chosen = PROFILES[profile]
    if mask is not None and not chosen.uses_mask:
        raise MedganError(f"profile {profile!r} is unmasked by definition (as published); a mask was given",
                          fix="drop the mask, or use the 'raw' profile for masked metrics")
    return chosen.compute(pred, target, mask)
