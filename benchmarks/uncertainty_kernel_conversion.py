"""Does the flip / ensemble SD track the error? Spearman correlation on the held-out kernel-conversion slab.

Loads the UB -> YA kernel-conversion run (``pipelines/train_kernel_conversion.py``: ``generator.pt`` and
``checkpoints/checkpoint_*.pt`` with the raw and EMA generators), predicts a crop of the held-out
slices with :func:`medgan.inferers.predict_with_uncertainty` under several settings, and reports the
Spearman rank correlation between the per-voxel SD and the absolute error of the mean prediction
against the YA reconstruction, inside the head mask (UB > -500 HU, dilated 3 voxels, as the run's
validation), on a random voxel subsample and on 8x8x8-voxel block means. The input's gradient
magnitude is reported beside it as a trivial "where are the edges" predictor of the error.

Example (the figures in docs/uncertainty.md):
    .venv/bin/python benchmarks/uncertainty_kernel_conversion.py --run-dir runs/kernel_ub2ya_short \
        --crop 256 256 --crop-origin 96 96 --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage, stats

from medgan.engines.volumes import threshold_body_mask
from medgan.inferers import ALL_FLIPS, IN_PLANE_FLIPS, make_sliding_window_inferer, predict_with_uncertainty
from medgan.io.nifti import read_nifti
from medgan.networks import ResidualUNet

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct" / "phantom_head_philips"
HU_SCALE = 1000.0


def load_generators(run_dir: Path, filters: tuple[int, ...]) -> dict[str, torch.nn.Module]:
    """``ema@N`` and ``raw@N`` generators from every checkpoint of a paired run."""
    networks = {}
    for path in sorted((run_dir / "checkpoints").glob("checkpoint_*.pt")):
        iteration = int(path.stem.split("_")[1])
        state = torch.load(path, map_location="cpu", weights_only=True)
        for name, weights in (("ema", state["ema"]["network"]), ("raw", state["generator"])):
            network = ResidualUNet(1, 1, filters=filters)
            network.load_state_dict(weights)
            networks[f"{name}@{iteration}"] = network.eval()
    if not networks:
        raise SystemExit(f"no checkpoint_*.pt under {run_dir / 'checkpoints'}")
    return networks


def block_means(volume: np.ndarray, mask: np.ndarray, block: int, min_fraction: float) -> np.ndarray:
    """Mean of ``volume`` over the masked voxels of each ``block``^3 block holding >= ``min_fraction`` mask."""
    shape = [s // block for s in volume.shape]
    cut = tuple(slice(0, n * block) for n in shape)

    def blocks(a: np.ndarray) -> np.ndarray:
        a = a[cut].reshape(shape[0], block, shape[1], block, shape[2], block)
        return a.transpose(0, 2, 4, 1, 3, 5).reshape(-1, block ** 3)

    values, weights = blocks(volume.astype(np.float64)), blocks(mask.astype(np.float64))
    count = weights.sum(axis=1)
    keep = count >= min_fraction * block ** 3
    return (values * weights).sum(axis=1)[keep] / count[keep]


def correlations(sd_hu: np.ndarray, error_hu: np.ndarray, mask: np.ndarray, samples: int, block: int,
                 rng: np.random.Generator) -> dict[str, float]:
    index = np.flatnonzero(mask)
    pick = rng.choice(index, size=min(samples, index.size), replace=False)
    voxel = stats.spearmanr(sd_hu.reshape(-1)[pick], error_hu.reshape(-1)[pick]).statistic
    blocks_sd = block_means(sd_hu, mask, block, 0.5)
    blocks_err = block_means(error_hu, mask, block, 0.5)
    block_rho = stats.spearmanr(blocks_sd, blocks_err).statistic
    return {"spearman_voxels": float(voxel), "voxels": int(pick.size), "spearman_blocks": float(block_rho),
            "blocks": int(blocks_sd.size)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/kernel_ub2ya_short"))
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--filters", type=int, nargs="+", default=(16, 32, 64))
    parser.add_argument("--heldout", type=int, nargs=2, default=(80, 100), help="held-out slice range [first, end)")
    parser.add_argument("--crop", type=int, nargs=2, default=(256, 256), help="in-plane crop size (0 0: whole slab)")
    parser.add_argument("--crop-origin", type=int, nargs=2, default=(96, 96))
    parser.add_argument("--roi", type=int, nargs=3, default=(64, 64, 16))
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--block", type=int, default=8)
    parser.add_argument("--settings", nargs="+", default=("tta4", "tta8", "ensemble", "ensemble_tta4"),
                        choices=("tta4", "tta8", "ensemble", "ensemble_tta4"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    z0, z1 = args.heldout
    source = read_nifti(args.data_dir / "thin1mm_kernelUB.nii.gz").numpy()[:, :, z0:z1].astype(np.float32)
    target = read_nifti(args.data_dir / "thin1mm_kernelYA.nii.gz").numpy()[:, :, z0:z1].astype(np.float32)
    mask = threshold_body_mask(source)
    if args.crop[0] > 0:
        (x0, y0), (nx, ny) = args.crop_origin, args.crop
        region = (slice(x0, x0 + nx), slice(y0, y0 + ny), slice(None))
        source, target, mask = source[region], target[region], mask[region]
    logging.info("slab %s, %d voxels in the head mask", source.shape, int(mask.sum()))

    networks = load_generators(args.run_dir, tuple(args.filters))
    last = max(int(k.split("@")[1]) for k in networks)
    main_network = networks[f"ema@{last}"]
    settings = {"tta4": ([main_network], IN_PLANE_FLIPS, f"ema@{last}, 4 in-plane flips"),
                "tta8": ([main_network], ALL_FLIPS, f"ema@{last}, 8 flips (X, Y, Z)"),
                "ensemble": (list(networks.values()), ((),), f"{', '.join(networks)}, no flip"),
                "ensemble_tta4": (list(networks.values()), IN_PLANE_FLIPS, f"{', '.join(networks)} x 4 in-plane flips")}
    inferer = make_sliding_window_inferer(args.roi, overlap=args.overlap, sw_batch_size=4, device="cpu")
    image = torch.from_numpy(source / HU_SCALE)[None]
    rng = np.random.default_rng(args.seed)

    edges = ndimage.gaussian_gradient_magnitude(source.astype(np.float64), sigma=1.0)
    results = []
    for name in args.settings:
        nets, flips, label = settings[name]
        start = time.perf_counter()
        mean, sd = predict_with_uncertainty(nets, image, inferer, flips=flips)
        seconds = time.perf_counter() - start
        pred_hu, sd_hu = mean[0].numpy() * HU_SCALE, sd[0].numpy() * HU_SCALE
        error = np.abs(pred_hu - target)
        row = {"setting": name, "networks_and_flips": label, "predictions": len(nets) * len(flips),
               "seconds": round(seconds, 1), "mae_hu": float(error[mask].mean()),
               "rmse_hu": float(np.sqrt((error[mask] ** 2).mean())), "mean_sd_hu": float(sd_hu[mask].mean()),
               "p95_sd_hu": float(np.percentile(sd_hu[mask], 95))}
        row.update(correlations(sd_hu, error, mask, args.samples, args.block, rng))
        edge = correlations(edges, error, mask, args.samples, args.block, rng)
        row["edge_spearman_voxels"], row["edge_spearman_blocks"] = edge["spearman_voxels"], edge["spearman_blocks"]
        logging.info("%s", json.dumps(row))
        results.append(row)

    header = ("| setting | predictions | MAE (HU) | mean SD (HU) | p95 SD (HU) | Spearman voxels | Spearman 8^3 blocks "
              "| edge-magnitude Spearman voxels / blocks | s |")
    lines = [header, "|" + "---|" * 9]
    for r in results:
        lines.append(f"| {r['networks_and_flips']} | {r['predictions']} | {r['mae_hu']:.1f} | {r['mean_sd_hu']:.1f} | "
                     f"{r['p95_sd_hu']:.1f} | {r['spearman_voxels']:.3f} (n={r['voxels']}) | "
                     f"{r['spearman_blocks']:.3f} (n={r['blocks']}) | {r['edge_spearman_voxels']:.3f} / "
                     f"{r['edge_spearman_blocks']:.3f} | {r['seconds']:.0f} |")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v)
                                                  for k, v in vars(args).items()}, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
