"""The results-folder layout that ``medgan run`` writes and ``medgan report`` reads.

See ``docs/results_layout.md`` for the full description. In short::

    RESULTS_DIR/
        summary.csv                  run summary, one row per case (optional)
        evaluation.csv               per-case metrics from ``medgan evaluate`` (optional)
        evaluation.summary.json      their summary (optional)
        <case_id>/
            pred.nii.gz              the synthetic output (required; marks the folder as a case)
            pred.json                sidecar: provenance, input check, uncertainty score, lesions
            input.nii.gz             the input (optional; else the sidecar's first input path)
            reference.nii.gz         reference on the output grid (optional)
            uncertainty.nii.gz       per-voxel standard deviation on the output grid (optional)
            mask.nii.gz              evaluation mask on the output grid (optional)
            dicom/                   derived DICOM series (optional)
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from medgan.errors import MedganError

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["CASE_FILES", "EVALUATION_CSV", "EVALUATION_SUMMARY", "RUN_SUMMARY", "SIDECAR", "ResultsCase",
           "find_cases", "read_csv_rows", "read_sidecar"]

logger = logging.getLogger(__name__)

#: File stems inside a case folder (``.nii.gz`` or ``.nii``).
CASE_FILES = ("pred", "input", "reference", "uncertainty", "mask")
#: The sidecar beside ``pred.nii.gz`` (BIDS convention: same stem, ``.json``).
SIDECAR = "pred.json"
RUN_SUMMARY = "summary.csv"
EVALUATION_CSV = "evaluation.csv"
EVALUATION_SUMMARY = "evaluation.summary.json"
_SUFFIXES = (".nii.gz", ".nii")


@dataclass
class ResultsCase:
    """The files of one case of a results folder (absent optional files are None).

    Args:
        case_id: the folder name.
        folder: the case folder.
        pred: the output volume.
        input: the input (``input.nii.gz``, else the sidecar's first input when it still exists).
        reference: reference on the output grid.
        uncertainty: per-voxel standard deviation on the output grid.
        mask: evaluation mask on the output grid.
        sidecar: the parsed ``pred.json`` (empty when absent).
    """

    case_id: str
    folder: Path
    pred: Path
    input: Optional[Path] = None
    reference: Optional[Path] = None
    uncertainty: Optional[Path] = None
    mask: Optional[Path] = None
    sidecar: Dict[str, Any] = field(default_factory=dict)


def _find(folder: Path, stem: str) -> Optional[Path]:
    for suffix in _SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_sidecar(path: PathLike) -> Dict[str, Any]:
    """Parse a sidecar JSON.

    Raises:
        MedganError: the file is not valid JSON or not a JSON object.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MedganError(f"the sidecar is unreadable ({err})", path,
                          "rerun the case, or remove the broken sidecar to report without it") from None
    if not isinstance(data, dict):
        raise MedganError("the sidecar is not a JSON object", path, "rerun the case")
    return data


def read_csv_rows(path: PathLike) -> List[Dict[str, str]]:
    """Rows of a CSV file with a header line.

    Raises:
        MedganError: the file cannot be read as CSV.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        raise MedganError(f"cannot read the CSV file ({err})", path, "rewrite it with medgan run / evaluate") from None


def find_cases(results_dir: PathLike) -> List[ResultsCase]:
    """Every case folder (a sub-folder holding ``pred.nii.gz`` or ``pred.nii``), sorted by case id.

    Sub-folders without a prediction are skipped with a warning (a failed or unfinished case; the
    run summary says why).

    Raises:
        MedganError: the folder does not exist or holds no case.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise MedganError("the results folder does not exist", root, "give the folder medgan run wrote to")
    cases: List[ResultsCase] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        pred = _find(folder, "pred")
        if pred is None:
            logger.warning("%s: no pred.nii.gz; the case is left out of the pictures", folder)
            continue
        sidecar_path = folder / SIDECAR
        sidecar = read_sidecar(sidecar_path) if sidecar_path.is_file() else {}
        input_path = _find(folder, "input")
        if input_path is None:
            recorded = [Path(entry["path"]) for entry in sidecar.get("inputs", []) if entry.get("path")]
            input_path = next((p for p in recorded if p.exists()), None)
        cases.append(ResultsCase(folder.name, folder, pred, input_path, _find(folder, "reference"),
                                 _find(folder, "uncertainty"), _find(folder, "mask"), sidecar))
    if not cases:
        raise MedganError("the results folder holds no case (no <case_id>/pred.nii.gz)", root,
                          "point at the folder medgan run wrote; see docs/results_layout.md")
    return cases
