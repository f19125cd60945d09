"""Classical baselines reported beside every model number, computed on the same data and metric code.

* Denoising: Gaussian, bilateral and non-local means (scikit-image), with strengths tied to the
  noise level estimated from the image (Donoho's wavelet MAD estimator) unless given.
* Super-resolution: B-spline and Welch windowed-sinc interpolation along z (SimpleITK).
* Kernel conversion: Gaussian blur (sharp -> smooth) and unsharp masking (smooth -> sharp), in plane.

Every function takes a CT volume in HU ``(X, Y, Z)`` (numpy, tensor or ``MetaTensor``) and returns a new
float32 numpy array of the same shape, except :func:`upsample_z`, whose grid changes (it returns a
``MetaTensor`` with the new affine when given one). Inputs are never modified. 2D filters work on
axial slices ``[:, :, k]``.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from medgan.metrics.masks import as_numpy

__all__ = [
    "estimate_noise_sd",
    "gaussian_denoise",
    "bilateral_denoise",
    "nlm_denoise",
    "upsample_z",
    "gaussian_blur",
    "unsharp_mask",
]

logger = logging.getLogger(__name__)

_INTERPOLATORS = ("bspline", "windowed_sinc")


def _float_volume(volume) -> np.ndarray:
    image = np.array(as_numpy(volume), dtype=np.float32, copy=True)
    if image.ndim != 3:
        raise ValueError(f"expected a (X, Y, Z) volume, got shape {image.shape}")
    return image


def _in_plane_sigma(sigma_mm: float, spacing_mm: Sequence[float]) -> Tuple[float, float, float]:
    if sigma_mm < 0:
        raise ValueError(f"sigma_mm must be >= 0, got {sigma_mm}")
    return (sigma_mm / float(spacing_mm[0]), sigma_mm / float(spacing_mm[1]), 0.0)


def estimate_noise_sd(volume, max_slices: int = 16) -> float:
    """Noise SD in HU by Donoho's wavelet MAD estimator, median over slices.

    On each slice the finest diagonal Haar detail ``(a - b - c + d) / 2`` of every 2 x 2 block has the
    noise SD of white noise and almost no anatomy; its median absolute value / 0.6745 estimates the SD
    (the estimator of ``skimage.restoration.estimate_sigma``, written out so no wavelet package is needed).

    Args:
        volume: CT in HU ``(X, Y, Z)``.
        max_slices: slices looked at, evenly spread.
    """
    image = as_numpy(volume)
    nx, ny = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    picks = np.unique(np.linspace(0, image.shape[2] - 1, min(max_slices, image.shape[2])).round().astype(int))
    estimates = []
    for k in picks:
        plane = np.asarray(image[:nx, :ny, k], dtype=np.float64)
        diagonal = (plane[0::2, 0::2] - plane[1::2, 0::2] - plane[0::2, 1::2] + plane[1::2, 1::2]) / 2.0
        estimates.append(np.median(np.abs(diagonal)) / 0.6745)
    return float(np.median(estimates))


def gaussian_denoise(volume, spacing_mm: Sequence[float], sigma_mm: float = 0.8) -> np.ndarray:
    """In-plane Gaussian smoothing (the simplest denoiser).

    Args:
        volume: CT in HU ``(X, Y, Z)``.
        spacing_mm: ``(dx, dy, dz)``.
        sigma_mm: Gaussian standard deviation in plane.
    """
    image = _float_volume(volume)
    return ndimage.gaussian_filter(image, _in_plane_sigma(sigma_mm, spacing_mm)).astype(np.float32)


def bilateral_denoise(volume, spacing_mm: Sequence[float], sigma_spatial_mm: float = 1.0,
                      sigma_hu: Optional[float] = None, noise_factor: float = 2.0) -> np.ndarray:
    """Bilateral filter on each axial slice (``skimage.restoration.denoise_bilateral``).

    Args:
        volume: CT in HU ``(X, Y, Z)``.
        spacing_mm: ``(dx, dy, dz)``; the spatial sigma is converted with ``dx``.
        sigma_spatial_mm: spatial standard deviation.
        sigma_hu: intensity standard deviation; default ``noise_factor`` x the estimated noise SD.
        noise_factor: see ``sigma_hu``.
    """
    from skimage.restoration import denoise_bilateral

    image = _float_volume(volume)
    sigma = noise_factor * estimate_noise_sd(image) if sigma_hu is None else sigma_hu
    spatial = sigma_spatial_mm / float(spacing_mm[0])
    logger.debug("bilateral: sigma %.1f HU, spatial %.2f px", sigma, spatial)
    out = np.empty_like(image)
    for k in range(image.shape[2]):
        # scikit-image tabulates intensity distances on [0, max]: shift each slice to start at 0
        plane = image[:, :, k].astype(np.float64)
        low = plane.min()
        out[:, :, k] = denoise_bilateral(plane - low, sigma_color=sigma, sigma_spatial=spatial, mode="reflect",
                                         bins=int(max(plane.max() - low, 1.0) * 4)) + low
    return out


def nlm_denoise(volume, h_factor: float = 0.8, noise_sd_hu: Optional[float] = None, patch_size: int = 5,
                patch_distance: int = 6) -> np.ndarray:
    """Non-local means on each axial slice (``skimage.restoration.denoise_nl_means``, fast mode).

    Args:
        volume: CT in HU ``(X, Y, Z)``.
        h_factor: filtering strength ``h`` as a multiple of the noise SD (0.8 as scikit-image suggests
            with ``sigma`` given).
        noise_sd_hu: noise SD; default estimated (:func:`estimate_noise_sd`).
        patch_size: patch side in pixels.
        patch_distance: search radius in pixels.
    """
    from skimage.restoration import denoise_nl_means

    image = _float_volume(volume)
    sigma = estimate_noise_sd(image) if noise_sd_hu is None else noise_sd_hu
    out = np.empty_like(image)
    for k in range(image.shape[2]):
        out[:, :, k] = denoise_nl_means(image[:, :, k].astype(np.float64), h=h_factor * sigma, sigma=sigma,
                                        patch_size=patch_size, patch_distance=patch_distance, fast_mode=True)
    return out


def upsample_z(volume, factor: int, method: str = "bspline"):
    """Interpolate ``factor - 1`` new slices between every pair of slices (SimpleITK).

    The first and last slice centres stay where they are: ``Z`` slices become ``(Z - 1) * factor + 1``
    at spacing ``dz / factor``.

    Args:
        volume: ``(X, Y, Z)`` volume; a ``MetaTensor`` gets its affine updated.
        factor: integer upsampling factor along z (>= 1); interpolation works in voxel units, so no
            spacing is needed.
        method: ``"bspline"`` (cubic B-spline) or ``"windowed_sinc"`` (Welch-windowed sinc, radius 3).

    Returns:
        float32 ``(X, Y, (Z - 1) * factor + 1)``: a ``MetaTensor`` with the new affine when the input was one.
    """
    import SimpleITK as sitk

    if method not in _INTERPOLATORS:
        raise ValueError(f"method must be one of {_INTERPOLATORS}, got {method!r}")
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    factor = int(factor)
    image = _float_volume(volume)
    n_out = (image.shape[2] - 1) * factor + 1
    source = sitk.GetImageFromArray(np.transpose(image, (2, 1, 0)))  # sitk is (z, y, x)
    source.SetSpacing((1.0, 1.0, 1.0))
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(source)
    resampler.SetSize((image.shape[0], image.shape[1], n_out))
    resampler.SetOutputSpacing((1.0, 1.0, 1.0 / factor))
    resampler.SetInterpolator(sitk.sitkBSpline if method == "bspline" else sitk.sitkWelchWindowedSinc)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    resampler.SetDefaultPixelValue(float(image.min()))
    result = np.transpose(sitk.GetArrayFromImage(resampler.Execute(source)), (2, 1, 0)).astype(np.float32)
    if hasattr(volume, "affine"):
        from monai.data import MetaTensor
        import torch

        affine = as_numpy(volume.affine).astype(np.float64).copy()
        affine[:3, 2] /= factor
        return MetaTensor(torch.from_numpy(np.ascontiguousarray(result)), affine=torch.from_numpy(affine))
    return result


def gaussian_blur(volume, spacing_mm: Sequence[float], sigma_mm: float) -> np.ndarray:
    """Sharp -> smooth kernel baseline: in-plane Gaussian blur of ``sigma_mm`` (an MTF ``exp(-2 pi^2 s^2 f^2)``)."""
    return gaussian_denoise(volume, spacing_mm, sigma_mm)


def unsharp_mask(volume, spacing_mm: Sequence[float], sigma_mm: float = 1.0, amount: float = 1.0) -> np.ndarray:
    """Smooth -> sharp kernel baseline: ``x + amount (x - G_sigma x)`` in plane.

    Args:
        volume: CT in HU ``(X, Y, Z)``.
        spacing_mm: ``(dx, dy, dz)``.
        sigma_mm: Gaussian of the blurred copy.
        amount: gain on the detail layer.
    """
    image = _float_volume(volume)
    blurred = ndimage.gaussian_filter(image, _in_plane_sigma(sigma_mm, spacing_mm))
    return (image + np.float32(amount) * (image - blurred)).astype(np.float32)
