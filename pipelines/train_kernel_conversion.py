"""Train smooth -> sharp CT kernel conversion (Philips UB -> YA) on the real voxel-aligned phantom pair.

The last ``--heldout-slices`` axial slices are never trained on (a gap of ``--gap-slices`` separates
them from the training slices); validation infers them whole with the sliding window and reports
RMSE/MAE/PSNR in HU against the YA reconstruction, next to the unconverted UB input's errors, in
the whole held-out slab and inside the head (UB > -500 HU, dilated).

Example (the short run in docs/engine.md):
    .venv/bin/python pipelines/train_kernel_conversion.py --output-dir runs/kernel_ub2ya \
        --iterations 600 --validate-every 200
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from pathlib import Path

import numpy as np

from medgan.engines.train import train_paired
from medgan.engines.volumes import split_paired_volume
from medgan.io.nifti import read_nifti
from medgan.utils.atomic import atomic_path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct" / "phantom_head_philips"
HU_SCALE = 1000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--heldout-slices", type=int, default=20)
    parser.add_argument("--gap-slices", type=int, default=4)
    parser.add_argument("--patch", type=int, nargs=3, default=(64, 64, 16))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--filters", type=int, nargs="+", default=(16, 32, 64))
    parser.add_argument("--discriminator-channels", type=int, default=16)
    parser.add_argument("--l1-weight", type=float, default=100.0)
    parser.add_argument("--gdl-weight", type=float, default=0.0)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--ema-decay", type=float, default=0.99)
    parser.add_argument("--validate-every", type=int, default=200)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    source = read_nifti(args.data_dir / "thin1mm_kernelUB.nii.gz").numpy().astype(np.float32)
    target = read_nifti(args.data_dir / "thin1mm_kernelYA.nii.gz").numpy().astype(np.float32)
    train, held, ranges = split_paired_volume(source, target, args.heldout_slices, args.gap_slices,
                                              value_scale=HU_SCALE)
    first_heldout, depth = ranges["heldout_z"]

    start = time.time()
    result = train_paired(
        train, held, args.output_dir, iterations=args.iterations, patch_size_vox=args.patch,
        batch_size=args.batch_size, generator_filters=args.filters, discriminator_channels=args.discriminator_channels,
        l1_weight=args.l1_weight, gdl_weight=args.gdl_weight, learning_rate=args.learning_rate,
        ema_decay=args.ema_decay, weight_key="body_mask", value_scale=HU_SCALE, data_range=4000.0,
        window=(-200.0, 1500.0), diff_range=300.0, validate_every=args.validate_every,
        checkpoint_every=args.validate_every, epoch_length=args.validate_every, precision=args.precision,
        device=args.device, seed=args.seed, progress=False, log_every=10)
    minutes = (time.time() - start) / 60.0

    with open(args.output_dir / "validation.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    baseline = [float(r["rmse"]) for r in rows if r["model"] == "input"][0]
    final = [float(r["rmse"]) for r in rows if r["model"] == "generator"][-1]
    summary = (f"kernel UB->YA, held-out slices {first_heldout}-{depth - 1} (head mask): RMSE input {baseline:.1f} HU "
               f"-> model {final:.1f} HU ({100 * (1 - final / baseline):.1f}% lower) after {result['iterations']} "
               f"iterations in {minutes:.1f} min")
    logging.info(summary)
    with atomic_path(args.output_dir / "summary.txt") as tmp:
        tmp.write_text(summary + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
