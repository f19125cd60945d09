"""Train the mr_synthetic_ct bundle's unpaired MR -> CT generator and measure it on the real head MR.

No same-patient human MR/CT pair exists in the shared data, so the shipped generator is a CycleGAN
trained UNPAIRED on one real head MR (VS-SEG-001, T1 MPRAGE + Gd) and head CTs in HU: the Philips
anthropomorphic head phantom (thin 1 mm, kernel UB) and, optionally, the CT template of Rorden et al.
(2012) converted from Cormack units to HU (:func:`medgan.registration.units.cormack_to_hu`).

Steps:
  ``train``    converts the template to HU (into ``OUTPUT/data``), runs the bundle's ``train.yaml``
               with overrides (threads, iterations, files), writes ``OUTPUT/generator.pt``;
               ``--install`` copies it to the bundle's ``models/model.pt`` and records its sha256.
  ``measure``  runs the bundle's ``inference.yaml`` on the head MR and measures the output: HU
               class fractions inside the MR body mask and the body outline (sCT > -500 HU) against
               the MR's body mask (Dice, mean and 95th-percentile surface distance, mm), plus the
               loss statistics of the run (bounded, no collapse) -> ``OUTPUT/measure_head_mr.json``
               (``--no-air-outside-body``: the raw network output, ``measure_head_mr_raw.json``).

Example (the shipped weights, see bundles/mr_synthetic_ct/docs/README.md):
    OMP_NUM_THREADS=1 .venv/bin/python pipelines/train_mr_synthetic_ct.py train \
        --output-dir runs/sct_cyclegan --iterations 1500 --install
    OMP_NUM_THREADS=1 .venv/bin/python pipelines/train_mr_synthetic_ct.py measure --output-dir runs/sct_cyclegan
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medgan.errors import GeometryMismatchError, OutputError
from medgan.io.nifti import read_nifti, write_nifti
from medgan.registration.units import cormack_to_hu
from medgan.utils.atomic import atomic_path, sha256_file

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "mr_synthetic_ct"
DATA = Path(os.environ.get("MEDGAN_DATA_ROOT", ROOT.parent / "shared" / "data"))
HEAD_MR = DATA / "mr" / "head_vs_seg_001" / "VS-SEG-001_t1_mpr_tra_gk_v4_2.nii.gz"
HEAD_CT = DATA / "ct" / "phantom_head_philips" / "thin1mm_kernelUB.nii.gz"
CT_TEMPLATE = DATA / "templates_mni" / "scct.nii"

#: HU classes of the output histogram and the fraction of the MR body each should plausibly hold
#: in a head (air cavities/sinuses, fat, soft tissue incl. brain/CSF, bone incl. skull).
HU_CLASSES = {"air": (-1100.0, -400.0), "fat": (-400.0, -30.0), "soft_tissue": (-30.0, 200.0),
              "bone": (200.0, 3100.0)}

logger = logging.getLogger("train_mr_synthetic_ct")


def template_in_hu(output_dir: Path) -> Path:
    """Write the Cormack-unit CT template as HU (float32 NIfTI) under ``output_dir/data``; reuse it if present."""
    path = output_dir / "data" / "scct_hu.nii.gz"
    if not path.is_file():
        template = read_nifti(CT_TEMPLATE)
        hu = template.clone()
        hu.array = cormack_to_hu(template.numpy())
        path.parent.mkdir(parents=True, exist_ok=True)
        write_nifti(hu, path)
    return path


def _parser(config_files: Sequence[Path], overrides: dict[str, Any]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files])
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    return parser


def train(args: argparse.Namespace) -> int:
    targets = (([str(HEAD_CT)] if args.with_phantom else [])
               + ([str(template_in_hu(args.output_dir))] if args.with_template else []))
    if not targets:
        raise SystemExit("error: the CT domain is empty: drop --no-with-phantom or --no-with-template")
    overrides = {"source_files": [str(HEAD_MR)], "target_files": targets, "output_dir": str(args.output_dir),
                 "iterations": args.iterations, "threads": args.threads, "seed": args.seed,
                 "device_name": args.device}
    logger.info("training on MR %s and CT %s", HEAD_MR, targets)
    start = time.time()
    parser = _parser([BUNDLE / "configs" / "train.yaml"], overrides)
    for expr in ("initialize", "run"):
        parser.get_parsed_content(expr)
    minutes = (time.time() - start) / 60.0
    generator = args.output_dir / "generator.pt"
    summary = {"iterations": args.iterations, "minutes": round(minutes, 1), "source_files": [str(HEAD_MR)],
               "target_files": targets, "generator_sha256": sha256_file(generator)}
    with atomic_path(args.output_dir / "train_summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("trained %d iterations in %.1f min -> %s", args.iterations, minutes, generator)
    if args.install:
        install(generator)
    return 0


def install(generator: Path) -> None:
    """Copy ``generator`` to the bundle's ``models/model.pt`` and record its sha256 in metadata.json."""
    from medgan.bundle import load_state_dict, save_state_dict

    digest = save_state_dict(load_state_dict(generator), BUNDLE / "models" / "model.pt")
    metadata_path = BUNDLE / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    metadata["medgan"]["weights_sha256"] = digest
    with atomic_path(metadata_path) as tmp:
        tmp.write_text(json.dumps(metadata, indent=4) + "\n")
    logger.info("installed %s (sha256 %s)", BUNDLE / "models" / "model.pt", digest)


def loss_statistics(losses_csv: Path) -> dict[str, dict[str, float]]:
    """Per loss column: min, max, mean of the first and of the last 10 % of the logged rows."""
    with open(losses_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    stats: dict[str, dict[str, float]] = {}
    tenth = max(1, len(rows) // 10)
    for column in rows[0]:
        if not column.endswith("_loss"):
            continue
        values = np.array([float(r[column]) for r in rows if r[column] not in ("", None)])
        stats[column] = {"min": float(values.min()), "max": float(values.max()),
                         "first_mean": float(values[:tenth].mean()), "last_mean": float(values[-tenth:].mean()),
                         "finite": bool(np.isfinite(values).all())}
    return stats


def outline_agreement(sct_hu: Any, mr_body: Any, threshold_hu: float = -500.0) -> dict[str, float]:
    """Body outline of the sCT (``CTBodyMask`` at ``threshold_hu``) against the MR body mask, same grid.

    Returns Dice and the symmetric mean / 95th-percentile surface distance in mm (MONAI metrics,
    spacing from the affine).
    """
    import torch
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

    from medgan.transforms.mask import CTBodyMask

    ct_body = CTBodyMask(threshold_hu=threshold_hu)(sct_hu)
    spacing = [float(s) for s in np.sqrt((np.asarray(sct_hu.affine)[:3, :3] ** 2).sum(axis=0))]
    pred = torch.as_tensor(np.asarray(ct_body) > 0)[None, None].float()
    ref = torch.as_tensor(np.asarray(mr_body) > 0)[None, None].float()
    return {
        "dice": float(compute_dice(pred, ref, include_background=True)),
        "mean_surface_distance_mm": float(compute_average_surface_distance(pred, ref, include_background=True,
                                                                           symmetric=True, spacing=spacing)),
        "hd95_mm": float(compute_hausdorff_distance(pred, ref, include_background=True, percentile=95,
                                                    spacing=spacing)),
    }


def class_fractions(sct_hu: np.ndarray, body: np.ndarray) -> dict[str, float]:
    """Fraction of the body's voxels in each :data:`HU_CLASSES` range (the rest counts as ``other``)."""
    import torch

    from medgan.handlers.validation import class_fractions as masked_fractions  # what training validation logs

    found = masked_fractions(torch.as_tensor(np.asarray(sct_hu)), HU_CLASSES, torch.as_tensor(np.asarray(body) > 0))
    fractions = {name[: -len("_fraction")]: value for name, value in found.items()}
    fractions["other"] = max(0.0, 1.0 - sum(fractions.values()))
    return fractions


def measure(args: argparse.Namespace) -> int:
    from medgan.transforms.mask import MRBodyMask

    name = "head_mr" if args.air_outside_body else "head_mr_raw"
    out_dir = args.output_dir / name
    overrides = {"input_files": [str(HEAD_MR)], "output_dir": str(out_dir), "device_name": args.device,
                 "air_outside_body": args.air_outside_body}
    if args.weights is not None:
        overrides.update({"weights_path": str(args.weights), "weights_sha256": sha256_file(args.weights)})
    parser = _parser([BUNDLE / "configs" / "inference.yaml"], overrides)
    import torch

    torch.set_num_threads(args.threads)
    start = time.time()
    parser.get_parsed_content("run")
    seconds = time.time() - start
    predictions = sorted(out_dir.rglob("*.nii.gz"))
    if len(predictions) != 1:
        raise OutputError(f"expected one prediction, found {len(predictions)}", out_dir,
                          "empty that folder and run measure again")
    sct = read_nifti(predictions[0])
    mr = read_nifti(HEAD_MR)
    if sct.shape != mr.shape or not np.allclose(np.asarray(sct.affine), np.asarray(mr.affine), atol=1e-3):
        raise GeometryMismatchError(f"the sCT {tuple(sct.shape)} is not on the MR grid {tuple(mr.shape)}",
                                    predictions[0], "end the bundle's postprocessing with Invertd on pred")
    body = np.asarray(MRBodyMask()(mr))
    values = sct.numpy().astype(np.float32)
    result: dict[str, Any] = {
        "prediction": str(predictions[0]), "air_outside_body": args.air_outside_body,
        "seconds": round(seconds, 1), "dtype": str(values.dtype),
        "hu_percentiles_in_body": {str(p): float(np.percentile(values[body > 0], p)) for p in (1, 5, 50, 95, 99)},
        "class_fractions_in_body": class_fractions(values, body),
        "outline": outline_agreement(sct, body),
        "outside_body_mean_hu": float(values[body == 0].mean()),
    }
    losses = args.output_dir / "losses.csv"
    if losses.is_file():
        result["losses"] = loss_statistics(losses)
    with atomic_path(args.output_dir / f"measure_{name}.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    logger.info("%s", json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    for name in ("train", "measure"):
        step = sub.add_parser(name)
        step.add_argument("--output-dir", type=Path, required=True)
        step.add_argument("--threads", type=int, default=1)
        step.add_argument("--device", default="auto")
    train_parser = sub.choices["train"]
    train_parser.add_argument("--iterations", type=int, default=1500)
    train_parser.add_argument("--seed", type=int, default=0)
    train_parser.add_argument("--with-template", action=argparse.BooleanOptionalAction, default=True,
                              help="add the CT template (converted to HU) to the CT domain")
    train_parser.add_argument("--with-phantom", action=argparse.BooleanOptionalAction, default=True,
                              help="add the Philips head phantom CT to the CT domain (its skull holds an air gap "
                                   "around the brain insert: 64 %% of its body mask is air)")
    train_parser.add_argument("--install", action="store_true", help="copy the generator into the bundle")
    sub.choices["measure"].add_argument("--weights", type=Path, default=None,
                                        help="generator to measure (default: the bundle's models/model.pt)")
    sub.choices["measure"].add_argument("--air-outside-body", action=argparse.BooleanOptionalAction, default=True,
                                        help="the bundle's air override outside the MR body mask (off: raw network)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return train(args) if args.step == "train" else measure(args)


if __name__ == "__main__":
    sys.exit(main())
