"""Data manifests: which cases, which files, which split; loud validation. Never imports torch.

- :func:`load_manifest` -> :class:`Manifest` of typed :class:`CaseRecord` rows (for training and batch runs).
- :func:`validate_manifest` -> :class:`ValidationReport` with every problem found (``medgan manifest validate``).
- :func:`scan_folder` / :func:`write_manifest` build one from a folder (``medgan manifest scan``).

The schema is documented in ``data_manifests/SCHEMA.md``.
"""

from medgan.manifest.images import ImageHeader, detect_modality, read_image_header
from medgan.manifest.scan import assign_split, hash_patient_id, scan_folder, write_manifest
from medgan.manifest.schema import (KNOWN_COLUMNS, PAIRED, REQUIRED_COLUMNS, SINGLE, SPLITS, UNPAIRED, CaseRecord,
                                    ImageRef, Issue, Manifest, load_manifest, parse_manifest)
from medgan.manifest.validate import ValidationReport, validate_manifest

__all__ = [
    "CaseRecord", "ImageHeader", "ImageRef", "Issue", "KNOWN_COLUMNS", "Manifest", "PAIRED", "REQUIRED_COLUMNS",
    "SINGLE", "SPLITS", "UNPAIRED", "ValidationReport", "assign_split", "detect_modality", "hash_patient_id",
    "load_manifest", "parse_manifest", "read_image_header", "scan_folder", "validate_manifest", "write_manifest",
]
