"""Image-quality measurements used to validate the degradation simulators.

Noise power spectra, noise in tissue masks, edge-spread width and slab comparisons. They work on
numpy arrays ``(X, Y, Z)`` in HU with the in-plane pixel size in mm.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from scipy import ndimage


def tissue_mask(image_hu: np.ndarray, low_hu: float, high_hu: float, erosion_vox: int = 2) -> np.ndarray:
    """Voxels with ``low_hu <= HU <= high_hu``, eroded in-plane by ``erosion_vox`` to avoid edges.

    Args:
        image_hu: ``(X, Y, Z)`` CT in HU.
        low_hu, high_hu: HU window of the tissue (soft tissue: 0..100; fat: -150..-50).
        erosion_vox: in-plane erosion, voxels.

    Returns:
        ``(X, Y, Z)`` bool mask.
    """
    mask = (image_hu >= low_hu) & (image_hu <= high_hu)
    if erosion_vox > 0:
        structure = np.zeros((3, 3, 3), bool)
        structure[:, :, 1] = ndimage.generate_binary_structure(2, 1)
        mask = ndimage.binary_erosion(mask, structure, iterations=erosion_vox)
    return mask


def radial_nps(noise: np.ndarray, pixel_mm: float, mask: Optional[np.ndarray] = None, roi_px: int = 64,
               n_bins: int = 16) -> Tuple[np.ndarray, np.ndarray]:
    """Radially averaged 2D noise power spectrum of noise-only images.

    Square ROIs of ``roi_px`` pixels are tiled over each slice (only those entirely inside
    ``mask``), mean-subtracted, and their ``|FFT|^2 * px^2 / N`` averaged, then binned by radial
    frequency from half the ROI's fundamental frequency (zero frequency, which the mean subtraction
    empties, is left out: the first bin holds the lowest measured frequencies) to Nyquist.

    Args:
        noise: ``(X, Y, Z)`` or ``(X, Y)`` noise image (e.g. low-dose minus normal-dose), HU.
        pixel_mm: in-plane pixel size, mm.
        mask: same shape as ``noise``, bool; ``None``: everywhere.
        roi_px: ROI side, pixels.
        n_bins: radial bins between 0 and the Nyquist frequency.

    Returns:
        ``(frequencies_per_mm, nps_hu2_mm2)``, each ``(n_bins,)``; the frequency is the bin centre.
    """
    volume = noise if noise.ndim == 3 else noise[:, :, None]
    inside = np.ones(volume.shape, bool) if mask is None else mask.reshape(volume.shape)
    rois = []
    for k in range(volume.shape[2]):
        for i in range(0, volume.shape[0] - roi_px + 1, roi_px):
            for j in range(0, volume.shape[1] - roi_px + 1, roi_px):
                if inside[i:i + roi_px, j:j + roi_px, k].all():
                    roi = volume[i:i + roi_px, j:j + roi_px, k].astype(np.float64)
                    rois.append(roi - roi.mean())
    if not rois:
        raise ValueError(f"no {roi_px}x{roi_px} ROI inside the mask fits in the noise image {volume.shape}")
    power = np.mean([np.abs(np.fft.fft2(r)) ** 2 for r in rois], axis=0) * pixel_mm ** 2 / roi_px ** 2
    freqs = np.fft.fftfreq(roi_px, d=pixel_mm)
    radius = np.hypot(*np.meshgrid(freqs, freqs, indexing="ij"))
    nyquist = 0.5 / pixel_mm
    fundamental = 1.0 / (roi_px * pixel_mm)
    edges = np.linspace(0.5 * fundamental, nyquist, n_bins + 1)  # the first bin starts above zero frequency
    index = np.digitize(radius.ravel(), edges) - 1
    valid = (index >= 0) & (index < n_bins)
    sums = np.bincount(index[valid], power.ravel()[valid], minlength=n_bins)
    counts = np.bincount(index[valid], minlength=n_bins)
    return 0.5 * (edges[:-1] + edges[1:]), sums / np.maximum(counts, 1)


def slice_difference_noise_sd(image_hu: np.ndarray, mask: np.ndarray) -> float:
    """Noise SD from adjacent-slice differences, ``std(s_k - s_k+1) / sqrt(2)``, where both are in ``mask``.

    Structure that changes slowly along z cancels, so this measures the noise of images of
    uniform objects (phantoms) without a noise-free reference.
    """
    diff = image_hu[:, :, 1:].astype(np.float64) - image_hu[:, :, :-1]
    both = mask[:, :, 1:] & mask[:, :, :-1]
    return float(diff[both].std() / np.sqrt(2.0))


def edge_width_10_90(image_hu: np.ndarray, pixel_mm: float, threshold_hu: float = -500.0,
                     half_length_px: int = 12, upsample: int = 10) -> float:
    """Median 10-90% edge-spread width (mm) of the outer body/air edge along image rows.

    For every row of every slice that crosses the body, the profile entering from the low-x side
    is read around the first crossing of ``threshold_hu``; air and tissue levels are the medians of
    its outer and inner thirds; the width between the 10% and 90% crossings is measured on a
    linearly interpolated profile. Rows whose levels differ by less than 500 HU are skipped.

    Args:
        image_hu: ``(X, Y, Z)`` CT in HU.
        pixel_mm: pixel size along X, mm.
        threshold_hu: level marking the edge.
        half_length_px: profile half length, pixels.
        upsample: interpolation factor.

    Returns:
        Median width in mm (NaN when no usable edge is found).
    """
    widths = []
    n = 2 * half_length_px + 1
    fine = np.linspace(0, n - 1, (n - 1) * upsample + 1)
    third = max(2, n // 3)
    for k in range(image_hu.shape[2]):
        for j in range(image_hu.shape[1]):
            line = image_hu[:, j, k]
            above = np.nonzero(line > threshold_hu)[0]
            if above.size == 0:
                continue
            edge = int(above[0])
            if edge - half_length_px < 0 or edge + half_length_px >= line.size:
                continue
            profile = line[edge - half_length_px: edge + half_length_px + 1].astype(np.float64)
            air, tissue = np.median(profile[:third]), np.median(profile[-third:])
            if tissue - air < 500.0:
                continue
            scaled = np.interp(fine, np.arange(n), (profile - air) / (tissue - air))
            lo = np.nonzero(scaled >= 0.1)[0]
            hi = np.nonzero(scaled >= 0.9)[0]
            if lo.size and hi.size and hi[0] > lo[0]:
                widths.append((fine[hi[0]] - fine[lo[0]]) * pixel_mm)
    return float(np.median(widths)) if widths else float("nan")
