"""Reference-free physics image quality of CT volumes: noise, noise texture, sharpness, slice profile, HU.

All functions take a CT volume in HU of shape ``(X, Y, Z)`` (axial slices ``[:, :, k]``) and its voxel
spacing in mm ``(dx, dy, dz)``; they return plain dicts of floats with units in the keys.

* :func:`noise_sd` — global noise level (Christianson et al., Med Phys 2015;42:1461): the mode of
  the local standard deviation over homogeneous soft tissue.
* :func:`uniform_rois` and :func:`noise_power_spectrum` — 2D NPS from uniform square ROIs (or from
  the difference of two images with independent noise): radially averaged, peak and mean frequency
  (mm^-1), and its integral (the noise variance, Parseval).
* :func:`edge_sharpness` — 10-90 % edge-spread distance (mm) and an MTF50 proxy (mm^-1) from the
  averaged, sub-voxel aligned profiles across a detected edge (air/tissue by default).
* :func:`slice_sensitivity` — FWHM of the slice sensitivity profile (mm), the line-spread function
  along z measured on edges perpendicular to z (for super-resolution).
* :func:`mean_hu_per_tissue` — mean HU of air, fat, soft tissue and bone voxels.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from medgan.metrics.masks import as_numpy

__all__ = [
    "TISSUE_CLASSES_HU",
    "local_sd_map",
    "noise_sd",
    "uniform_rois",
    "noise_power_spectrum",
    "edge_sharpness",
    "slice_sensitivity",
    "mean_hu_per_tissue",
]

logger = logging.getLogger(__name__)

#: HU intervals ``[low, high)`` of the tissue classes.
TISSUE_CLASSES_HU: Dict[str, Tuple[float, float]] = {
    "air": (-1100.0, -900.0),
    "fat": (-150.0, -50.0),
    "soft_tissue": (-50.0, 150.0),
    "bone": (300.0, 3100.0),
}
_SOFT_TISSUE_HU = (-100.0, 200.0)
_ESF_SMOOTHING_MM = 0.1


def _spacing3(spacing_mm: Sequence[float]) -> Tuple[float, float, float]:
    if len(spacing_mm) != 3 or min(spacing_mm) <= 0:
        raise ValueError(f"spacing_mm must be three positive numbers (dx, dy, dz), got {spacing_mm}")
    return float(spacing_mm[0]), float(spacing_mm[1]), float(spacing_mm[2])


def _volume(volume) -> np.ndarray:
    image = as_numpy(volume).astype(np.float32, copy=False)
    if image.ndim != 3:
        raise ValueError(f"expected a (X, Y, Z) volume, got shape {image.shape}")
    return image


def local_sd_map(volume, spacing_mm: Sequence[float], roi_mm: float = 7.0) -> Tuple[np.ndarray, np.ndarray]:
    """In-plane local mean and sample standard deviation in a square of side ``roi_mm`` on each slice.

    Returns:
        ``(mean, sd)``, float32 ``(X, Y, Z)`` each, in HU.
    """
    image = _volume(volume)
    dx, dy, _ = _spacing3(spacing_mm)
    size = (max(3, int(round(roi_mm / dx)) | 1), max(3, int(round(roi_mm / dy)) | 1), 1)
    n = size[0] * size[1]
    centre = np.float32(image.mean(dtype=np.float64))
    shifted = image - centre
    mean = ndimage.uniform_filter(shifted, size=size, mode="reflect")
    var = ndimage.uniform_filter(shifted * shifted, size=size, mode="reflect") - mean * mean
    sd = np.sqrt(np.clip(var * np.float32(n / (n - 1.0)), 0, None))
    return mean + centre, sd


def noise_sd(volume, spacing_mm: Sequence[float], mask=None, roi_mm: float = 7.0,
             hu_range: Tuple[float, float] = _SOFT_TISSUE_HU, bin_hu: float = 0.5) -> Dict[str, float]:
    """Global noise level: the most frequent local SD over soft tissue (Christianson et al. 2015).

    Local SDs are taken in ``roi_mm`` squares centred on voxels whose local mean lies in ``hu_range``
    (and inside ``mask``); edges and structure give a long tail of high SDs, homogeneous regions the
    mode of the histogram.

    Args:
        volume: CT in HU ``(X, Y, Z)``.
        spacing_mm: voxel spacing ``(dx, dy, dz)``.
        mask: optional region ``(X, Y, Z)`` the ROIs must lie in.
        roi_mm: side of the square ROI.
        hu_range: local-mean range counted as soft tissue.
        bin_hu: histogram bin width.

    Returns:
        ``{"noise_sd_hu", "median_local_sd_hu", "n_voxels"}``.

    Raises:
        ValueError: no voxel has a local mean in ``hu_range``.
    """
    mean, sd = local_sd_map(volume, spacing_mm, roi_mm)
    valid = (mean >= hu_range[0]) & (mean < hu_range[1])
    if mask is not None:
        valid &= ndimage.binary_erosion(as_numpy(mask) > 0, iterations=2)
    values = sd[valid]
    if values.size == 0:
        raise ValueError(f"no soft tissue found (local mean in {hu_range} HU): cannot measure noise")
    top = float(np.percentile(values, 99)) + bin_hu
    counts, edges = np.histogram(values, bins=np.arange(0.0, top + bin_hu, bin_hu))
    counts = ndimage.uniform_filter1d(counts.astype(np.float64), 3)
    mode = 0.5 * (edges[np.argmax(counts)] + edges[np.argmax(counts) + 1])
    return {"noise_sd_hu": float(mode), "median_local_sd_hu": float(np.median(values)), "n_voxels": float(values.size)}


def uniform_rois(volume, spacing_mm: Sequence[float], roi_size_vox: int = 32, mask=None,
                 hu_range: Tuple[float, float] = _SOFT_TISSUE_HU, sd_factor: float = 1.5,
                 max_rois: int = 200) -> List[Tuple[int, int, int]]:
    """Square in-plane ROIs over homogeneous soft tissue, for the NPS.

    Candidate ROIs tile each slice with half overlap; a ROI is kept when its mean lies in ``hu_range``,
    it lies inside ``mask`` (when given), and its SD is at most ``sd_factor`` times the global noise
    level (:func:`noise_sd`), i.e. it holds noise, not structure.

    Returns:
        corners ``(i, j, k)`` of ``roi_size_vox`` x ``roi_size_vox`` ROIs on slice ``k``, at most ``max_rois``
        spread evenly over the candidates.
    """
    image = _volume(volume)
    level = noise_sd(image, spacing_mm, mask=mask, hu_range=hu_range)["noise_sd_hu"]
    inside = None if mask is None else as_numpy(mask) > 0
    step = max(roi_size_vox // 2, 1)
    found: List[Tuple[int, int, int]] = []
    for k in range(image.shape[2]):
        for i in range(0, image.shape[0] - roi_size_vox + 1, step):
            for j in range(0, image.shape[1] - roi_size_vox + 1, step):
                roi = image[i:i + roi_size_vox, j:j + roi_size_vox, k]
                mean = float(roi.mean())
                if not hu_range[0] <= mean < hu_range[1]:
                    continue
                if inside is not None and not inside[i:i + roi_size_vox, j:j + roi_size_vox, k].all():
                    continue
                if float(roi.std()) <= sd_factor * level:
                    found.append((i, j, k))
    if len(found) > max_rois:
        keep = np.linspace(0, len(found) - 1, max_rois).round().astype(int)
        found = [found[i] for i in keep]
    logger.debug("uniform ROIs: %d of side %d (noise level %.1f HU)", len(found), roi_size_vox, level)
    return found


def _detrend_plane(roi: np.ndarray) -> np.ndarray:
    i, j = np.meshgrid(np.arange(roi.shape[0]), np.arange(roi.shape[1]), indexing="ij")
    design = np.stack([np.ones(roi.size), i.ravel(), j.ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(design, roi.ravel().astype(np.float64), rcond=None)
    return roi - (design @ coef).reshape(roi.shape)


def noise_power_spectrum(volume, spacing_mm: Sequence[float], rois: Optional[Sequence[Tuple[int, int, int]]] = None,
                         roi_size_vox: int = 32, second=None, mask=None) -> Dict[str, object]:
    """2D noise power spectrum ``NPS(fx, fy) = dx dy / (Nx Ny) <|DFT(ROI - plane fit)|^2>``, radially averaged.

    Args:
        volume: CT in HU ``(X, Y, Z)``.
        spacing_mm: ``(dx, dy, dz)``.
        rois: ROI corners ``(i, j, k)``; default :func:`uniform_rois` of ``volume``.
        roi_size_vox: ROI side in voxels.
        second: a second image of the same object with independent noise of the same level (a repeated
            scan); the NPS is then that of ``(volume - second) / sqrt(2)``, free of anatomy, and ROIs
            default to a tiling of ``mask`` (or of the whole slice).
        mask: region the ROIs must lie in.

    Returns:
        ``{"peak_frequency_per_mm", "mean_frequency_per_mm", "variance_hu2", "n_rois",
        "frequency_per_mm" (1D array), "nps_radial_hu2mm2" (1D array)}``; the variance is the integral of
        the NPS, which equals the ROI noise variance.

    Raises:
        ValueError: no ROI available.
    """
    image = _volume(volume)
    dx, dy, _ = _spacing3(spacing_mm)
    if second is not None:
        other = _volume(second)
        if other.shape != image.shape:
            raise ValueError(f"second image shape {other.shape} differs from {image.shape}")
        image = (image - other) / np.float32(np.sqrt(2.0))
        if rois is None:
            inside = None if mask is None else as_numpy(mask) > 0
            step = roi_size_vox
            rois = [(i, j, k) for k in range(image.shape[2])
                    for i in range(0, image.shape[0] - roi_size_vox + 1, step)
                    for j in range(0, image.shape[1] - roi_size_vox + 1, step)
                    if inside is None or inside[i:i + roi_size_vox, j:j + roi_size_vox, k].all()]
    elif rois is None:
        rois = uniform_rois(image, spacing_mm, roi_size_vox=roi_size_vox, mask=mask)
    if not rois:
        raise ValueError("no uniform ROI found for the NPS: give ROIs or a second (repeated) image")
    n = roi_size_vox
    power = np.zeros((n, n), dtype=np.float64)
    for i, j, k in rois:
        roi = _detrend_plane(image[i:i + n, j:j + n, k].astype(np.float64))
        power += np.abs(np.fft.fft2(roi)) ** 2
    nps = power / len(rois) * dx * dy / (n * n)
    fx = np.fft.fftfreq(n, d=dx)
    fy = np.fft.fftfreq(n, d=dy)
    radius = np.sqrt(fx[:, None] ** 2 + fy[None, :] ** 2)
    df = 1.0 / (n * max(dx, dy))
    bins = np.floor(radius / df + 0.5).astype(int)
    n_bins = int(min(n // 2, bins.max()) + 1)
    sums = np.bincount(bins.ravel(), weights=nps.ravel(), minlength=n_bins)[:n_bins]
    counts = np.bincount(bins.ravel(), minlength=n_bins)[:n_bins]
    radial = sums / np.maximum(counts, 1)
    freqs = np.arange(n_bins) * df
    variance = float(nps.sum() / (n * dx * n * dy))
    return {
        "peak_frequency_per_mm": float(freqs[int(np.argmax(radial))]),
        "mean_frequency_per_mm": float((radius * nps).sum() / nps.sum()),
        "variance_hu2": variance,
        "n_rois": float(len(rois)),
        "frequency_per_mm": freqs,
        "nps_radial_hu2mm2": radial,
    }


def _edge_points(smooth: np.ndarray, threshold_hu: float, mask: Optional[np.ndarray]) -> np.ndarray:
    above = smooth > threshold_hu
    boundary = above & ~ndimage.binary_erosion(above, border_value=1)
    if mask is not None:
        boundary &= mask
    return np.argwhere(boundary)


def _aligned_esf(positions: np.ndarray, profiles: np.ndarray, grid: np.ndarray, min_contrast_hu: float,
                 plateau_fraction: float = 0.2, flatness: float = 0.1) -> Tuple[np.ndarray, int]:
    """Oversampled mean edge-spread function from many sampled edge profiles.

    Each profile (rows of ``profiles`` at ``positions``, low -> high HU) is normalised by its two end
    plateaus and rejected unless both are flat and the contrast is at least ``min_contrast_hu``. It is
    then shifted by the centroid of its derivative (an edge position estimate that, unlike a 50 %
    crossing, is not biased by the sampling), and all shifted samples are averaged in the bins of
    ``grid``: profiles crossing the edge at different sub-voxel offsets fill the ESF in finer than the
    voxel (the oversampled-ESF method).
    """
    n_plateau = max(2, int(plateau_fraction * profiles.shape[1]))
    low = profiles[:, :n_plateau].mean(axis=1)
    high = profiles[:, -n_plateau:].mean(axis=1)
    contrast = high - low
    flat = (profiles[:, :n_plateau].std(axis=1) < flatness * np.abs(contrast)) & (
        profiles[:, -n_plateau:].std(axis=1) < flatness * np.abs(contrast))
    good = (contrast >= min_contrast_hu) & flat
    if not good.any():
        return np.full(grid.shape, np.nan), 0
    esf = (profiles[good] - low[good, None]) / contrast[good, None]
    slope = np.clip(np.diff(esf, axis=1), 0, None)
    middle = 0.5 * (positions[1:] + positions[:-1])
    centres = (slope * middle).sum(axis=1) / np.maximum(slope.sum(axis=1), 1e-12)
    shifted = (positions[None, :] - centres[:, None]).ravel()
    step = grid[1] - grid[0]
    index = np.floor((shifted - grid[0]) / step + 0.5).astype(int)
    inside = (index >= 0) & (index < grid.size)
    sums = np.bincount(index[inside], weights=esf.ravel()[inside], minlength=grid.size)
    counts = np.bincount(index[inside], minlength=grid.size)
    filled = counts > 0
    mean = np.interp(grid, grid[filled], sums[filled] / counts[filled])
    return mean, int(good.sum())


def _crossing(esf: np.ndarray, positions: np.ndarray, level: float) -> float:
    centre = int(np.argmin(np.abs(positions)))
    above = esf >= level
    # nearest upward crossing to the centre
    idx = np.nonzero(~above[:-1] & above[1:])[0]
    if idx.size == 0:
        return np.nan
    i = idx[np.argmin(np.abs(idx - centre))]
    return float(positions[i] + (level - esf[i]) / (esf[i + 1] - esf[i]) * (positions[i + 1] - positions[i]))


def _esf_summary(esf: np.ndarray, positions: np.ndarray, smoothing_mm: float) -> Dict[str, float]:
    step = positions[1] - positions[0]
    # the binned ESF is ragged bin to bin; smoothing it by a small fraction of the sample spacing
    # (0.1 mm in plane) removes that before the derivative and widens a 1 mm LSF by 0.5 %
    esf = ndimage.gaussian_filter1d(esf, sigma=max(smoothing_mm / step, 1.0), mode="nearest")
    width = _crossing(esf, positions, 0.9) - _crossing(esf, positions, 0.1)
    lsf = np.gradient(esf, positions)
    fwhm = _fwhm(lsf, positions)
    n_fft = 1 << 14
    mtf = np.abs(np.fft.rfft(lsf, n=n_fft))
    mtf /= mtf[0]
    freqs = np.fft.rfftfreq(n_fft, d=step)
    below = np.nonzero(mtf < 0.5)[0]
    mtf50 = float(freqs[below[0]]) if below.size else np.nan
    return {"esf_10_90_mm": float(width), "lsf_fwhm_mm": fwhm, "mtf50_per_mm": mtf50}


def _fwhm(lsf: np.ndarray, positions: np.ndarray) -> float:
    peak = int(np.argmax(lsf))
    half = lsf[peak] / 2.0
    left = np.nonzero(lsf[:peak] < half)[0]
    right = np.nonzero(lsf[peak:] < half)[0]
    if left.size == 0 or right.size == 0:
        return float("nan")
    i, j = left[-1], peak + right[0]
    x_left = positions[i] + (half - lsf[i]) / (lsf[i + 1] - lsf[i]) * (positions[i + 1] - positions[i])
    x_right = positions[j - 1] + (half - lsf[j - 1]) / (lsf[j] - lsf[j - 1]) * (positions[j] - positions[j - 1])
    return float(x_right - x_left)


def edge_sharpness(volume, spacing_mm: Sequence[float], threshold_hu: float = -500.0, mask=None,
                   half_length_mm: float = 5.0, step_mm: float = 0.05, max_edges: int = 3000,
                   min_contrast_hu: float = 300.0, seed: int = 0) -> Dict[str, float]:
    """In-plane sharpness from the edge-spread function across a detected edge.

    Edge points are the boundary voxels of ``smooth(volume) > threshold_hu`` on each axial slice
    (``-500``: the air/tissue or air/bone surface; ``~300``: soft tissue/bone). Through each, a profile
    is sampled along the in-plane gradient direction (bilinear interpolation every half pixel),
    normalised by its two plateaus, kept when both plateaus are flat and the contrast is at least
    ``min_contrast_hu``, centred on its edge and averaged into an ESF oversampled at ``step_mm``.

    Args:
        volume: CT in HU ``(X, Y, Z)``.
        spacing_mm: ``(dx, dy, dz)``.
        threshold_hu: level defining the edge.
        mask: only edges inside this region.
        half_length_mm: profile half length (keep below the thickness of the structures).
        step_mm: bin width of the oversampled ESF.
        max_edges: edge points used at most (chosen with ``seed``).
        min_contrast_hu: smallest plateau difference accepted.
        seed: random choice of edge points.

    Returns:
        ``{"esf_10_90_mm", "lsf_fwhm_mm", "mtf50_per_mm", "n_profiles"}`` (NaN when no edge qualifies).
    """
    image = _volume(volume)
    dx, dy, _ = _spacing3(spacing_mm)
    smooth = ndimage.gaussian_filter(image, sigma=(1.0, 1.0, 0.0))
    points = _edge_points(smooth, threshold_hu, None if mask is None else as_numpy(mask) > 0)
    rng = np.random.default_rng(seed)
    if len(points) > max_edges:
        points = points[rng.choice(len(points), max_edges, replace=False)]
    gx = ndimage.sobel(smooth, axis=0) / dx
    gy = ndimage.sobel(smooth, axis=1) / dy
    positions = np.arange(-half_length_mm, half_length_mm + 1e-9, 0.5 * min(dx, dy))
    grid = np.arange(-0.75 * half_length_mm, 0.75 * half_length_mm + 1e-9, step_mm)
    profiles = []
    for i, j, k in points:
        gi, gj = gx[i, j, k], gy[i, j, k]
        norm = np.hypot(gi, gj)
        if norm == 0:
            continue
        ni, nj = gi / norm, gj / norm  # unit normal in mm, towards higher HU
        coords = np.stack([i + positions * ni / dx, j + positions * nj / dy])
        if coords.min() < 0 or coords[0].max() > image.shape[0] - 1 or coords[1].max() > image.shape[1] - 1:
            continue
        profiles.append(ndimage.map_coordinates(image[:, :, k], coords, order=1))
    if not profiles:
        return {"esf_10_90_mm": np.nan, "lsf_fwhm_mm": np.nan, "mtf50_per_mm": np.nan, "n_profiles": 0.0}
    esf, count = _aligned_esf(positions, np.asarray(profiles), grid, min_contrast_hu)
    summary = _esf_summary(esf, grid, _ESF_SMOOTHING_MM) if count else {"esf_10_90_mm": np.nan, "lsf_fwhm_mm": np.nan,
                                                          "mtf50_per_mm": np.nan}
    summary["n_profiles"] = float(count)
    return summary


def slice_sensitivity(volume, spacing_mm: Sequence[float], threshold_hu: float = -500.0, mask=None,
                      half_length_mm: Optional[float] = None, min_cos: float = 0.9, max_edges: int = 3000,
                      min_contrast_hu: float = 300.0, seed: int = 0) -> Dict[str, float]:
    """Slice sensitivity profile along z from edges perpendicular to z.

    Edge points are boundary voxels of ``smooth(volume) > threshold_hu`` whose 3D gradient points
    along z (``|g_z| / |g| >= min_cos``). The slice values along z through each are centred on the
    edge and binned into an oversampled ESF (curved or tilted surfaces cross the slices at many
    sub-slice offsets; a single flat plate aligned with the slices cannot be oversampled); the SSP
    is the derivative of that ESF.

    Args:
        volume: CT in HU ``(X, Y, Z)``.
        spacing_mm: ``(dx, dy, dz)``.
        threshold_hu: level defining the edge.
        mask: only edges inside this region.
        half_length_mm: profile half length; default ``max(6 mm, 3 dz)``.
        min_cos: minimum cosine between the edge normal and z.
        max_edges: edge points used at most.
        min_contrast_hu: smallest plateau difference accepted.
        seed: random choice of edge points.

    Returns:
        ``{"ssp_fwhm_mm", "esf_10_90_mm", "n_profiles"}``.
    """
    image = _volume(volume)
    dx, dy, dz = _spacing3(spacing_mm)
    half = max(6.0, 3 * dz) if half_length_mm is None else half_length_mm
    smooth = ndimage.gaussian_filter(image, sigma=(1.0, 1.0, 0.5))
    points = _edge_points(smooth, threshold_hu, None if mask is None else as_numpy(mask) > 0)
    grads = [ndimage.sobel(smooth, axis=a) / s for a, s in enumerate((dx, dy, dz))]
    norm = np.sqrt(sum(g[tuple(points.T)] ** 2 for g in grads)) if len(points) else np.zeros(0)
    gz = grads[2][tuple(points.T)] if len(points) else np.zeros(0)
    keep = norm > 0
    keep[keep] = np.abs(gz[keep]) / norm[keep] >= min_cos
    points, signs = points[keep], np.sign(gz[keep])
    rng = np.random.default_rng(seed)
    if len(points) > max_edges:
        chosen = rng.choice(len(points), max_edges, replace=False)
        points, signs = points[chosen], signs[chosen]
    n_side = int(np.ceil(half / dz))
    offsets = np.arange(-n_side, n_side + 1)
    positions = offsets * dz
    grid = np.arange(-0.75 * half, 0.75 * half + 1e-9, dz / 20)
    profiles = []
    for (i, j, k), sign in zip(points, signs):
        z = k + int(sign) * offsets
        if z.min() < 0 or z.max() > image.shape[2] - 1:
            continue
        profiles.append(image[i, j, z])
    count = 0
    if profiles:
        esf, count = _aligned_esf(positions, np.asarray(profiles), grid, min_contrast_hu)
    if not count:
        return {"ssp_fwhm_mm": np.nan, "esf_10_90_mm": np.nan, "n_profiles": 0.0}
    summary = _esf_summary(esf, grid, max(_ESF_SMOOTHING_MM, dz / 4))
    return {"ssp_fwhm_mm": summary["lsf_fwhm_mm"], "esf_10_90_mm": summary["esf_10_90_mm"], "n_profiles": float(count)}


def mean_hu_per_tissue(volume, reference=None, mask=None,
                       classes: Optional[Dict[str, Tuple[float, float]]] = None) -> Dict[str, float]:
    """Mean HU of each tissue class, the classes taken from ``reference`` (or the volume itself).

    Classifying on a reference makes a prediction's class means comparable with the reference's:
    the same voxels are averaged in both (thresholding the prediction itself would truncate its
    distribution at the class limits).

    Args:
        volume: CT in HU ``(X, Y, Z)``.
        reference: volume whose HU define the classes (same shape); default ``volume``.
        mask: only voxels inside this region.
        classes: ``{name: (low, high)}`` HU intervals; default :data:`TISSUE_CLASSES_HU`.

    Returns:
        ``{"<class>_mean_hu", "<class>_n_voxels"}`` for every class (mean NaN when the class is empty).
    """
    image = _volume(volume)
    ref = image if reference is None else _volume(reference)
    if ref.shape != image.shape:
        raise ValueError(f"reference shape {ref.shape} differs from volume shape {image.shape}")
    inside = None if mask is None else as_numpy(mask) > 0
    out: Dict[str, float] = {}
    for name, (low, high) in (classes or TISSUE_CLASSES_HU).items():
        selected = (ref >= low) & (ref < high)
        if inside is not None:
            selected &= inside
        n = int(selected.sum())
        out[f"{name}_mean_hu"] = float(image[selected].mean(dtype=np.float64)) if n else float("nan")
        out[f"{name}_n_voxels"] = float(n)
    return out
