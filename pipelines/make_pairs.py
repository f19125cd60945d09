"""Turn a manifest of real CTs into a paired training manifest and its pair files.

For every case of the input manifest (its ``source`` column: a NIfTI file or DICOM folder) and every
requested setting, a degraded input is simulated and written beside the real image (converted to
NIfTI, so both lie on the grid they were read on)::

    OUT/pairs/<case_id>/target.nii.gz                real scan (the training target)
    OUT/pairs/<case_id>/<kind>_<tag>.nii.gz          simulated input (+ .json record)
    OUT/paired_manifest.csv                          case_id, patient_id, source, target, split, ...

The paired manifest keeps each case's patient and split, and records the simulation kind, every
parameter (JSON) and the seed of each pair, so any pair can be rebuilt with ``medgan simulate``.
Seeds are derived from ``--seed``, the case id and the setting, so adding cases never changes the
pairs already made.

Examples::

    python pipelines/make_pairs.py data_manifests/shared_lowdose_sources.csv OUT --data-root ../shared/data \\
        low-dose --dose-fractions 0.25 0.1
    python pipelines/make_pairs.py M.csv OUT kernel --filters hann:0.5 hamming:1.0
    python pipelines/make_pairs.py M.csv OUT thick-slice --thicknesses-mm 3 5 --profile triangular
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
import zlib
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from medgan.errors import MedganError, SimulationError
from medgan.utils.atomic import atomic_path

logger = logging.getLogger("medgan.pipelines.make_pairs")

COLUMNS = ("case_id", "patient_id", "source", "target", "split", "source_modality", "target_modality",
           "real_case_id", "simulation", "setting", "seed", "parameters", "record")


def case_seed(base_seed: int, case_id: str, setting: str) -> int:
    """A seed that depends only on the base seed, the case and the setting (stable across runs)."""
    entropy = [base_seed, zlib.crc32(case_id.encode()), zlib.crc32(setting.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


def settings(args: argparse.Namespace) -> Iterator[Tuple[str, Dict[str, object]]]:
    """``(tag, transform arguments)`` for every setting asked on the command line."""
    if args.kind == "low-dose":
        for dose in args.dose_fractions:
            yield f"dose{dose:g}", {"dose_fraction": dose, "fast": args.fast, "filter_name": args.filter}
    elif args.kind == "kernel":
        for text in args.filters:
            name, _, cutoff = text.partition(":")
            yield f"{name}{cutoff or '1'}", {"filter_name": name, "cutoff": float(cutoff or 1.0),
                                               "reference_filter": args.reference_filter}
    else:
        for thickness in args.thicknesses_mm:
            yield f"{thickness:g}mm_{args.profile}", {"thickness_mm": thickness, "profile": args.profile}


def make_transform(kind: str, arguments: Dict[str, object], seed: int):
    from medgan.transforms.degradation import SimulateKernel, SimulateLowDose, SimulateThickSlices

    if kind == "low-dose":
        return SimulateLowDose(seed=seed, **arguments)
    if kind == "kernel":
        return SimulateKernel(**arguments)
    return SimulateThickSlices(**arguments)


def make_pairs(args: argparse.Namespace) -> Path:
    """Simulate every (case, setting) pair and write the paired manifest; returns its path."""
    from medgan.io import load_volume
    from medgan.io.nifti import write_nifti
    from medgan.manifest import load_manifest
    from medgan.transforms.degradation.files import simulate_file

    manifest = load_manifest(args.manifest, data_root=args.data_root)
    cases = manifest.cases if args.split is None else manifest.split(args.split)
    out_dir: Path = args.out_dir
    rows: List[Dict[str, object]] = []
    for case in cases:
        if case.source_modality == "MR" or case.domain == "mr":
            raise SimulationError(f"case {case.case_id} is an MR; the simulators need CT in HU", args.manifest,
                                  fix="list only CT cases in the manifest, or filter with --split")
        case_dir = out_dir / "pairs" / case.case_id
        target = case_dir / "target.nii.gz"
        image = load_volume(case.source.path, series=case.source.series) if case.source.series else \
            load_volume(case.source.path)
        write_nifti(image, target, overwrite=args.overwrite)
        for tag, arguments in settings(args):
            seed = case_seed(args.seed, case.case_id, tag)
            output = case_dir / f"{args.kind}_{tag}.nii.gz"
            record = simulate_file(make_transform(args.kind, arguments, seed), case.source.path, output,
                                   series=case.source.series, overwrite=args.overwrite)
            rows.append({
                "case_id": f"{case.case_id}__{args.kind}_{tag}", "patient_id": case.patient_id,
                "source": output.relative_to(out_dir).as_posix(), "target": target.relative_to(out_dir).as_posix(),
                "split": case.split, "source_modality": "CT", "target_modality": "CT",
                "real_case_id": case.case_id, "simulation": args.kind, "setting": tag,
                "seed": seed if args.kind == "low-dose" else "",
                "parameters": json.dumps(record["parameters"], sort_keys=True),
                "record": Path(record["record"]).relative_to(out_dir).as_posix(),
            })
            logger.info("%s: %s done", case.case_id, tag)
    manifest_path = out_dir / "paired_manifest.csv"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(manifest_path, overwrite=True) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    logger.info("wrote %d pairs to %s", len(rows), manifest_path)
    return manifest_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path, help="manifest CSV of real CTs (source column)")
    parser.add_argument("out_dir", type=Path, help="output folder (pairs/ and paired_manifest.csv)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="root of the manifest's paths (default: its folder)")
    parser.add_argument("--split", choices=("train", "val", "test"), default=None, help="only this split")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing pair files")
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    low = kinds.add_parser("low-dose", help="simulated low-dose inputs")
    low.add_argument("--dose-fractions", type=float, nargs="+", default=[0.25])
    low.add_argument("--filter", default="ram-lak", help="FBP filter of the noise")
    low.add_argument("--fast", action="store_true", help="image-domain approximation")
    kernel = kinds.add_parser("kernel", help="inputs re-reconstructed with other FBP filters")
    kernel.add_argument("--filters", nargs="+", default=["hann:0.5"], help="NAME[:CUTOFF] ...")
    kernel.add_argument("--reference-filter", default="ram-lak", help="filter the real scans are taken to have")
    thick = kinds.add_parser("thick-slice", help="thick-slice inputs")
    thick.add_argument("--thicknesses-mm", type=float, nargs="+", default=[5.0])
    thick.add_argument("--profile", default="triangular", choices=("rectangular", "triangular", "gaussian"))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        print(make_pairs(args))
    except MedganError as err:
        print(f"make_pairs: error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
