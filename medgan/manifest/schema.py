"""The manifest CSV schema, its typed records, and the structural checks every loader runs.

A manifest is a UTF-8 CSV file with one case per row (see ``data_manifests/SCHEMA.md``). Its kind
follows from its columns:

- ``paired``: a ``target`` column; each row holds a source image and the target image of the same
  object (kernel conversion, super-resolution, a registered MR/CT pair).
- ``unpaired``: a ``domain`` column; each row holds one image (in ``source``) and the domain it belongs
  to (``ct``/``mr``, or ``source``/``target``), as CycleGAN training reads them.
- ``single``: neither; each row holds one image (batch inference, or a routine-dose CT that a
  degradation simulator turns into a training pair on the fly).

An image reference is a path relative to the data root: a NIfTI file, or a DICOM folder optionally
followed by ``::SELECTOR`` where the selector is a SeriesInstanceUID or a SeriesNumber (as
``medgan convert --series`` takes it). A folder that holds several volumes needs a selector.

This module reads text only (no image is opened) and never imports torch.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from medgan.errors import ManifestError

PathLike = Union[str, "os.PathLike[str]"]

CASE_ID = "case_id"
PATIENT_ID = "patient_id"
SOURCE = "source"
TARGET = "target"
DOMAIN = "domain"
MASK = "mask"
SPLIT = "split"
SOURCE_MODALITY = "source_modality"
TARGET_MODALITY = "target_modality"

#: Columns every manifest must have.
REQUIRED_COLUMNS: Tuple[str, ...] = (CASE_ID, PATIENT_ID, SOURCE, SPLIT)
#: Columns with a meaning to medgan; any other column is free metadata (site, scanner, kernel, ...).
KNOWN_COLUMNS: Tuple[str, ...] = REQUIRED_COLUMNS + (TARGET, DOMAIN, MASK, SOURCE_MODALITY, TARGET_MODALITY)
#: Allowed values of ``split``.
SPLITS: Tuple[str, ...] = ("train", "val", "test")
#: Allowed values of the modality columns.
MODALITIES: Tuple[str, ...] = ("CT", "MR")
#: ``domain`` values that also name the modality of the row's image.
DOMAIN_MODALITY: Dict[str, str] = {"ct": "CT", "mr": "MR"}
#: Separates a DICOM folder from its series selector in an image reference.
SERIES_SEPARATOR = "::"

PAIRED = "paired"
UNPAIRED = "unpaired"
SINGLE = "single"


@dataclass(frozen=True)
class ImageRef:
    """One image named by a manifest cell.

    Attributes:
        text: the cell as written (relative path, optionally ``::SELECTOR``).
        path: the absolute, normalised path under the data root.
        series: the DICOM series selector (SeriesInstanceUID or SeriesNumber), or None.
    """

    text: str
    path: Path
    series: Optional[str] = None

    @property
    def is_nifti(self) -> bool:
        name = self.path.name.lower()
        return name.endswith(".nii") or name.endswith(".nii.gz")

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class CaseRecord:
    """One validated manifest row.

    Attributes:
        case_id: unique id of the case in the manifest.
        patient_id: pseudonymous patient id; every case of one patient lies in one split.
        source: the source image (the only image for ``unpaired``/``single`` manifests).
        target: the target image of a ``paired`` manifest, else None.
        domain: the domain of an ``unpaired`` row (lower case), else None.
        mask: an optional mask on the source grid.
        split: ``train``, ``val`` or ``test``.
        source_modality: ``CT``/``MR`` when declared (``domain`` ``ct``/``mr`` declares it too).
        target_modality: ``CT``/``MR`` when declared.
        metadata: the free columns of the row (empty cells left out).
        line: the line of the row in the manifest file (the header is line 1).
    """

    case_id: str
    patient_id: str
    source: ImageRef
    split: str
    target: Optional[ImageRef] = None
    domain: Optional[str] = None
    mask: Optional[ImageRef] = None
    source_modality: Optional[str] = None
    target_modality: Optional[str] = None
    metadata: Dict[str, str] = field(default_factory=dict)
    line: int = 0

    def images(self) -> Iterator[Tuple[str, ImageRef]]:
        """``(column, image)`` for every image the row names."""
        for column, ref in ((SOURCE, self.source), (TARGET, self.target), (MASK, self.mask)):
            if ref is not None:
                yield column, ref

    def to_dict(self) -> Dict[str, object]:
        """A MONAI-dataset style dict: image keys map to paths (``path::series`` for a selected DICOM series)."""
        out: Dict[str, object] = {CASE_ID: self.case_id, PATIENT_ID: self.patient_id, SPLIT: self.split}
        for column, ref in self.images():
            out[column] = str(ref.path) if ref.series is None else f"{ref.path}{SERIES_SEPARATOR}{ref.series}"
        if self.domain is not None:
            out[DOMAIN] = self.domain
        out.update(self.metadata)
        return out


@dataclass(frozen=True)
class Issue:
    """One problem found in a manifest.

    Attributes:
        severity: ``error`` (a run would fail or be wrong) or ``warning``.
        line: line in the manifest file (0 for the file as a whole).
        column: the column concerned, or "".
        problem: what is wrong.
        fix: what to do about it.
    """

    severity: str
    line: int
    column: str
    problem: str
    fix: str = ""

    def format(self, path: PathLike) -> str:
        where = f"{os.fspath(path)}:{self.line}" if self.line else os.fspath(path)
        column = f" [{self.column}]" if self.column else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{where}: {self.severity}{column}: {self.problem}.{fix}"


@dataclass
class Manifest:
    """A parsed manifest: its cases, its kind and where its paths point.

    Attributes:
        path: the manifest file.
        data_root: the folder image paths are relative to.
        kind: ``paired``, ``unpaired`` or ``single``.
        columns: the header as written.
        cases: one record per valid row, in file order.
        rejected: rows with errors that could still be read into a record (their images are still
            checked by validation, so one run reports every problem); never used for training.
    """

    path: Path
    data_root: Path
    kind: str
    columns: List[str]
    cases: List[CaseRecord]
    rejected: List[CaseRecord] = field(default_factory=list)

    def split(self, name: str) -> List[CaseRecord]:
        """The cases of one split (``train``, ``val`` or ``test``)."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return [case for case in self.cases if case.split == name]

    def to_dicts(self, split: Optional[str] = None) -> List[Dict[str, object]]:
        """Rows as MONAI-dataset dicts (see :meth:`CaseRecord.to_dict`), optionally of one split."""
        cases = self.cases if split is None else self.split(split)
        return [case.to_dict() for case in cases]

    def to_dataframe(self):  # -> pandas.DataFrame; pandas is imported only here
        """The cases as a ``pandas.DataFrame`` with absolute paths, one row per case."""
        import pandas as pd

        return pd.DataFrame(self.to_dicts())


def default_data_root(manifest_path: PathLike) -> Path:
    """The data root used when none is given: the manifest's folder."""
    return Path(manifest_path).resolve().parent


def decode_manifest(raw: bytes) -> Tuple[str, List[Issue]]:
    """Decode manifest bytes as UTF-8 (a BOM is allowed); bad bytes are reported by line and replaced."""
    issues: List[Issue] = []
    try:
        return raw.decode("utf-8-sig"), issues
    except UnicodeDecodeError:
        pass
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            issues.append(Issue("error", number, "", f"not UTF-8 text (byte 0x{line[err.start]:02x} at "
                                f"character {err.start + 1})",
                                "save the manifest as UTF-8 (e.g. 'iconv -f latin1 -t utf-8 in.csv > out.csv')"))
    return raw.decode("utf-8-sig", errors="replace"), issues


def resolve_image(text: str, data_root: Path, column: str, line: int,
                  issues: List[Issue]) -> Optional[ImageRef]:
    """Turn a manifest cell into an :class:`ImageRef` under ``data_root``; report traversal and bad paths.

    The check is lexical first (``..`` leaving the root, absolute paths elsewhere) and then on the
    real path, so a symlink pointing out of the data root is refused as well.
    """
    cell = text.strip()
    series: Optional[str] = None
    if SERIES_SEPARATOR in cell:
        cell, series = cell.split(SERIES_SEPARATOR, 1)
        series = series.strip()
        if not series:
            issues.append(Issue("error", line, column, f"empty series selector after '{SERIES_SEPARATOR}' in {text!r}",
                                "write FOLDER::SeriesInstanceUID or FOLDER::SeriesNumber, or drop the '::'"))
            return None
    if not cell:
        issues.append(Issue("error", line, column, "empty path", "fill in the image path relative to the data root"))
        return None
    root = data_root.resolve()
    raw = Path(cell)
    candidate = Path(os.path.normpath(raw if raw.is_absolute() else root / raw))
    if not _is_within(candidate, root):
        what = "absolute path outside the data root" if raw.is_absolute() else "path leaves the data root ('..')"
        issues.append(Issue("error", line, column, f"{what}: {text!r} resolves to {candidate}, not under {root}",
                            "write paths relative to the data root, or pass --data-root for the folder that "
                            "holds the images"))
        return None
    if raw.is_absolute():
        issues.append(Issue("warning", line, column, f"absolute path {text!r}",
                            "write it relative to the data root so the manifest works on other machines"))
    if candidate.exists() and not _is_within(candidate.resolve(), root):
        issues.append(Issue("error", line, column, f"{text!r} is a link to {candidate.resolve()}, outside the "
                            f"data root {root}", "copy the image under the data root or choose another data root"))
        return None
    return ImageRef(text=text.strip(), path=candidate, series=series)


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def parse_manifest(path: PathLike, data_root: Optional[PathLike] = None) -> Tuple[Manifest, List[Issue]]:
    """Read a manifest and run every check that needs no image: columns, values, ids, splits, paths.

    Every problem is collected (nothing stops at the first one); rows with errors are left out of
    ``Manifest.cases``.

    Args:
        path: the CSV file.
        data_root: the folder image paths are relative to; default: the manifest's folder.

    Returns:
        ``(manifest, issues)``.

    Raises:
        ManifestError: the file does not exist or cannot be read at all.
    """
    path = Path(path)
    root = default_data_root(path) if data_root is None else Path(data_root).resolve()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError("manifest file not found", path, "check the path") from None
    except IsADirectoryError:
        raise ManifestError("is a folder, not a manifest CSV file", path,
                            "pass the CSV file (or build one with 'medgan manifest scan')") from None
    except OSError as err:
        raise ManifestError(f"cannot read the manifest ({err.strerror})", path, "check its permissions") from None
    text, issues = decode_manifest(raw)
    manifest = Manifest(path=path, data_root=root, kind=SINGLE, columns=[], cases=[])
    if not root.is_dir():
        issues.append(Issue("error", 0, "", f"data root {root} is not a folder",
                            "pass --data-root with the folder the manifest's paths are relative to"))
    rows = list(csv.reader(io.StringIO(text, newline="")))
    line_numbers = _row_lines(text)
    if not rows or not any(cell.strip() for cell in rows[0]):
        issues.append(Issue("error", 1, "", "empty manifest: no header row",
                            f"the first line must name the columns, at least {', '.join(REQUIRED_COLUMNS)}"))
        return manifest, issues
    header = [cell.strip() for cell in rows[0]]
    manifest.columns = header
    _check_header(header, issues)
    manifest.kind = PAIRED if TARGET in header else (UNPAIRED if DOMAIN in header else SINGLE)
    if not root.is_dir() or any(i.severity == "error" and i.line == 1 for i in issues):
        return manifest, issues
    if len(rows) == 1:
        issues.append(Issue("error", 0, "", "the manifest has a header but no cases", "add one row per case"))
    undecodable = {issue.line for issue in issues if issue.line}
    seen_cases: Dict[str, int] = {}
    patient_splits: Dict[str, Dict[str, int]] = {}
    for index, row in enumerate(rows[1:], start=1):
        line = line_numbers[index] if index < len(line_numbers) else index + 1
        if not any(cell.strip() for cell in row):
            continue
        errors_before = _count_errors(issues)
        record = _parse_row(header, row, line, manifest.kind, root, issues)
        case_id = row[header.index(CASE_ID)].strip() if len(row) > header.index(CASE_ID) else ""
        if case_id in seen_cases:
            issues.append(Issue("error", line, CASE_ID, f"duplicate case id {case_id!r} (first on line "
                                f"{seen_cases[case_id]})", "give every row its own case_id"))
        elif case_id:
            seen_cases[case_id] = line
        if record is None:
            continue
        if _count_errors(issues) > errors_before or line in undecodable:
            manifest.rejected.append(record)
            continue
        patient_splits.setdefault(record.patient_id, {}).setdefault(record.split, line)
        manifest.cases.append(record)
    for patient, splits in patient_splits.items():
        if len(splits) > 1:
            where = ", ".join(f"{split} (line {line})" for split, line in sorted(splits.items(), key=lambda kv: kv[1]))
            issues.append(Issue("error", max(splits.values()), PATIENT_ID,
                                f"patient {patient!r} is in several splits: {where}",
                                "put every case of one patient in the same split, or the test set leaks into training"))
    _check_split_coverage(manifest, issues)
    return manifest, issues


def _count_errors(issues: Sequence[Issue]) -> int:
    return sum(1 for issue in issues if issue.severity == "error")


def _row_lines(text: str) -> List[int]:
    """The file line on which each CSV record starts (records may span lines inside quotes)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    starts, previous_end = [], 0
    for _ in reader:
        starts.append(previous_end + 1)
        previous_end = reader.line_num
    return starts


def _check_header(header: Sequence[str], issues: List[Issue]) -> None:
    for column in REQUIRED_COLUMNS:
        if column not in header:
            issues.append(Issue("error", 1, column, f"missing required column {column!r} (header: {', '.join(header)})",
                                f"add the column; required: {', '.join(REQUIRED_COLUMNS)}"))
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        issues.append(Issue("error", 1, "", f"duplicated column name(s): {', '.join(duplicated)}",
                            "give every column a distinct name"))
    if "" in header:
        issues.append(Issue("error", 1, "", f"column {header.index('') + 1} has no name",
                            "name every column or remove the empty one"))
    if TARGET in header and DOMAIN in header:
        issues.append(Issue("error", 1, "", "both 'target' and 'domain' columns: a manifest is either paired "
                            "(target) or unpaired (domain)", "remove one of the two columns"))
    if TARGET_MODALITY in header and TARGET not in header:
        issues.append(Issue("warning", 1, TARGET_MODALITY, "target_modality without a target column",
                            "remove it or add the target images"))


def _parse_row(header: Sequence[str], row: Sequence[str], line: int, kind: str, root: Path,
               issues: List[Issue]) -> Optional[CaseRecord]:
    """The row as a record, or None when it cannot be read at all (wrong field count, no usable source)."""
    if len(row) != len(header):
        issues.append(Issue("error", line, "", f"{len(row)} fields but the header has {len(header)}",
                            "quote fields that contain commas and give every row one field per column"))
        return None
    cells = {name: value.strip() for name, value in zip(header, row)}
    for column in (CASE_ID, PATIENT_ID, SPLIT, SOURCE) + ((TARGET,) if kind == PAIRED else ()) + (
            (DOMAIN,) if kind == UNPAIRED else ()):
        if not cells.get(column):
            issues.append(Issue("error", line, column, f"empty {column}", f"fill in the {column} of this case"))
    split = cells.get(SPLIT, "")
    if split and split not in SPLITS:
        issues.append(Issue("error", line, SPLIT, f"unknown split {split!r}", f"use one of {', '.join(SPLITS)}"))
    modalities: Dict[str, Optional[str]] = {}
    for column in (SOURCE_MODALITY, TARGET_MODALITY):
        value = cells.get(column, "").upper() or None
        if value is not None and value not in MODALITIES:
            issues.append(Issue("error", line, column, f"unknown modality {cells[column]!r}",
                                f"use one of {', '.join(MODALITIES)} or leave it empty"))
        modalities[column] = value
    domain = cells.get(DOMAIN, "").lower() or None
    if domain in DOMAIN_MODALITY and modalities[SOURCE_MODALITY] not in (None, DOMAIN_MODALITY[domain]):
        issues.append(Issue("error", line, SOURCE_MODALITY, f"domain {domain!r} but source_modality "
                            f"{modalities[SOURCE_MODALITY]}", "make the two agree"))
    refs: Dict[str, Optional[ImageRef]] = {}
    for column in (SOURCE, TARGET, MASK):
        if cells.get(column):
            refs[column] = resolve_image(cells[column], root, column, line, issues)
    if refs.get(SOURCE) is None:
        for column, ref in refs.items():
            if ref is not None and not ref.path.exists():
                issues.append(Issue("error", line, column, f"{ref.text!r} not found ({ref.path})",
                                    "check the path and the data root"))
        return None
    metadata = {name: value for name, value in cells.items() if name not in KNOWN_COLUMNS and value}
    return CaseRecord(case_id=cells[CASE_ID], patient_id=cells[PATIENT_ID], source=refs[SOURCE],  # type: ignore[arg-type]
                      split=split, target=refs.get(TARGET), domain=domain, mask=refs.get(MASK),
                      source_modality=_modality(modalities[SOURCE_MODALITY]) or DOMAIN_MODALITY.get(domain or ""),
                      target_modality=_modality(modalities[TARGET_MODALITY]), metadata=metadata, line=line)


def _modality(value: Optional[str]) -> Optional[str]:
    return value if value in MODALITIES else None


def _check_split_coverage(manifest: Manifest, issues: List[Issue]) -> None:
    if not manifest.cases:
        return
    if not manifest.split("train"):
        issues.append(Issue("warning", 0, SPLIT, "no training cases", "fine for inference; training needs train rows"))
    if manifest.kind == UNPAIRED:
        domains = sorted({case.domain for case in manifest.cases if case.domain})
        if len(domains) < 2:
            issues.append(Issue("warning", 0, DOMAIN, f"only one domain ({', '.join(domains)}); unpaired training "
                                "needs images of both domains", "add rows of the other domain"))
        elif len(domains) > 2:
            issues.append(Issue("error", 0, DOMAIN, f"{len(domains)} domains ({', '.join(domains)}); unpaired "
                                "translation has exactly two", "use two domain values, e.g. 'mr' and 'ct'"))


def raise_for_errors(path: PathLike, issues: Sequence[Issue]) -> None:
    """Raise one :class:`ManifestError` listing every error in ``issues`` (warnings are ignored)."""
    errors = [issue for issue in issues if issue.severity == "error"]
    if errors:
        listing = "\n".join("  " + issue.format(path) for issue in errors)
        raise ManifestError(f"{len(errors)} error(s) in the manifest:\n{listing}", path,
                            "correct the rows listed above ('medgan manifest validate' checks the images too)")


def load_manifest(path: PathLike, data_root: Optional[PathLike] = None, check_exists: bool = True) -> Manifest:
    """Load a manifest for a training or batch run; refuse it with every structural error listed.

    Images are not opened (run :func:`medgan.manifest.validate_manifest` for that), but with
    ``check_exists`` every referenced file or folder must exist.

    Args:
        path: the CSV file.
        data_root: the folder image paths are relative to; default: the manifest's folder.
        check_exists: also require every referenced image to exist.

    Returns:
        The :class:`Manifest` with one :class:`CaseRecord` per row.

    Raises:
        ManifestError: any error, all of them listed with their lines.
    """
    manifest, issues = parse_manifest(path, data_root)
    if check_exists:
        issues.extend(missing_file_issues(manifest))
    raise_for_errors(path, issues)
    return manifest


def missing_file_issues(manifest: Manifest) -> List[Issue]:
    """An error for every referenced image that does not exist."""
    issues = []
    for case in manifest.cases:
        for column, ref in case.images():
            if not ref.path.exists():
                issues.append(Issue("error", case.line, column, f"{ref.text!r} not found ({ref.path})",
                                    "check the path and the data root"))
    return issues
