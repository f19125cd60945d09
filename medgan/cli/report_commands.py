"""``medgan report``: a self-contained HTML report (pictures, metrics, safety, provenance) of a results folder."""

from __future__ import annotations

import argparse
from pathlib import Path

# Kept here (not imported) so ``--help`` needs no numpy/matplotlib import.
_TASKS = ("ct_lowdose_denoising", "ct_super_resolution", "ct_kernel_conversion", "mr_synthetic_ct")
_PROFILE_NAMES = ("synthrad2023", "synthrad2025", "ldct-chest", "ldct-abdomen", "ldct-neuro", "raw")
_VIEWS = ("axial", "coronal", "sagittal")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` command."""
    parser = subparsers.add_parser(
        "report", help="HTML report with pictures, metric, safety and provenance tables",
        description="Write one self-contained HTML page (no external files, no JavaScript) for a results "
                    "folder laid out as in docs/results_layout.md.")
    parser.add_argument("results_dir", type=Path, metavar="RESULTS_DIR", help="folder written by medgan run")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the HTML file to write")
    parser.add_argument("--task", choices=_TASKS, default=None,
                        help="chooses the CT window and difference range (default: from the sidecars)")
    parser.add_argument("--window", default=None,
                        help="CT window: soft_tissue, brain, bone, lung, wide or W<width>/L<level> (e.g. W80/L40)")
    parser.add_argument("--profile", choices=_PROFILE_NAMES, default="raw",
                        help="metric profile when no evaluation.csv is present (default: raw)")
    parser.add_argument("--views", nargs="+", choices=_VIEWS, default=list(_VIEWS), help="montage rows")
    parser.add_argument("--centre", default="body",
                        help="'body', 'lesion' or 'X,Y,Z' in RAS mm: the point every view passes through")
    parser.add_argument("--max-cases", type=int, default=None, help="pictures for the first N cases only")
    parser.add_argument("--title", default=None, help="page title")
    parser.set_defaults(func=_report)


def _parse_centre(text: str):
    if text in ("body", "lesion"):
        return text
    from medgan.errors import MedganError

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise MedganError(f"--centre {text!r} is not body, lesion or X,Y,Z", fix="e.g. --centre 0,-20,35.5")
    return values


def _report(args: argparse.Namespace) -> int:
    from medgan.report.html import build_report

    out = build_report(args.results_dir, args.output, task=args.task, profile=args.profile, window=args.window,
                       views=args.views, centre=_parse_centre(args.centre), max_cases=args.max_cases,
                       title=args.title)
    print(out)
    return 0
