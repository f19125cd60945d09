"""Train smooth -> sharp CT kernel conversion (Philips UB -> YA) on the real voxel-aligned phantom pair.

The last ``--heldout-slices`` axial slices are never trained on (a gap of ``--gap-slices`` separates
them from the training slices); validation infers them whole with the sliding window and reports
RMSE/MAE/PSNR in HU against the YA reconstruction, next to the unconverted UB input's errors, in
the whole held-out slab and inside the head (UB > -500 HU, dilated).

With ``--bundle-dir`` the EMA generator is then exported to ``<bundle>/models/model.pt`` (its sha256
written into ``configs/metadata.json``), and the bundle itself (``medgan run``'s code path) converts
the held-out slab; the model, the unconverted input and the classical baselines (Gaussian blur;
unsharp masking with its parameters chosen on training slices) are scored with the same metric code
(``medgan.metrics.profiles.raw_metrics`` inside the YA body mask) into ``heldout_metrics.csv``.

Example (the short run in docs/engine.md):
    .venv/bin/python pipelines/train_kernel_conversion.py --output-dir runs/kernel_ub2ya \
        --iterations 600 --validate-every 200

The shipped weights of bundles/ct_kernel_conversion: see its docs/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from medgan.engines.train import train_paired
from medgan.engines.volumes import split_paired_volume
from medgan.io.nifti import read_nifti, write_nifti
from medgan.metrics import body_mask_from_ct
from medgan.metrics.baselines import gaussian_blur, unsharp_mask
from medgan.metrics.profiles import raw_metrics
from medgan.utils.atomic import atomic_path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct" / "phantom_head_philips"
HU_SCALE = 1000.0
#: Gaussian-blur baseline (the smooth direction: shows what blurring costs against the sharp target).
BLUR_SIGMA_MM = 0.5
#: Unsharp-mask grid searched on the last TUNE_SLICES training slices.
UNSHARP_SIGMAS_MM = (0.5, 0.75, 1.0, 1.5, 2.0)
UNSHARP_AMOUNTS = (0.5, 1.0, 1.5, 2.0, 3.0)
TUNE_SLICES = 20


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
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice); 1 shares a busy machine fairly")
    parser.add_argument("--bundle-dir", type=Path, default=None,
                        help="export the EMA generator into this bundle and measure it on the held-out slab")
    parser.add_argument("--measure-only", action="store_true",
                        help="no training: measure the bundle in --bundle-dir as it is (weights and inference.yaml)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    source = read_nifti(args.data_dir / "thin1mm_kernelUB.nii.gz").numpy().astype(np.float32)
    target = read_nifti(args.data_dir / "thin1mm_kernelYA.nii.gz").numpy().astype(np.float32)
    train, held, ranges = split_paired_volume(source, target, args.heldout_slices, args.gap_slices,
                                              value_scale=HU_SCALE)
    first_heldout, depth = ranges["heldout_z"]
    if args.measure_only:
        if args.bundle_dir is None:
            parser.error("--measure-only needs --bundle-dir")
        args.output_dir.mkdir(parents=True, exist_ok=True)
        rows = measure_heldout(args.data_dir, args.bundle_dir, args.output_dir, first_heldout, ranges["train_z"],
                               args.device)
        logging.info("held-out slices %d-%d:\n%s", first_heldout, depth - 1, markdown_table(rows))
        return 0

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
    if args.bundle_dir is not None:
        export_weights(args.output_dir / "generator.pt", args.bundle_dir)
        rows = measure_heldout(args.data_dir, args.bundle_dir, args.output_dir, first_heldout, ranges["train_z"],
                               args.device)
        logging.info("held-out slices %d-%d:\n%s", first_heldout, depth - 1, markdown_table(rows))
    return 0


def export_weights(generator_path: Path, bundle_dir: Path) -> str:
    """Copy the trained generator into the bundle and record its sha256 in the metadata (unchanged
    when the bundle already holds the same tensors)."""
    from medgan.bundle import load_state_dict, save_state_dict

    weights = bundle_dir / "models" / "model.pt"
    state = load_state_dict(generator_path)
    metadata_path = bundle_dir / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    if weights.is_file():  # torch.save is not byte-reproducible: keep a file that holds the same tensors
        shipped = load_state_dict(weights)
        if shipped.keys() == state.keys() and all(torch.equal(shipped[k], state[k]) for k in state):
            logging.info("%s already holds these weights", weights)
            return metadata["medgan"]["weights_sha256"]
    digest = save_state_dict(state, weights)
    metadata["medgan"]["weights_sha256"] = digest
    with atomic_path(metadata_path) as tmp:
        tmp.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    logging.info("exported %s -> %s (sha256 %s)", generator_path, bundle_dir / "models" / "model.pt", digest)
    return digest


def best_unsharp(source: np.ndarray, target: np.ndarray, spacing_mm: np.ndarray) -> tuple[float, float]:
    """Unsharp-mask ``(sigma_mm, amount)`` of least RMSE inside the body mask, searched on training slices."""
    mask = body_mask_from_ct(target).astype(bool)
    scores = {}
    for sigma_mm in UNSHARP_SIGMAS_MM:
        for amount in UNSHARP_AMOUNTS:
            difference = unsharp_mask(source, spacing_mm, sigma_mm, amount)[mask] - target[mask]
            scores[(sigma_mm, amount)] = float(np.sqrt(np.mean(difference.astype(np.float64) ** 2)))
    return min(scores, key=scores.get)


def measure_heldout(data_dir: Path, bundle_dir: Path, output_dir: Path, first_heldout: int,
                    train_z: tuple[int, int], device: str) -> list[dict[str, object]]:
    """Convert the held-out slab with the bundle; score model, input and baselines with one metric code."""
    from medgan.bundle.loading import open_bundle
    from medgan.bundle.runner import STATUS_FAILED, RunCase, run_bundle

    source = read_nifti(data_dir / "thin1mm_kernelUB.nii.gz")
    target = read_nifti(data_dir / "thin1mm_kernelYA.nii.gz")
    spacing = np.linalg.norm(source.affine.numpy()[:3, :3], axis=0)
    slab_path = output_dir / "heldout_ub.nii.gz"
    affine = source.affine.numpy().copy()
    affine[:3, 3] += affine[:3, 2] * first_heldout  # the slab's first slice lies first_heldout slices on
    write_nifti(source.numpy()[:, :, first_heldout:], slab_path, affine=affine)
    results_dir = output_dir / "heldout_bundle"
    bundle = open_bundle(bundle_dir, device=device, allow_untrusted=True)
    [result] = run_bundle(bundle, [RunCase("heldout", slab_path)], results_dir)  # resumes: skips a finished slab
    if result.status == STATUS_FAILED:
        raise RuntimeError(f"the bundle failed on the held-out slab: {result.message}")
    model = read_nifti(results_dir / "heldout" / "pred.nii.gz").numpy().astype(np.float32)

    ub, ya = source.numpy().astype(np.float32), target.numpy().astype(np.float32)
    tune = slice(max(train_z[0], train_z[1] - TUNE_SLICES), train_z[1])
    sigma_mm, amount = best_unsharp(ub[:, :, tune], ya[:, :, tune], spacing)
    held_ub, held_ya = ub[:, :, first_heldout:], ya[:, :, first_heldout:]
    candidates = {
        "input UB (unconverted)": held_ub,
        f"Gaussian blur sigma {BLUR_SIGMA_MM} mm": gaussian_blur(held_ub, spacing, BLUR_SIGMA_MM),
        f"unsharp mask sigma {sigma_mm} mm, amount {amount} (tuned on training slices)":
            unsharp_mask(held_ub, spacing, sigma_mm, amount),
        f"model ({bundle.name} v{bundle.version})": model,
    }
    mask = body_mask_from_ct(held_ya)
    rows = []
    for name, image in candidates.items():
        values = raw_metrics(image, held_ya, mask)
        rows.append({"method": name, **{k: round(float(v), 4) for k, v in values.items()}})
    baseline_rmse = rows[0]["rmse_hu"]
    for row in rows:
        row["rmse_reduction_vs_input_pct"] = round(100.0 * (1.0 - row["rmse_hu"] / baseline_rmse), 2)
    with atomic_path(output_dir / "heldout_metrics.csv") as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows


def markdown_table(rows: list[dict[str, object]]) -> str:
    lines = ["| method | RMSE (HU) | MAE (HU) | PSNR (dB) | SSIM | RMSE vs input |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['rmse_hu']:.1f} | {r['mae_hu']:.1f} | {r['psnr_db']:.2f} | "
                     f"{r['ssim']:.4f} | {-r['rmse_reduction_vs_input_pct']:+.1f} % |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
