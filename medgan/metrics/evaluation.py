"""Evaluate files: one prediction against its reference, or a results folder against a manifest.

A results folder holds one prediction per case named after the manifest's ``case_id``
(``<case_id>.nii.gz``, ``<case_id>.nii``, or exactly one file starting with ``<case_id>`` followed by
``_``, ``-`` or ``.``). The reference of a case is its ``target`` image (paired manifests) or its
``source`` image (single manifests, where a degradation simulator made the input from it).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from medgan.errors import ImageFileError, ManifestError, MedganError
from medgan.metrics.masks import as_numpy, body_mask_from_ct, check_same_grid
from medgan.metrics.profiles import PROFILES, evaluate_pair
from medgan.utils.atomic import atomic_path

__all__ = ["MASK_AUTO", "MASK_MANIFEST", "MASK_NONE", "evaluate_files", "evaluate_results_folder",
           "summarize", "write_per_case_csv", "write_json"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
MASK_AUTO = "auto"
MASK_MANIFEST = "manifest"
MASK_NONE = "none"
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _load(path: PathLike, series: Optional[str] = None):
    from medgan.io import load_volume
    from medgan.io.nifti import validate_volume

    volume = load_volume(path, series=series) if series is not None else load_volume(path)
    validate_volume(volume, path)  # 3D and finite: a NaN voxel would otherwise drop out of the metrics unseen
    return volume


def _resolve_mask(mask: Optional[str], target, target_name: str, profile: str):
    """``None``/``"none"``: no mask; ``"auto"``: body mask of the target; else a mask file on the target grid."""
    if mask is None or mask == MASK_NONE:
        return None
    if not PROFILES[profile].uses_mask:
        raise MedganError(f"profile {profile!r} is unmasked by definition; a mask ({mask}) was asked for",
                          fix="use --mask none with this profile")
    if mask == MASK_AUTO:
        return body_mask_from_ct(target)
    loaded = _load(mask)
    check_same_grid(loaded, target, os.fspath(mask), target_name)
    values = as_numpy(loaded)
    if not (values > 0).any():
        raise ImageFileError("the mask file is empty (no voxel > 0)", mask, "give the body mask of this case")
    return values > 0


def evaluate_files(pred_path: PathLike, target_path: PathLike, profile: str = "synthrad2023",
                   mask: Optional[str] = MASK_AUTO) -> Dict[str, float]:
    """Metrics of a prediction file against a reference file under a profile.

    Args:
        pred_path: NIfTI file or DICOM folder of the prediction.
        target_path: the reference on the same grid (shape and affine are checked).
        profile: a key of :data:`medgan.metrics.PROFILES`.
        mask: ``"auto"`` (body mask from the target), ``"none"``/None, or a mask file path.

    Raises:
        GeometryMismatchError: the files are not on one grid (both are named).
    """
    if profile not in PROFILES:
        raise MedganError(f"unknown metric profile {profile!r}", fix=f"choose one of {', '.join(PROFILES)}")
    pred = _load(pred_path)
    target = _load(target_path)
    check_same_grid(pred, target, os.fspath(pred_path), os.fspath(target_path))
    mask_array = _resolve_mask(mask, target, os.fspath(target_path), profile)
    return evaluate_pair(pred, target, profile, mask=mask_array)


def _find_prediction(results_dir: Path, case_id: str) -> Optional[Path]:
    """``<case_id>/pred.nii.gz`` (the layout ``medgan run`` writes), else ``<case_id>.nii.gz`` or ``<case_id>_*.nii.gz``."""
    for suffix in _NIFTI_SUFFIXES:
        for exact in (results_dir / case_id / f"pred{suffix}", results_dir / f"{case_id}{suffix}"):
            if exact.is_file():
                return exact
    matches = sorted(p for p in results_dir.iterdir()
                     if p.name.startswith(case_id) and p.name[len(case_id):len(case_id) + 1] in ("_", "-", ".")
                     and p.name.lower().endswith(_NIFTI_SUFFIXES))
    if len(matches) > 1:
        raise MedganError(f"several predictions match case {case_id!r}: {', '.join(m.name for m in matches)}",
                          results_dir, f"keep one file per case, named {case_id}.nii.gz")
    return matches[0] if matches else None


def evaluate_results_folder(results_dir: PathLike, manifest_path: PathLike, profile: str = "synthrad2023",
                            mask: str = MASK_AUTO, split: Optional[str] = None,
                            data_root: Optional[PathLike] = None) -> List[Dict[str, object]]:
    """Evaluate every case of a manifest whose prediction is in ``results_dir``.

    Args:
        results_dir: folder of predictions named by ``case_id``.
        manifest_path: the manifest CSV (``medgan manifest``).
        profile: a key of :data:`medgan.metrics.PROFILES`.
        mask: ``"auto"``, ``"manifest"`` (its ``mask`` column, which must lie on the reference grid) or ``"none"``.
        split: only this split (``train``/``val``/``test``); all cases when None.
        data_root: folder the manifest's paths are relative to (default: the manifest's folder).

    Returns:
        one row per case: ``case_id``, ``split``, ``prediction``, ``reference`` and the profile's metrics.

    Raises:
        MedganError: a case has no prediction (all missing cases are listed) or several.
        ManifestError: the manifest is invalid, or ``--mask manifest`` and a case has no mask.
    """
    from medgan.manifest import load_manifest

    results = Path(results_dir)
    if not results.is_dir():
        raise MedganError("the results folder does not exist", results, "give the folder the predictions were written to")
    manifest = load_manifest(manifest_path, data_root=data_root)
    cases = manifest.cases if split is None else manifest.split(split)
    if not cases:
        raise ManifestError(f"no case{'' if split is None else f' in split {split!r}'}", manifest_path,
                            "check the manifest and --split")
    found = {case.case_id: _find_prediction(results, case.case_id) for case in cases}
    missing = [cid for cid, path in found.items() if path is None]
    if missing:
        shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise MedganError(f"{len(missing)} of {len(cases)} cases have no prediction: {shown}", results,
                          "run inference for them, or restrict the evaluation with --split")
    rows: List[Dict[str, object]] = []
    for case in cases:
        reference = case.target if case.target is not None else case.source
        pred_path = found[case.case_id]
        target = _load(reference.path, reference.series)
        pred = _load(pred_path)
        check_same_grid(pred, target, os.fspath(pred_path), str(reference))
        if mask == MASK_MANIFEST:
            if case.mask is None:
                raise ManifestError(f"case {case.case_id!r} has no mask", manifest_path,
                                    "fill the mask column, or use --mask auto")
            mask_array = _resolve_mask(os.fspath(case.mask.path), target, str(reference), profile)
        else:
            mask_array = _resolve_mask(mask, target, str(reference), profile)
        values = evaluate_pair(pred, target, profile, mask=mask_array)
        logger.info("%s: %s", case.case_id, ", ".join(f"{k}={v:.4g}" for k, v in values.items()))
        rows.append({"case_id": case.case_id, "split": case.split, "prediction": os.fspath(pred_path),
                     "reference": str(reference), **values})
    return rows


def summarize(rows: Sequence[Dict[str, object]], profile: str) -> Dict[str, object]:
    """Mean, standard deviation (ddof 1), median, min and max of every numeric metric over cases.

    Non-finite values (an infinite PSNR of an identical case) are counted and left out of the statistics.
    """
    keys = [k for k, v in rows[0].items() if isinstance(v, float)] if rows else []
    stats: Dict[str, object] = {}
    for key in keys:
        values = np.array([float(row[key]) for row in rows])
        finite = values[np.isfinite(values)]
        entry: Dict[str, object] = {"n": int(finite.size), "n_non_finite": int(values.size - finite.size)}
        if finite.size:
            entry.update(mean=float(finite.mean()), sd=float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
                         median=float(np.median(finite)), min=float(finite.min()), max=float(finite.max()))
        stats[key] = entry
    return {"profile": profile, "description": PROFILES[profile].description, "n_cases": len(rows),
            "metrics": stats}


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(data: Dict[str, object], path: PathLike) -> Path:
    """Write ``data`` as indented JSON atomically; an infinite PSNR is written as the string ``"inf"``."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return Path(path)


def write_per_case_csv(rows: Sequence[Dict[str, object]], path: PathLike) -> Path:
    """Write one row per case (columns from the first row) atomically."""
    if not rows:
        raise MedganError("no case to write", path, "check the manifest and the results folder")
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return Path(path)
