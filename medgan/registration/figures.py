"""A QC picture of a registration: checkerboard and colour overlay in three planes.

Both images are resampled onto one axis-aligned isotropic grid covering the fixed image, so the
three planes are shown in radiological convention (patient right on the left of axial and coronal
views, anterior on the left of sagittal views, superior at the top).
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import SimpleITK as sitk

PathLike = Union[str, "os.PathLike[str]"]


def save_registration_figure(fixed: sitk.Image, registered: sitk.Image, path: PathLike, title: str = "",
                             tiles: int = 8, max_size_vox: int = 256) -> None:
    """Write a PNG: row 1 checkerboard (fixed / registered moving), row 2 overlay (fixed magenta, moving green).

    Args:
        fixed: the fixed image.
        registered: the moving image already resampled onto the fixed grid.
        path: the PNG file to write (the caller makes it atomic).
        title: a line shown above the panels (e.g. the QC figures).
        tiles: checkerboard squares along each side of a panel.
        max_size_vox: longest side of the display grid, in voxels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fixed_lps, moving_lps = _display_volumes(fixed, registered, max_size_vox)  # (Z, Y, X), LPS axes
    centre = _centre(fixed_lps)
    fixed_n, moving_n = _window(fixed_lps), _window(moving_lps)
    planes = (("axial", lambda v: v[centre[0]], "upper"),
              ("coronal", lambda v: v[:, centre[1], :], "lower"),
              ("sagittal", lambda v: v[:, :, centre[2]], "lower"))
    figure, axes = plt.subplots(2, 3, figsize=(12, 8.5))
    for column, (name, cut, origin) in enumerate(planes):
        a, b = cut(fixed_n), cut(moving_n)
        board = _checkerboard(a.shape, tiles)
        axes[0, column].imshow(np.where(board, a, b), cmap="gray", vmin=0, vmax=1, origin=origin)
        axes[0, column].set_title(f"{name}: checkerboard")
        overlay = np.stack([a, b, a], axis=-1)
        axes[1, column].imshow(overlay, origin=origin)
        axes[1, column].set_title(f"{name}: fixed magenta, moving green")
        for row in range(2):
            axes[row, column].set_axis_off()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(os.fspath(path), dpi=80, format="png")
    plt.close(figure)


def _display_volumes(fixed: sitk.Image, registered: sitk.Image, max_size_vox: int) -> tuple[np.ndarray, np.ndarray]:
    size = np.asarray(fixed.GetSize())
    corners = np.array([fixed.TransformIndexToPhysicalPoint([int(i * (s - 1)) for i, s in zip(c, size)])
                        for c in np.ndindex(2, 2, 2)])
    low, high = corners.min(axis=0), corners.max(axis=0)
    spacing = max(float(min(fixed.GetSpacing())), float((high - low).max()) / max_size_vox)
    grid = [max(1, int(np.ceil((h - lo) / spacing)) + 1) for lo, h in zip(low, high)]
    reference = sitk.Image(grid, sitk.sitkFloat32)
    reference.SetSpacing([spacing] * 3)
    reference.SetOrigin(low.tolist())
    identity = sitk.Transform(3, sitk.sitkIdentity)
    volumes = [sitk.GetArrayFromImage(sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), reference, identity,
                                                    sitk.sitkLinear, float(np.nan)))
               for image in (fixed, registered)]
    return volumes[0], volumes[1]


def _centre(volume: np.ndarray) -> tuple[int, int, int]:
    """Centre of the part of the volume above its median (the body), as (z, y, x) indices."""
    finite = np.nan_to_num(volume, nan=np.nanmin(volume))
    weights = finite > np.median(finite)
    if not weights.any():
        return tuple(s // 2 for s in volume.shape)  # type: ignore[return-value]
    return tuple(round(c.mean()) for c in np.nonzero(weights))  # type: ignore[return-value]


def _window(volume: np.ndarray) -> np.ndarray:
    """Scale to 0..1 between the 1st and 99.5th percentile of the sampled values; outside the grid is 0."""
    finite = volume[np.isfinite(volume)]
    if finite.size == 0:
        return np.zeros_like(volume)
    low, high = np.percentile(finite, [1.0, 99.5])
    scaled = (volume - low) / max(float(high - low), 1e-6)
    return np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0)


def _checkerboard(shape: tuple[int, int], tiles: int) -> np.ndarray:
    rows = (np.arange(shape[0]) * tiles // max(shape[0], 1)) % 2
    cols = (np.arange(shape[1]) * tiles // max(shape[1], 1)) % 2
    return (rows[:, None] ^ cols[None, :]).astype(bool)
