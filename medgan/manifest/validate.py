"""``medgan manifest validate``: every problem a training or batch run would trip on, all at once."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from medgan.manifest.images import ImageHeader, ImageHeaderError, overlap_fraction, read_image_header
from medgan.manifest.schema import (MASK, PAIRED, SOURCE, SPLITS, TARGET, CaseRecord, ImageRef, Issue, Manifest,
                                    parse_manifest)

PathLike = Union[str, "os.PathLike[str]"]

logger = logging.getLogger(__name__)

#: Paired images whose boxes overlap less than this fraction of the smaller one get a warning.
MIN_PAIR_OVERLAP = 0.5
#: A mask's bounding box may differ from its source's by this fraction of a voxel.
MASK_GRID_TOLERANCE_VOX = 0.01


@dataclass
class ValidationReport:
    """Result of :func:`validate_manifest`.

    Attributes:
        manifest: the parsed manifest (rows with errors left out of ``cases``).
        issues: every problem found, in the order found.
        headers: the image facts read, keyed by image reference text.
    """

    manifest: Manifest
    issues: List[Issue] = field(default_factory=list)
    headers: Dict[str, ImageHeader] = field(default_factory=dict)

    @property
    def errors(self) -> List[Issue]:
        return [issue for issue in self.issues if issue.severity == "error"]

    @property
    def warnings(self) -> List[Issue]:
        return [issue for issue in self.issues if issue.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        """The report as text: one line per issue (sorted by line), then a summary."""
        path = self.manifest.path
        lines = [issue.format(path) for issue in sorted(self.issues, key=lambda i: (i.line, i.severity))]
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self) -> str:
        manifest = self.manifest
        splits = Counter(case.split for case in manifest.cases)
        modalities = Counter(h.modality or "unknown" for h in self.headers.values())
        parts = [
            f"{manifest.path}: {manifest.kind} manifest, data root {manifest.data_root}",
            f"  cases: {len(manifest.cases)} valid rows ("
            + ", ".join(f"{split} {splits.get(split, 0)}" for split in SPLITS) + ")",
            f"  patients: {len({case.patient_id for case in manifest.cases})}",
        ]
        if self.headers:
            parts.append(f"  images read: {len(self.headers)} (" + ", ".join(f"{m} {n}" for m, n in
                                                                            sorted(modalities.items())) + ")")
        verdict = "OK" if self.ok else "FAILED"
        parts.append(f"  {verdict}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return "\n".join(parts)


def validate_manifest(path: PathLike, data_root: Optional[PathLike] = None, check_images: bool = True,
                      ) -> ValidationReport:
    """Check a manifest and every image it names; collect all problems instead of stopping at one.

    Structural checks (see :func:`medgan.manifest.schema.parse_manifest`): encoding, columns,
    empty cells, splits, duplicate case ids, a patient in several splits, paths leaving the data
    root. Image checks (``check_images``): the file or DICOM series exists and its header reads, it
    is a 3D volume without NaN/Inf, its modality matches the declared one (modality columns or a
    ``ct``/``mr`` domain), paired images overlap in world space, a mask lies on its source's grid.

    Args:
        path: the manifest CSV.
        data_root: folder the image paths are relative to; default: the manifest's folder.
        check_images: read image headers (and a sparse intensity sample); False checks text only.

    Returns:
        A :class:`ValidationReport`; ``report.ok`` is False when any error was found.

    Raises:
        ManifestError: the manifest file itself cannot be read.
    """
    manifest, issues = parse_manifest(path, data_root)
    report = ValidationReport(manifest=manifest, issues=issues)
    if not check_images:
        return report
    cache: Dict[Tuple[Path, Optional[str]], Union[ImageHeader, ImageHeaderError]] = {}
    for case in manifest.cases + manifest.rejected:
        logger.debug("checking case %s (line %d)", case.case_id, case.line)
        headers = {column: _header(ref, cache, case, column, report) for column, ref in case.images()}
        _check_modality(case, SOURCE, case.source_modality, headers.get(SOURCE), report)
        _check_modality(case, TARGET, case.target_modality, headers.get(TARGET), report)
        source, target, mask = headers.get(SOURCE), headers.get(TARGET), headers.get(MASK)
        if manifest.kind == PAIRED and source is not None and target is not None:
            _check_pair(case, source, target, report)
        if source is not None and mask is not None:
            _check_mask(case, source, mask, report)
    return report


def _header(ref: ImageRef, cache: Dict, case: CaseRecord, column: str, report: ValidationReport,
            ) -> Optional[ImageHeader]:
    key = (ref.path, ref.series)
    if key not in cache:
        try:
            cache[key] = read_image_header(ref)
        except ImageHeaderError as err:
            cache[key] = err
    result = cache[key]
    if isinstance(result, ImageHeaderError):
        report.issues.append(Issue("error", case.line, column, f"{ref.text}: {result.problem}", result.fix))
        return None
    report.headers[ref.text] = result
    return result


def _check_modality(case: CaseRecord, column: str, declared: Optional[str], header: Optional[ImageHeader],
                    report: ValidationReport) -> None:
    if header is None or declared is None:
        return
    ref = case.source if column == SOURCE else case.target
    if header.modality is None:
        report.issues.append(Issue("warning", case.line, column, f"cannot tell whether {ref} is {declared} "
                                   f"({header.evidence})", "check the image by eye"))
    elif header.modality != declared:
        report.issues.append(Issue("error", case.line, column, f"{ref} should be {declared} but looks like "
                                   f"{header.modality} ({header.evidence})",
                                   "fix the modality column or point at the right image (a CT must be in HU)"))


def _check_pair(case: CaseRecord, source: ImageHeader, target: ImageHeader, report: ValidationReport) -> None:
    fraction = overlap_fraction(source.bbox_ras_mm, target.bbox_ras_mm)
    boxes = f"source {_box(source.bbox_ras_mm)}, target {_box(target.bbox_ras_mm)}"
    if fraction <= 0.0:
        report.issues.append(Issue("error", case.line, TARGET, f"source and target do not overlap in world space "
                                   f"({boxes})", "register the pair or check that both images are of this case"))
    elif fraction < MIN_PAIR_OVERLAP:
        report.issues.append(Issue("warning", case.line, TARGET, f"source and target overlap by only "
                                   f"{100 * fraction:.0f}% of the smaller image ({boxes})",
                                   "check the pair; training uses only the overlap"))


def _check_mask(case: CaseRecord, source: ImageHeader, mask: ImageHeader, report: ValidationReport) -> None:
    tolerance = MASK_GRID_TOLERANCE_VOX * min(source.spacing_mm)
    if mask.shape != source.shape or not np.allclose(mask.bbox_ras_mm, source.bbox_ras_mm, atol=tolerance):
        report.issues.append(Issue("error", case.line, MASK, f"mask grid {mask.shape} {_box(mask.bbox_ras_mm)} differs "
                                   f"from the source grid {source.shape} {_box(source.bbox_ras_mm)}",
                                   "resample the mask onto the source image"))


def _box(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{lo:.1f}..{hi:.1f}" for lo, hi in zip(box[0], box[1])) + "] mm RAS"
