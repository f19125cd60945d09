"""A MONAI ``ImageReader`` over :func:`medgan.io.dicom.read_dicom_volume`.

Usage::

    from monai.transforms import LoadImage
    from medgan.io.dicom import MedganDicomReader

    image = LoadImage(reader=MedganDicomReader(series=3), image_only=True)("/data/study")
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
from monai.data.image_reader import ImageReader
from monai.utils import ensure_tuple

from medgan.errors import DicomSeriesError
from medgan.io.dicom.reader import DicomVolume, PathLike, looks_like_dicom, read_dicom_volume


class MedganDicomReader(ImageReader):
    """Read a DICOM series (folder or file) with medgan's geometry checks, as a MONAI reader.

    ``get_data`` returns the ``(X, Y, Z)`` array and a metadata dict whose ``affine`` is voxel -> RAS
    (``space`` "RAS"), so ``LoadImage`` builds a :class:`monai.data.MetaTensor` with the right affine.

    Args:
        series: SeriesInstanceUID or SeriesNumber to pick when a folder holds several volumes.
        tilt: ``"resample"`` (orthogonal grid) or ``"shear"`` (exact, sheared affine).
        resample_uneven: resample uneven slice spacing instead of refusing it.
        slice_spacing_mm: output slice spacing when resampling (default: the typical input step).
    """

    def __init__(self, series: Optional[Union[str, int]] = None, tilt: str = "resample",
                 resample_uneven: bool = False, slice_spacing_mm: Optional[float] = None) -> None:
        super().__init__()
        self.series = series
        self.tilt = tilt
        self.resample_uneven = resample_uneven
        self.slice_spacing_mm = slice_spacing_mm

    def verify_suffix(self, filename: Union[Sequence[PathLike], PathLike]) -> bool:
        """True for a folder or DICOM file(s)."""
        return all(looks_like_dicom(name) for name in ensure_tuple(filename))

    def read(self, data: Union[Sequence[PathLike], PathLike], **kwargs: Any) -> DicomVolume:
        """Read the series under one folder or file (``kwargs`` override the constructor's options)."""
        paths = ensure_tuple(data)
        if len(paths) != 1:
            raise DicomSeriesError(f"{len(paths)} paths given for one DICOM volume", paths[0],
                                   "give the folder that holds the series (or one multi-frame file)")
        options = {"series": self.series, "tilt": self.tilt, "resample_uneven": self.resample_uneven,
                   "slice_spacing_mm": self.slice_spacing_mm, **kwargs}
        return read_dicom_volume(paths[0], **options)

    def get_data(self, img: DicomVolume) -> Tuple[np.ndarray, Dict[str, Any]]:
        """The ``(X, Y, Z)`` array and its metadata (a copy)."""
        meta = dict(img.meta)
        meta["affine"] = img.affine.copy()
        return img.array, meta
