"""Bytes <-> MONAI ``MetaTensor``: DICOM series, NIfTI, the derived-DICOM writer.

In memory a volume is a :class:`monai.data.MetaTensor` of shape ``(X, Y, Z)`` (no channel; column,
row, slice as in NIfTI and MONAI's ``LoadImage``) whose ``.affine`` maps voxel indices to RAS
millimetres (MONAI's and NIfTI's convention; DICOM's LPS is converted on the way in and out).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

from medgan.errors import ImageFileError

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["load_volume"]


def load_volume(path: PathLike, series: Optional[Union[str, int]] = None, **dicom_options: Any) -> Any:
    """Load a volume as a :class:`monai.data.MetaTensor` ``(X, Y, Z)`` with a voxel -> RAS affine.

    Args:
        path: a ``.nii``/``.nii.gz`` file, or a DICOM folder or file.
        series: DICOM only: SeriesInstanceUID or SeriesNumber when the folder holds several volumes.
        dicom_options: DICOM only: ``tilt``, ``resample_uneven``, ``slice_spacing_mm`` of
            :func:`medgan.io.dicom.read_dicom_series`.

    Raises:
        ImageFileError: the path is missing, or a NIfTI file was given a series selection.
        DicomSeriesError: see :func:`medgan.io.dicom.read_dicom_series`.
    """
    path = Path(path)
    if not path.exists():
        raise ImageFileError("no such file or folder", path, "check the path")
    if path.is_file() and path.name.lower().endswith((".nii", ".nii.gz")):
        if series is not None or dicom_options:
            raise ImageFileError("a series selection or DICOM options were given for a NIfTI file", path,
                                 "drop --series (a NIfTI file holds one volume)")
        from medgan.io.nifti import read_nifti

        return read_nifti(path)
    from medgan.io.dicom import read_dicom_series

    return read_dicom_series(path, series=series, **dicom_options)
