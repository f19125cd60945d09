"""The JSON sidecar written beside a converted NIfTI (BIDS key names, as dcm2niix writes them).

A NIfTI file forgets what its DICOM series said about itself: above all its ``Modality``, without
which a CT stored in other units than HU cannot be told from an MR (see
:mod:`medgan.bundle.input_check`). ``medgan convert`` keeps these facts in ``<name>.json`` beside
``<name>.nii.gz``; :func:`medgan.manifest.images.sidecar_modality` and the bundles read them back.

No patient or study identifier is written (no names, dates or UIDs); the series UID stays in the
conversion's ``index.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Union

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["SIDECAR_KEYS", "sidecar_path", "sidecar_record", "write_sidecar"]

#: DICOM attributes copied from a volume's ``meta`` (same names in BIDS).
SIDECAR_KEYS = ("Modality", "SeriesNumber", "SeriesDescription", "ConvolutionKernel", "SliceThickness",
                "GantryDetectorTilt")


def sidecar_path(nifti_path: PathLike) -> Path:
    """``x.nii.gz`` / ``x.nii`` -> ``x.json``."""
    path = Path(nifti_path)
    name = path.name
    stem = name[:-7] if name.lower().endswith(".nii.gz") else name[:-4] if name.lower().endswith(".nii") else path.stem
    return path.with_name(stem + ".json")


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = str(value).strip()
    if text in ("", "None"):
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text else number


def sidecar_record(meta: Mapping[str, Any]) -> Dict[str, Any]:
    """The sidecar's content from a DICOM volume's ``meta`` (absent or empty attributes are left out)."""
    from medgan import __version__

    record: Dict[str, Any] = {}
    for key in SIDECAR_KEYS:
        value = _plain(meta.get(key))
        if value is not None:
            record[key] = value
    for key, name in (("tilt_handling", "GantryTiltHandling"), ("spacing_handling", "SliceSpacingHandling")):
        if meta.get(key):
            record[name] = str(meta[key])
    record["ConversionSoftware"] = "medgan"
    record["ConversionSoftwareVersion"] = __version__
    return record


def write_sidecar(meta: Mapping[str, Any], nifti_path: PathLike, overwrite: bool = True) -> Path:
    """Write ``sidecar_path(nifti_path)`` atomically from a DICOM volume's ``meta``; returns its path."""
    from medgan.utils.atomic import atomic_path

    path = sidecar_path(nifti_path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(sidecar_record(meta), indent=2) + "\n", encoding="utf-8")
    return path
