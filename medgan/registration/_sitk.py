"""Conversions between medgan's in-memory volumes and SimpleITK images, and small grid helpers.

medgan holds a volume as a :class:`monai.data.MetaTensor` of shape ``(X, Y, Z)`` whose affine maps
voxel indices to RAS millimetres. SimpleITK holds an array of shape ``(Z, Y, X)`` with origin,
spacing and direction in LPS millimetres. Both describe the same physical space; these helpers
convert without resampling.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
import SimpleITK as sitk
import torch

from medgan.errors import ImageFileError

PathLike = Union[str, "os.PathLike[str]"]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")


def metatensor_to_sitk(image: torch.Tensor) -> sitk.Image:
    """Convert a volume ``(X, Y, Z)`` with a RAS affine to a float32 SimpleITK image (LPS).

    Args:
        image: a :class:`monai.data.MetaTensor` of shape ``(X, Y, Z)`` (a leading channel of size 1
            is accepted) whose ``.affine`` maps voxels to RAS mm.

    Raises:
        ImageFileError: the tensor has no affine, more than one channel, or a shear in its affine.
    """
    affine = getattr(image, "affine", None)
    if affine is None:
        raise ImageFileError("the volume carries no affine (voxel -> RAS mm)", fix="load it with medgan.io or "
                             "monai LoadImage so that it is a MetaTensor with an affine")
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ImageFileError(f"expected a volume of shape (X, Y, Z), got {tuple(array.shape)}",
                             fix="pass one single-channel 3D volume")
    lps = _RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise ImageFileError("the volume's affine has a shear; SimpleITK images cannot represent it",
                             fix="resample the volume to an orthogonal grid first")
    result = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0), dtype=np.float32))
    result.SetSpacing(spacing.tolist())
    result.SetOrigin(lps[:3, 3].tolist())
    result.SetDirection(direction.flatten().tolist())
    return result


def sitk_to_metatensor(image: sitk.Image, meta: dict | None = None) -> torch.Tensor:
    """Convert a SimpleITK image to a ``MetaTensor`` of shape ``(X, Y, Z)`` with a RAS affine."""
    from monai.data import MetaTensor

    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array)), affine=torch.from_numpy(sitk_affine_ras(image)),
                      meta=dict(meta or {}))


def sitk_affine_ras(image: sitk.Image) -> np.ndarray:
    """The 4x4 voxel -> RAS mm affine of a SimpleITK image."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    lps[:3, 3] = image.GetOrigin()
    return _RAS_TO_LPS @ lps


def read_image(path: PathLike) -> sitk.Image:
    """Read a volume as float32 SimpleITK image: a NIfTI/NRRD/MHA file or a DICOM series folder.

    DICOM folders are read through :func:`medgan.io.load_volume` (series discovery and geometry checks).

    Raises:
        ImageFileError: the path is missing, of an unknown format, or unreadable.
    """
    path = Path(path)
    if path.is_dir():
        try:
            from medgan.io import load_volume  # type: ignore[attr-defined]
        except ImportError:
            raise ImageFileError("reading DICOM folders needs medgan.io.load_volume, which this installation "
                                 "lacks", path, "convert the series to NIfTI first (medgan convert)") from None
        return metatensor_to_sitk(load_volume(path))
    if not path.is_file():
        raise ImageFileError("no such file or folder", path, "check the path")
    if not path.name.lower().endswith(_IMAGE_SUFFIXES):
        raise ImageFileError(f"unknown image format (expected one of {', '.join(_IMAGE_SUFFIXES)} or a DICOM "
                             "folder)", path, "convert it to NIfTI first")
    if path.name.lower().endswith((".nii", ".nii.gz")):
        # medgan's NIfTI reader: size checked before allocating, gzip CRC, NaN/Inf and 4D refused
        from medgan.io.nifti import read_nifti

        return metatensor_to_sitk(read_nifti(path, validate=True))
    try:
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError as err:
        raise ImageFileError(f"unreadable image ({str(err).strip().splitlines()[-1]})", path,
                             "check that the file is complete and a valid image") from None
    if image.GetDimension() != 3:
        raise ImageFileError(f"expected a 3D volume, got {image.GetDimension()} dimensions", path,
                             "pass a single 3D volume")
    return image


def resample_isotropic(image: sitk.Image, spacing_mm: float, default_value: float) -> sitk.Image:
    """Resample to an isotropic grid of ``spacing_mm`` over the same extent, with anti-alias smoothing.

    Used for the working copies the optimiser sees; outputs are always resampled from the original.
    """
    old_spacing = np.asarray(image.GetSpacing())
    size = np.maximum(1, np.round(np.asarray(image.GetSize()) * old_spacing / spacing_mm)).astype(int)
    # Gaussian anti-aliasing for axes that are down-sampled (sigma ~ half the new spacing).
    sigma = [0.5 * np.sqrt(max(spacing_mm**2 - s**2, 0.0)) for s in old_spacing]
    smoothed = image
    if max(sigma) > 0:
        smoothed = sitk.SmoothingRecursiveGaussian(image, [max(s, 1e-3) for s in sigma])
    origin_shift = np.asarray(image.GetDirection()).reshape(3, 3) @ ((spacing_mm - old_spacing) / 2.0)
    return sitk.Resample(smoothed, [int(s) for s in size], sitk.Transform(), sitk.sitkLinear,
                         (np.asarray(image.GetOrigin()) + origin_shift).tolist(),
                         [spacing_mm] * 3, image.GetDirection(), default_value, sitk.sitkFloat32)


def physical_grid(reference: sitk.Image, step_vox: Sequence[int]) -> np.ndarray:
    """Physical LPS coordinates ``(N, 3)`` of every ``step_vox``-th voxel of ``reference``."""
    axes = [np.arange(0, n, s) for n, s in zip(reference.GetSize(), step_vox)]
    idx = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.float64)
    direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    return idx * np.asarray(reference.GetSpacing()) @ direction.T + np.asarray(reference.GetOrigin())
