"""``medgan manifest validate FILE [--data-root DIR]`` and ``medgan manifest scan DIR -o FILE``."""

from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("manifest", help="check or build a data manifest (CSV of cases)",
                                   description="Data manifests: see data_manifests/SCHEMA.md.")
    sub = parser.add_subparsers(dest="manifest_command", metavar="SUBCOMMAND", required=True)

    validate = sub.add_parser("validate", help="report every problem of a manifest and its images",
                              description="Check columns, ids, splits, paths, and every image (readable, modality, "
                                          "pair overlap, mask grid). Exits non-zero on any error.")
    validate.add_argument("manifest", metavar="FILE", help="manifest CSV")
    validate.add_argument("--data-root", metavar="DIR", default=None,
                          help="folder the image paths are relative to (default: the manifest's folder)")
    validate.add_argument("--no-images", action="store_true", help="check the text only, open no image")
    validate.set_defaults(func=_validate)

    scan = sub.add_parser("scan", help="build a manifest from a folder of NIfTI files / DICOM series",
                          description="One row per volume; DICOM PatientIDs are hashed; splits are assigned "
                                      "deterministically by patient. Paths are relative to DIR.")
    scan.add_argument("folder", metavar="DIR", help="folder to scan (recursively); it is the data root")
    scan.add_argument("-o", "--output", metavar="FILE", required=True, help="manifest CSV to write")
    scan.add_argument("--unpaired", action="store_true",
                      help="add a domain column (ct/mr from the detected modality) for unpaired training")
    scan.add_argument("--train-fraction", type=float, default=0.8, help="fraction of patients in train")
    scan.add_argument("--val-fraction", type=float, default=0.1, help="fraction of patients in val (rest: test)")
    scan.add_argument("--salt", default="", help="secret prepended to DICOM PatientIDs before hashing")
    scan.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    scan.set_defaults(func=_scan)


def _validate(args: argparse.Namespace) -> int:
    from medgan.manifest import validate_manifest

    report = validate_manifest(args.manifest, args.data_root, check_images=not args.no_images)
    stream = sys.stdout if report.ok else sys.stderr
    print(report.format(), file=stream)
    return 0 if report.ok else 2


def _scan(args: argparse.Namespace) -> int:
    from collections import Counter

    from medgan.manifest import scan_folder, write_manifest

    rows = scan_folder(args.folder, salt=args.salt, fractions=(args.train_fraction, args.val_fraction),
                       with_domain=args.unpaired)
    path = write_manifest(rows, args.output, overwrite=args.overwrite)
    splits = Counter(row["split"] for row in rows)
    modalities = Counter(row["source_modality"] or "unknown" for row in rows)
    print(f"wrote {path}: {len(rows)} cases, {len({row['patient_id'] for row in rows})} patients; "
          + ", ".join(f"{k} {v}" for k, v in sorted(splits.items())) + "; "
          + ", ".join(f"{k} {v}" for k, v in sorted(modalities.items())))
    print(f"check it with: medgan manifest validate {path} --data-root {args.folder}")
    return 0
