"""``medgan evaluate``: metrics of one prediction, or of a results folder against a manifest."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# Kept here (not imported from medgan.metrics) so ``--help`` needs no numpy/scipy import.
_PROFILE_NAMES = ("synthrad2023", "synthrad2025", "ldct-chest", "ldct-abdomen", "ldct-neuro", "raw")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command."""
    parser = subparsers.add_parser(
        "evaluate", help="metrics of predictions under a community metric profile",
        description="Compare a prediction with its reference under a named metric convention "
                    "(docs/metrics.md). Single case: --pred P --target T [--json out.json]. "
                    "Batch: --results DIR --manifest CSV -o per_case.csv (a summary JSON is written beside it).")
    parser.add_argument("--profile", choices=_PROFILE_NAMES, default="synthrad2023",
                        help="metric convention (default: synthrad2023)")
    parser.add_argument("--mask", default=None,
                        help="'auto' (body mask of the target), 'none', a mask file, or in batch mode 'manifest' "
                             "(its mask column); default: auto for masked profiles, none for ldct-*")
    single = parser.add_argument_group("one case")
    single.add_argument("--pred", type=Path, help="prediction (NIfTI file or DICOM folder)")
    single.add_argument("--target", type=Path, help="reference on the same grid")
    single.add_argument("--json", type=Path, default=None, help="also write the metrics to this JSON file")
    batch = parser.add_argument_group("a results folder")
    batch.add_argument("--results", type=Path, help="folder of predictions named <case_id>.nii.gz")
    batch.add_argument("--manifest", type=Path, help="manifest CSV naming each case's reference")
    batch.add_argument("--data-root", type=Path, default=None, help="root of the manifest's paths (default: its folder)")
    batch.add_argument("--split", choices=("train", "val", "test"), default=None, help="only this split")
    batch.add_argument("-o", "--output", type=Path, help="per-case CSV to write")
    batch.add_argument("--summary", type=Path, default=None,
                       help="summary JSON (default: the per-case CSV's name with .summary.json)")
    parser.set_defaults(func=_evaluate, _parser=parser)


def _default_mask(profile: str) -> str:
    return "none" if profile.startswith("ldct-") else "auto"


def _evaluate(args: argparse.Namespace) -> int:
    single = args.pred is not None or args.target is not None
    batch = args.results is not None or args.manifest is not None
    if single == batch:
        args._parser.error("give either --pred and --target, or --results, --manifest and -o")
    mask = args.mask or _default_mask(args.profile)
    if single:
        if args.pred is None or args.target is None:
            args._parser.error("--pred and --target go together")
        if mask == "manifest":
            args._parser.error("--mask manifest needs --manifest")
        return _evaluate_one(args, mask)
    if args.results is None or args.manifest is None or args.output is None:
        args._parser.error("batch mode needs --results, --manifest and -o")
    return _evaluate_folder(args, mask)


def _evaluate_one(args: argparse.Namespace, mask: str) -> int:
    from medgan.metrics.evaluation import _json_safe, evaluate_files, write_json

    values = evaluate_files(args.pred, args.target, profile=args.profile, mask=mask)
    record = {"profile": args.profile, "prediction": str(args.pred), "target": str(args.target), "mask": mask,
              "metrics": values}
    print(json.dumps(_json_safe(record), indent=2))
    if args.json is not None:
        write_json(record, args.json)
        logger.info("wrote %s", args.json)
    return 0


def _evaluate_folder(args: argparse.Namespace, mask: str) -> int:
    from medgan.metrics.evaluation import evaluate_results_folder, summarize, write_json, write_per_case_csv

    rows = evaluate_results_folder(args.results, args.manifest, profile=args.profile, mask=mask, split=args.split,
                                   data_root=args.data_root)
    summary = summarize(rows, args.profile)
    summary.update(results=str(args.results), manifest=str(args.manifest), mask=mask, split=args.split)
    summary_path = args.summary or args.output.with_name(args.output.name.rsplit(".", 1)[0] + ".summary.json")
    write_per_case_csv(rows, args.output)
    write_json(summary, summary_path)
    for key, stats in summary["metrics"].items():
        if "mean" in stats:
            print(f"{key}: {stats['mean']:.4f} +- {stats['sd']:.4f} (n={stats['n']})")
    logger.info("wrote %s and %s", args.output, summary_path)
    return 0
