"""``medgan run``: a bundle over one input or a manifest (see ``docs/running.md``)."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any, Dict, Sequence

logger = logging.getLogger(__name__)

FORMATS = ("nifti", "dicom")


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run", help="run a bundle on a volume or a manifest of volumes",
        description="Run a bundle on a NIfTI file or DICOM series (--input) or on every case of a manifest "
                    "(--manifest). Writes RESULTS/<case_id>/pred.nii.gz (HU, int16), a derived DICOM series "
                    "when the input is DICOM or --reference is given, the sidecar pred.json, and summary.csv. "
                    "A rerun skips finished cases. Under torchrun --nproc_per_node=N the cases are shared "
                    "among the processes.")
    run.add_argument("bundle", metavar="BUNDLE", help="a shipped bundle's name (bundles/<name>) or a bundle folder")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="PATH", help="a NIfTI file or a DICOM series folder")
    source.add_argument("--manifest", metavar="CSV", help="a manifest (data_manifests/SCHEMA.md); its source column is run")
    run.add_argument("--data-root", metavar="DIR", help="folder the manifest's paths are relative to "
                     "(default: the manifest's folder)")
    run.add_argument("--series", metavar="UID|NUMBER", help="--input only: the DICOM series when the folder holds several")
    run.add_argument("-o", "--output-dir", required=True, metavar="DIR", help="results folder (docs/results_layout.md)")
    run.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default auto)")
    run.add_argument("--format", default=None, metavar="LIST",
                     help="nifti or nifti,dicom (default: NIfTI always, DICOM when the input is DICOM or "
                          "--reference is given; asking for dicom makes it required)")
    run.add_argument("--reference", metavar="DICOM_DIR",
                     help="DICOM series whose study and frame of reference the derived series joins")
    run.add_argument("--force", action="store_true",
                     help="run inputs outside the bundle's contract (the flags are written into each sidecar)")
    run.add_argument("--trust-bundle", action="store_true",
                     help="run a bundle from outside the trusted folders (its configs run Python code: review them)")
    run.add_argument("--overwrite", action="store_true", help="redo cases that are already finished")
    run.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                     help="set a setting of the bundle's inference.yaml (repeatable; VALUE is JSON, else a string), "
                          "e.g. --override sw_overlap=0.5; recorded in each sidecar, and cases made with other "
                          "overrides are redone")
    run.add_argument("--uncertainty", action="store_true",
                     help="average 4 in-plane test-time flips and write their per-voxel SD (HU) as "
                          "uncertainty.nii.gz, with a score in the sidecar (4x the inference time)")
    run.set_defaults(func=_run)


def _write_dicom(text: str | None) -> bool | None:
    from medgan.errors import MedganError

    if text is None:
        return None
    asked = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = asked - set(FORMATS)
    if unknown or "nifti" not in asked:
        raise MedganError(f"unknown or incomplete --format {text!r}",
                          fix="use nifti or nifti,dicom (the NIfTI is always written: the results layout needs it)")
    return "dicom" in asked


def parse_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """``["sw_overlap=0.5", "cpu_precision=bf16"]`` -> ``{"sw_overlap": 0.5, "cpu_precision": "bf16"}``.

    Raises:
        MedganError: an item without ``=`` or with an empty key.
    """
    from medgan.errors import MedganError

    overrides: Dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise MedganError(f"--override {item!r} is not KEY=VALUE", fix="write it as e.g. --override sw_overlap=0.5")
        try:
            overrides[key.strip()] = json.loads(text)
        except ValueError:
            overrides[key.strip()] = text
    return overrides


def _run(args: argparse.Namespace) -> int:
    from medgan.bundle.loading import open_bundle
    from medgan.bundle.runner import (STATUS_FAILED, cases_from_input, cases_from_manifest, distributed_context,
                                      rank_device, run_bundle)
    from medgan.errors import MedganError

    write_dicom = _write_dicom(args.format)
    if args.data_root and not args.manifest:
        raise MedganError("--data-root goes with --manifest", fix="drop --data-root, or pass --manifest")
    if args.series and not args.input:
        raise MedganError("--series goes with --input", fix="select series in the manifest as path::series")
    if args.input:
        cases = cases_from_input(args.input, series=args.series)
    else:
        cases = cases_from_manifest(args.manifest, args.data_root)
    context = distributed_context()
    bundle = open_bundle(args.bundle, device=rank_device(args.device, context), allow_untrusted=args.trust_bundle,
                         overrides=parse_overrides(args.override))
    results = run_bundle(bundle, cases, args.output_dir, write_dicom=write_dicom, reference=args.reference,
                         force=args.force, overwrite=args.overwrite, context=context, debug=args.debug,
                         uncertainty=args.uncertainty)
    failed = [r for r in results if r.status == STATUS_FAILED]
    counts = {status: sum(r.status == status for r in results) for status in ("ok", "skipped", "failed")}
    if context.rank == 0:
        print(f"medgan run {bundle.name} v{bundle.version}: {counts['ok']} done, {counts['skipped']} already done, "
              f"{counts['failed']} failed -> {args.output_dir}/summary.csv")
        for result in failed:
            print(f"  FAILED {result.case_id}: {result.message}")
    return 1 if failed else 0
