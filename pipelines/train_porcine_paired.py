"""Paired MR -> synthetic CT on the only paired data here, scored on held-out slices against baselines.

Two pairs:
  ``porcine``    the real TCIA MRI-DIR pork phantom (T2 MR and the CT rigidly registered onto the MR
                 grid), resampled in plane to 1 mm (2.5 mm slices kept);
  ``templates``  the skull-stripped MNI152 2009a T1 template and the skull-stripped CT template of
                 Rorden et al. (Cormack units -> HU), the T1 resampled onto the CT template's 2 mm grid:
                 a population-level brain-only pair, for plumbing only (no quality claim).

A slab of axial slices (porcine: the last 20, at the superior end of the RAS grid; templates: the 16
ending at slice 70, upper brain) is never trained on; the 4 slices before it are dropped and
training uses the slices below. A pix2pix model (residual U-Net, conditional PatchGAN,
``medgan.engines.train_paired``) trains on the rest. Its input (``--input-prior linear``, the default)
is the MR mapped to HU by the ``linear`` baseline below (an affine rescaling of the MR inside the
body, air outside), so the residual U-Net, which starts as the identity, starts from that baseline
and learns the correction; ``--input-prior mr`` feeds the percentile-normalised MR itself. Then the
held-out slab is inferred whole with the sliding window and scored with the SynthRAD2023 convention (``medgan.metrics`` profile
``synthrad2023``: MAE, PSNR, SSIM inside the CT's body mask, HU > -500) next to three baselines made
from the same MR and the training slices only, scored by the same code:

  ``bulk_water``       0 HU inside the MR body mask, -1000 HU outside (bulk-density override);
  ``bulk_classes``     MR intensity classes inside the body (quantile bins of the training slices),
                       each assigned the mean CT HU of its class on the training slices;
  ``linear``           HU = a * MR + b fitted by least squares inside the body on the training slices.

Example (the numbers in bundles/mr_synthetic_ct/docs/README.md):
    OMP_NUM_THREADS=1 .venv/bin/python pipelines/train_porcine_paired.py --pair porcine \
        --output-dir runs/sct_porcine --iterations 800
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from medgan.engines.train import train_paired
from medgan.inferers import make_sliding_window_inferer, predict_volume
from medgan.io.nifti import read_nifti, write_nifti
from medgan.metrics import evaluate_pair
from medgan.registration.units import cormack_to_hu
from medgan.transforms.intensity import NormalizeHU, NormalizeMRPercentile
from medgan.transforms.mask import CTBodyMask, MRBodyMask
from medgan.transforms.spatial import preprocessing
from medgan.utils.atomic import atomic_path

DATA = Path(os.environ.get("MEDGAN_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data"))
WINDOW_HU = (-1024.0, 3071.0)  # CT <-> [-1, 1]
AIR_HU = -1000.0
#: per pair: files, working spacing (mm), training patch (vox), held-out slices, gap slices, and the
#: slice the held-out slab ends before (None: the last slice; slices from there on are not used)
PAIRS = {
    "porcine": {"mr": DATA / "mr_ct_pair_porcine" / "mr_t2.nii.gz",
                "ct": DATA / "mr_ct_pair_porcine" / "ct_on_mr_grid.nii.gz",
                "pixdim_mm": (1.0, 1.0, 2.5), "patch": (64, 64, 16), "heldout": 20, "gap": 4, "stop": None},
    "templates": {"mr": DATA / "templates_mni" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                  "ct": DATA / "templates_mni" / "scct_stripped.nii",
                  "pixdim_mm": (2.0, 2.0, 2.0), "patch": (32, 32, 32), "heldout": 16, "gap": 4, "stop": 70},
}

logger = logging.getLogger("train_porcine_paired")


def load_pair(pair: str) -> tuple[torch.Tensor, torch.Tensor]:
    """MR and CT (HU) as ``(X, Y, Z)`` MetaTensors on one RAS working grid."""
    spec = PAIRS[pair]
    mr, ct = read_nifti(spec["mr"]), read_nifti(spec["ct"])
    if pair == "templates":
        from monai.transforms import ResampleToMatch

        hu = ct.clone()
        hu.array = cormack_to_hu(ct.numpy())
        ct = hu
        resampled = ResampleToMatch(mode="bilinear", padding_mode="border")(mr[None].float(), ct[None])[0]
        mr = MetaTensor(resampled.as_tensor(), affine=ct.affine)  # on the CT grid, without the resampling record
    ct.array = np.maximum(ct.numpy().astype(np.float32), WINDOW_HU[0])  # -2048 outside the CT's field of view
    data = preprocessing(["source", "target"], spec["pixdim_mm"])({"source": mr.float(), "target": ct.float()})
    return data["source"][0], data["target"][0]


def bulk_water(mr_body: np.ndarray) -> np.ndarray:
    """0 HU inside the body, air outside."""
    return np.where(mr_body > 0, 0.0, AIR_HU).astype(np.float32)


def bulk_classes(mr: np.ndarray, mr_body: np.ndarray, ct: np.ndarray, train: np.ndarray,
                 classes: int = 4) -> np.ndarray:
    """MR intensity classes (quantile bins inside the training body) -> their mean training CT HU."""
    inside_train = (mr_body > 0) & train
    edges = np.quantile(mr[inside_train], np.linspace(0, 1, classes + 1)[1:-1])
    label = np.digitize(mr, edges)
    out = np.full(mr.shape, AIR_HU, dtype=np.float32)
    for k in range(classes):
        hu = float(ct[inside_train & (label == k)].mean())
        out[(mr_body > 0) & (label == k)] = hu
    return out


def linear_map(mr: np.ndarray, mr_body: np.ndarray, ct: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Least-squares HU = a * MR + b inside the training body; air outside."""
    inside_train = (mr_body > 0) & train
    slope, intercept = np.polyfit(mr[inside_train].astype(np.float64), ct[inside_train].astype(np.float64), 1)
    return np.where(mr_body > 0, slope * mr + intercept, AIR_HU).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pair", choices=sorted(PAIRS), default="porcine")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--filters", type=int, nargs="+", default=(16, 32, 64))
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--l1-weight", type=float, default=100.0)
    parser.add_argument("--input-prior", choices=("linear", "mr"), default="linear",
                        help="generator input: the MR mapped to HU by the linear baseline (the residual U-Net then "
                             "starts from that baseline) or the percentile-normalised MR itself")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    spec = PAIRS[args.pair]

    mr, ct = load_pair(args.pair)
    mr_body = np.asarray(MRBodyMask()(mr)).astype(bool)
    mr_norm = np.asarray(NormalizeMRPercentile()(mr, mask=mr_body), dtype=np.float32)  # [-1, 1]
    mr_net = mr_norm
    ct_hu = ct.numpy().astype(np.float32)
    ct_net = np.asarray(NormalizeHU(window_hu=WINDOW_HU)(ct.clone()), dtype=np.float32)
    stop = spec["stop"] or ct_hu.shape[2]
    first_heldout = stop - spec["heldout"]
    train_end = first_heldout - spec["gap"]
    xs, ys = np.where(mr_body.any(axis=2))
    margin = 8
    x0, x1 = max(int(xs.min()) - margin, 0), min(int(xs.max()) + margin + 1, mr_body.shape[0])
    y0, y1 = max(int(ys.min()) - margin, 0), min(int(ys.max()) + margin + 1, mr_body.shape[1])

    def case(z: slice) -> dict[str, torch.Tensor]:
        region = (slice(x0, x1), slice(y0, y1), z)
        return {"source": torch.from_numpy(mr_net[region].copy())[None],
                "target": torch.from_numpy(ct_net[region].copy())[None],
                "body_mask": torch.from_numpy(mr_body[region].astype(np.float32))[None]}

    ranges = {"train_z": [0, train_end], "gap_z": [train_end, first_heldout], "heldout_z": [first_heldout, stop],
              "x": [x0, x1], "y": [y0, y1], "grid_shape": list(ct_hu.shape), "pixdim_mm": list(spec["pixdim_mm"])}
    logger.info("%s: %s", args.pair, ranges)
    held = slice(first_heldout, stop)
    value_scale = (WINDOW_HU[1] - WINDOW_HU[0]) / 2.0
    value_offset = (WINDOW_HU[1] + WINDOW_HU[0]) / 2.0
    train_z = np.zeros(ct_hu.shape, dtype=bool)
    train_z[:, :, :train_end] = True
    linear_hu = linear_map(mr_net, mr_body, ct_hu, train_z)  # fitted on the training slices only
    if args.input_prior == "linear":  # an affine rescaling of the MR inside the body, air outside
        mr_net = ((linear_hu - value_offset) / value_scale).astype(np.float32)
    start = time.time()
    result = train_paired(
        [case(slice(0, train_end))], [case(held)], args.output_dir, iterations=args.iterations,
        patch_size_vox=spec["patch"], batch_size=args.batch_size, generator_filters=args.filters,
        l1_weight=args.l1_weight, learning_rate=args.learning_rate, ema_decay=0.99, weight_key="body_mask",
        value_scale=value_scale, value_offset=value_offset, data_range=4095.0, window=(-400.0, 1200.0),
        diff_range=400.0, validate_every=max(args.iterations // 2, 1), checkpoint_every=100, epoch_length=100,
        device=args.device, seed=args.seed, progress=False, log_every=10)
    minutes = (time.time() - start) / 60.0

    # held-out slab, whole in-plane field of view, through the sliding window
    network = result["final_generator"]
    inferer = make_sliding_window_inferer(spec["patch"], overlap=0.5, device=args.device)
    pred_net = predict_volume(network, torch.from_numpy(mr_net[:, :, held].copy())[None], inferer)[0].numpy()
    pred_hu = pred_net * value_scale + value_offset
    target = ct_hu[:, :, held]
    candidates = {
        "model": pred_hu,
        "bulk_water": bulk_water(mr_body)[:, :, held],
        "bulk_classes": bulk_classes(mr_norm, mr_body, ct_hu, train_z)[:, :, held],
        "linear": linear_hu[:, :, held],
    }
    mask = np.asarray(CTBodyMask()(ct))[:, :, held].astype(bool)
    table = {name: evaluate_pair(values, target, "synthrad2023", mask=mask) for name, values in candidates.items()}
    summary = {"pair": args.pair, "input_prior": args.input_prior, "iterations": result["iterations"],
               "minutes": round(minutes, 1),
               "ranges": ranges, "mask_voxels": int(mask.sum()), "synthrad2023": table}
    slab_affine = np.asarray(ct.affine, dtype=np.float64).copy()
    slab_affine[:3, 3] += slab_affine[:3, 2] * first_heldout  # the slab starts at voxel z = first_heldout
    write_nifti(MetaTensor(np.round(pred_hu).astype(np.float32), affine=slab_affine),
                args.output_dir / "heldout_sct.nii.gz", dtype=np.int16)
    with atomic_path(args.output_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    for name, values in table.items():
        logger.info("%-13s MAE %.1f HU  PSNR %.2f dB  SSIM %.3f", name, values["mae_hu"], values["psnr_db"],
                    values["ssim"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
