"""``medgan series`` and ``medgan convert``: list DICOM series, convert them to NIfTI.

Both stay free of torch/MONAI imports so they start quickly on a folder of DICOM files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

logger = logging.getLogger(__name__)

_COLUMNS = ("#", "uid", "modality", "description", "kernel", "slices", "thick_mm", "pixel_mm", "step_mm", "tilt_deg",
            "transfer_syntax", "usable", "note")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``series`` and ``convert`` commands."""
    series = subparsers.add_parser("series", help="list the DICOM series under a folder",
                                   description="List every DICOM series under DIR (recursively, DICOMDIR or not): "
                                               "UID, number, modality, description, kernel, slices, thickness, "
                                               "spacing, tilt, transfer syntax, and whether it is a usable volume.")
    series.add_argument("dir", type=Path, help="folder (or file) to scan")
    series.add_argument("--json", action="store_true", help="print JSON instead of a table")
    series.add_argument("--show-skipped", action="store_true", help="also list files that are not DICOM images")
    series.set_defaults(func=_series)

    convert = subparsers.add_parser("convert", help="convert a DICOM series to NIfTI",
                                    description="Convert one DICOM series to NIfTI (DST.nii.gz), or with --all every "
                                                "image volume into DST/ with DST/index.json mapping each "
                                                "SeriesInstanceUID to its file.")
    convert.add_argument("src", type=Path, help="DICOM folder or file")
    convert.add_argument("dst", type=Path, help="output .nii/.nii.gz (or a folder with --all)")
    convert.add_argument("--series", default=None, help="SeriesInstanceUID or SeriesNumber to convert")
    convert.add_argument("--all", action="store_true", help="convert every usable image volume into the folder DST")
    convert.add_argument("--tilt", choices=("resample", "shear"), default="resample",
                         help="gantry tilt: resample onto an orthogonal grid (default) or keep it as a sheared affine")
    convert.add_argument("--resample-uneven", action="store_true",
                         help="resample uneven slice spacing (gaps) onto even spacing instead of refusing the series")
    convert.add_argument("--slice-spacing-mm", type=float, default=None,
                         help="output slice spacing when resampling (default: the typical input step)")
    convert.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    convert.set_defaults(func=_convert)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, (tuple, list)):
        return "x".join(_fmt(v, digits) for v in value)
    return str(value)


def _series(args: argparse.Namespace) -> int:
    from medgan.io.dicom import scan_series

    found, skipped = scan_series(args.dir)
    if args.json:
        payload: Dict[str, Any] = {"series": [s.summary() for s in found]}
        if args.show_skipped:
            payload["skipped_files"] = [{"path": f.path, "reason": f.reason} for f in skipped]
        print(json.dumps(payload, indent=2))
        return _series_problems(args.dir, found, skipped)
    rows = [[_fmt(s.series_number), s.key, s.modality, s.description, s.kernel, str(s.n_slices),
             _fmt(s.slice_thickness_mm), _fmt(s.pixel_spacing_mm), _fmt(s.slice_spacing_mm, 4), _fmt(s.tilt_deg),
             s.transfer_syntax, "yes" if s.usable else "no", s.reason] for s in found]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(_COLUMNS)]
    print("  ".join(h.ljust(w) for h, w in zip(_COLUMNS, widths)).rstrip())
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    print(f"{len(found)} series, {sum(s.usable for s in found)} usable volume(s); "
          f"{len(skipped)} other file(s) skipped" + ("" if args.show_skipped or not skipped else " (--show-skipped)"))
    if args.show_skipped:
        for item in skipped:
            print(f"  skipped {item.path}: {item.reason}")
    return _series_problems(args.dir, found, skipped)


def _series_problems(root: Path, found: List[Any], skipped: List[Any]) -> int:
    """Report on stderr what `convert` would refuse; 1 when there is any, 0 when all is clean.

    Raises:
        DicomSeriesError: no usable image volume at all (with the reasons).
    """
    from medgan.errors import DicomSeriesError
    from medgan.io.dicom.discovery import VOLUME_SOP_CLASSES

    images = [s for s in found if s.sop_class in VOLUME_SOP_CLASSES.values() or not s.sop_class]
    problems = [f"{s.folder}: series {s.key}: {s.reason}. Fix: {s.fix or 'see `medgan series`'}" for s in images if not s.usable or s.fix]
    problems += [f"{item.path}: {item.reason}" for item in skipped if item.damaged]
    if not any(s.usable for s in found):
        detail = "".join(f"\n  {line}" for line in problems) or (
            f" ({len(found)} non-image series, {len(skipped)} other file(s); --show-skipped lists them)")
        raise DicomSeriesError("no usable image volume found" + detail, root,
                               "point at a folder that holds a CT or MR image series, or fix the problems above")
    for line in problems:
        print(f"medgan series: problem: {line}", file=sys.stderr)
    return 1 if problems else 0


def _is_nifti_name(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


def _stream_friendly_numpy() -> None:
    """Ask NumPy (if not imported yet) not to request transparent huge pages for large arrays.

    A conversion fills one large array once and writes it out; with huge pages requested, the
    kernel may compact memory synchronously on first touch, which measured here as 0.1-0.7 s of
    system time on a busy machine (more than the whole read). NumPy documents this switch
    (``NUMPY_MADVISE_HUGEPAGE``); a value set by the user wins.
    """
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")


def _convert(args: argparse.Namespace) -> int:
    _stream_friendly_numpy()
    from medgan.errors import DicomSeriesError, MedganError, OutputError
    from medgan.io.dicom import read_dicom_volume, scan_series, select_series
    from medgan.io.dicom.discovery import describe_skipped

    options = {"tilt": args.tilt, "resample_uneven": args.resample_uneven, "slice_spacing_mm": args.slice_spacing_mm}
    if not args.all:
        if not _is_nifti_name(args.dst):
            raise OutputError("the output must be a .nii or .nii.gz file", args.dst,
                              "name the output like out.nii.gz, or pass --all to convert every series into a folder")
        volume = read_dicom_volume(args.src, series=args.series, **options)
        _write(volume, args.dst, args.overwrite)
        _report(volume, args.dst)
        return 0
    if args.series is not None:
        raise DicomSeriesError("--series and --all exclude each other", args.src, "pass one of them")
    if _is_nifti_name(args.dst):
        raise OutputError("with --all the output is a folder", args.dst, "give a folder name without .nii/.nii.gz")
    found, skipped = scan_series(args.src)
    if not found:
        raise DicomSeriesError("no DICOM series found" + describe_skipped(skipped), args.src,
                               "point at the folder that holds the DICOM images (see `medgan series --show-skipped`)")
    usable = [s for s in found if s.usable]
    if not usable:
        select_series(found, args.src)  # raises, saying why nothing is usable
    from medgan.io.dicom.sidecar import sidecar_path
    from medgan.utils.atomic import atomic_directory, atomic_path

    index: Dict[str, Any] = {"source": os.fspath(args.src), "series": {}, "failed": {}, "skipped": {}}
    for info in found:
        if not info.usable:
            index["skipped"][info.key] = info.reason
    failures: List[MedganError] = []
    with atomic_directory(args.dst, overwrite=args.overwrite) as tmp:
        names: List[str] = []
        for info in usable:
            name = _file_name(info.series_number, info.description, names)
            try:
                volume = read_dicom_volume(args.src, series=info.key, scanned=found, **options)
            except MedganError as err:
                failures.append(err)
                index["failed"][info.key] = err.problem
                continue
            _write(volume, tmp / name, overwrite=True)
            _report(volume, args.dst / name)
            index["series"][info.key] = {"file": name, "sidecar": sidecar_path(name).name, "series_number": info.series_number,
                                         "description": info.description, "shape": list(volume.array.shape),
                                         "tilt_handling": volume.meta["tilt_handling"],
                                         "spacing_handling": volume.meta["spacing_handling"]}
        if not index["series"]:  # nothing converted: leave no folder behind
            raise DicomSeriesError(f"none of the {len(usable)} image volume(s) could be converted:"
                                   + "".join(f"\n  {err}" for err in failures), args.src,
                                   "fix the problems above (each names its files and a fix)")
        with atomic_path(tmp / "index.json") as index_tmp:
            index_tmp.write_text(json.dumps(index, indent=2))
    for err in failures:
        print(f"medgan convert: series not converted: {err}", file=sys.stderr)
    print(f"wrote {len(index['series'])} volume(s) and {args.dst / 'index.json'}"
          + (f"; {len(index['failed'])} failed (see index.json)" if index["failed"] else ""))
    return 1 if index["failed"] else 0


def _file_name(number: Optional[int], description: str, taken: List[str]) -> str:
    """``<number>_<description>.nii.gz`` with unsafe characters replaced; unique within ``taken``."""
    safe = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in description).strip("_.")[:40]
    stem = "_".join(part for part in (f"{number:03d}" if number is not None else "series", safe) if part)
    name, counter = f"{stem}.nii.gz", 1
    while name in taken:
        counter += 1
        name = f"{stem}_{counter}.nii.gz"
    taken.append(name)
    return name


def _report(volume: Any, path: Path) -> None:
    meta = volume.meta
    print(f"{path}: series {meta['SeriesNumber']} ({meta['Modality']}) {volume.array.shape} {volume.array.dtype}, "
          f"spacing {'x'.join(f'{v:.4g}' for v in meta['spacing_mm'])} mm, tilt {meta['tilt_handling']}, "
          f"slice spacing {meta['spacing_handling']}")


def _write(volume: Any, path: Path, overwrite: bool) -> None:
    """Write ``volume`` as NIfTI-1 (sform; qform too unless the affine is sheared) and its JSON
    sidecar (:mod:`medgan.io.dicom.sidecar`: Modality, kernel...), each atomically.

    This uses :func:`medgan.io.dicom.nifti_out.write_volume_nifti` rather than
    :func:`medgan.io.nifti.write_nifti`: the latter imports nibabel (about 0.2 s of CPU, as much as
    reading a 300-slice series) and copies the voxels into C order before writing; the header
    conventions are the same.
    """
    from medgan.io.dicom.nifti_out import write_volume_nifti

    from medgan.errors import OutputError
    from medgan.io.dicom.sidecar import sidecar_path, write_sidecar

    if not overwrite and sidecar_path(path).exists():
        raise OutputError("the JSON sidecar of the output already exists", sidecar_path(path),
                          "choose another output name, or pass --overwrite")
    write_volume_nifti(volume.array, volume.affine, path, description=f"medgan {volume.meta['tilt_handling']}",
                       overwrite=overwrite)
    write_sidecar(volume.meta, path, overwrite=True)
