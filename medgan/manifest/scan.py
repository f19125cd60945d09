"""``medgan manifest scan``: build a manifest from a folder of NIfTI files and DICOM series.

One row per volume: every ``.nii``/``.nii.gz`` file that is not a label map and every usable DICOM
image series (label maps, scouts, dose reports and other non-volumes are left out and logged). DICOM references always carry their
series selector (``folder::SeriesInstanceUID``), so adding a series to a folder later does not make
the manifest ambiguous.

Patient ids: for DICOM, ``p-`` + the first 12 hex digits of sha256(salt + PatientID), so the
manifest holds no identifier in clear (a pseudonym, not anonymisation: with a known list of IDs and
no secret salt the hash can be matched; pass a secret ``salt`` when that matters). For NIfTI, the
file's folder relative to the scanned root (every file of one folder is one patient).

Splits are assigned from the patient id alone (sha256 -> a number in [0, 1)), so a patient's cases
always land in one split and rescanning gives the same split.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from medgan.errors import ManifestError
from medgan.manifest.images import ImageHeaderError, read_image_header
from medgan.manifest.schema import (CASE_ID, DOMAIN, PATIENT_ID, SERIES_SEPARATOR, SOURCE, SOURCE_MODALITY, SPLIT,
                                    ImageRef)
from medgan.utils.atomic import atomic_path

PathLike = Union[str, "os.PathLike[str]"]

logger = logging.getLogger(__name__)

#: Fractions of patients assigned to train and val by default; the rest go to test.
DEFAULT_SPLIT_FRACTIONS: Tuple[float, float] = (0.8, 0.1)
#: Metadata columns written by :func:`scan_folder`, after the schema columns.
SCAN_METADATA_COLUMNS: Tuple[str, ...] = ("format", "shape", "spacing_mm", "series_description", "kernel")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def assign_split(patient_id: str, fractions: Tuple[float, float] = DEFAULT_SPLIT_FRACTIONS) -> str:
    """Deterministic split of a patient: ``train``, ``val`` or ``test`` from sha256 of the id.

    Args:
        patient_id: the (pseudonymous) patient id.
        fractions: expected fractions of patients in train and val; test gets the rest.
    """
    train, val = fractions
    if train < 0 or val < 0 or train + val > 1:
        raise ValueError(f"split fractions must be >= 0 and sum to at most 1, got {fractions}")
    value = int.from_bytes(hashlib.sha256(patient_id.encode("utf-8")).digest()[:8], "big") / 2.0**64
    return "train" if value < train else ("val" if value < train + val else "test")


def hash_patient_id(patient_id: str, salt: str = "") -> str:
    """Pseudonym ``p-<12 hex>`` of a DICOM PatientID (sha256 of ``salt + patient_id``)."""
    return "p-" + hashlib.sha256((salt + patient_id).encode("utf-8")).hexdigest()[:12]


def _dicom_patient_id(path: str) -> str:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    return str(ds.get("PatientID", "")).strip()


def _case_id(text: str, taken: Dict[str, int]) -> str:
    base = _UNSAFE.sub("_", text).strip("_") or "case"
    count = taken.get(base, 0)
    taken[base] = count + 1
    return base if count == 0 else f"{base}_{count + 1}"


def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def scan_folder(root: PathLike, salt: str = "", fractions: Tuple[float, float] = DEFAULT_SPLIT_FRACTIONS,
                with_domain: bool = False) -> List[Dict[str, str]]:
    """One manifest row per volume found under ``root`` (paths relative to ``root``).

    Args:
        root: the folder to scan (it becomes the data root of the manifest).
        salt: secret prepended to DICOM PatientIDs before hashing.
        fractions: fractions of patients in train and val (test gets the rest).
        with_domain: add a ``domain`` column (``ct``/``mr``, from the detected modality), making an
            unpaired manifest; otherwise a single-image manifest.

    Returns:
        Rows as dicts with the schema columns and :data:`SCAN_METADATA_COLUMNS`.

    Raises:
        ManifestError: ``root`` is not a folder or holds no volume.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise ManifestError("not a folder", root, "pass the folder that holds the NIfTI files / DICOM series")
    rows: List[Dict[str, str]] = []
    taken: Dict[str, int] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and _is_nifti(p) and not p.name.startswith(".")):
        relative = path.relative_to(root).as_posix()
        try:
            header = read_image_header(ImageRef(text=relative, path=path))
        except ImageHeaderError as err:
            logger.warning("%s: skipped (%s)", path, err.problem)
            continue
        if header.modality == "SEG":
            logger.info("%s: left out, it is a %s", path, header.evidence)
            continue
        parent = path.parent.relative_to(root).as_posix()
        stem = path.name[:-7] if path.name.lower().endswith(".nii.gz") else path.name[:-4]
        patient = parent if parent != "." else stem
        rows.append(_row(_case_id(relative.rsplit(".nii", 1)[0], taken), patient, relative, header.modality,
                         "nifti", header.shape, header.spacing_mm, "", "", fractions))
    rows.extend(_scan_dicom(root, salt, fractions, taken))
    if not rows:
        raise ManifestError("no NIfTI file or DICOM image series found", root,
                            "point at the folder that holds the images (searched recursively)")
    if with_domain:
        for row in rows:
            row[DOMAIN] = row[SOURCE_MODALITY].lower()
    return rows


def _scan_dicom(root: Path, salt: str, fractions: Tuple[float, float], taken: Dict[str, int]) -> List[Dict[str, str]]:
    from medgan.io.dicom.discovery import scan_series

    series, _ = scan_series(root)
    rows = []
    for info in series:
        if not info.usable:
            logger.info("%s: series %s (%s) left out: %s", info.folder, info.key, info.description, info.reason)
            continue
        folder = Path(info.folder).resolve().relative_to(root).as_posix()
        raw_id = _dicom_patient_id(info.records[0].path)
        if raw_id:
            patient = hash_patient_id(raw_id, salt)
        else:
            patient = folder
            logger.warning("%s: series %s has no PatientID; its folder is used as patient id", info.folder, info.key)
        label = f"{folder}_s{info.series_number}" if info.series_number is not None else f"{folder}_{info.key[-8:]}"
        first = info.records[0]
        spacing = (first.pixel_spacing[1], first.pixel_spacing[0], info.slice_spacing_mm or float("nan"))
        rows.append(_row(_case_id(label, taken), patient, f"{folder}{SERIES_SEPARATOR}{info.key}",
                         info.modality.upper() or None, "dicom", (first.columns, first.rows, info.n_slices), spacing,
                         info.description, info.kernel, fractions))
    return rows


def _row(case_id: str, patient: str, source: str, modality: Optional[str], fmt: str, shape: Sequence[int],
         spacing: Sequence[float], description: str, kernel: str, fractions: Tuple[float, float]) -> Dict[str, str]:
    if modality is None:
        logger.warning("%s: modality could not be detected; source_modality left empty", source)
    return {
        CASE_ID: case_id, PATIENT_ID: patient, SOURCE: source, SPLIT: assign_split(patient, fractions),
        SOURCE_MODALITY: modality or "", "format": fmt, "shape": "x".join(str(int(n)) for n in shape),
        "spacing_mm": "x".join(f"{s:.4g}" for s in spacing), "series_description": description, "kernel": kernel,
    }


def write_manifest(rows: Sequence[Dict[str, str]], path: PathLike, overwrite: bool = False) -> Path:
    """Write manifest rows as UTF-8 CSV, atomically; the columns are the union of the rows' keys in order."""
    columns: List[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    return path
