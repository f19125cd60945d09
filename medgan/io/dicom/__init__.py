"""DICOM in: find series, check their geometry, read one into a volume.

- :func:`scan_series` lists the series under a folder (headers only) with a usable flag and reason.
- :func:`read_dicom_volume` reads one into NumPy (no torch import), :func:`read_dicom_series` into a
  :class:`monai.data.MetaTensor`; :class:`MedganDicomReader` plugs into ``monai.transforms.LoadImage``.
"""

from __future__ import annotations

from typing import Any

from medgan.io.dicom.discovery import SeriesInfo, SkippedFile, SliceRecord, scan_series, select_series
from medgan.io.dicom.reader import DicomVolume, read_dicom_series, read_dicom_volume

__all__ = ["DicomVolume", "MedganDicomReader", "SeriesInfo", "SkippedFile", "SliceRecord", "read_dicom_series",
           "read_dicom_volume", "scan_series", "select_series"]


def __getattr__(name: str) -> Any:
    if name == "MedganDicomReader":  # imports MONAI: only when asked for
        from medgan.io.dicom.monai_reader import MedganDicomReader

        return MedganDicomReader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
