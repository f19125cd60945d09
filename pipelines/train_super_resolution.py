"""Train CT super-resolution (5 mm -> 1 mm slices) on the real Philips head phantom pair and evaluate it.

Data (``--data-dir``): ``thick5mm_kernelUB.nii.gz`` (512 x 512 x 20, 5 mm) and ``thin1mm_kernelUB.nii.gz``
(512 x 512 x 100, 1 mm) of one acquisition; thick slice ``k`` is centred on thin slices ``5k..5k+4``
(checked here from the affines). The network is the bundle's: a residual U-Net on the pre-upsampled
grid (thick slices interpolated to the thin spacing by cubic B-spline with the bundle's own
preprocessing, then corrected), so this script pre-upsamples exactly as ``inference.yaml`` does.

Split along z (thick slice indices; thin slices in brackets):

* training: real thick slices ``0..T-1`` (T = 20 - heldout - gap) with the thin slices between their
  centres as targets, plus simulated thick slices (triangular SSP, the profile that fits this scanner
  best) made from the training thin slices only, at the z-phases the real series does not have;
* gap: ``--gap-thick-slices`` thick slices (and their thin slices) used nowhere;
* held out: the last ``--heldout-thick-slices`` thick slices; metrics use the thin slices from the
  first to the last held-out thick slice centre, none of which was ever a training target or input.

Evaluation (same metric code for the model and the baselines): ``medgan.metrics`` ``raw`` profile
(MAE, PSNR over the stated 4095 HU range) inside the head mask of the target, for the model, cubic
B-spline and windowed-sinc upsampling (``medgan.metrics.baselines.upsample_z``), on (1) the real
5 mm series and (2) 5 mm slices simulated by triangular slab averaging of the held-out thin slices;
plus the slice sensitivity profile (``medgan.metrics.image_quality.slice_sensitivity``) of input,
B-spline, model and target.

Example (the shipped weights; see bundles/ct_super_resolution/docs/README.md):
    OMP_NUM_THREADS=1 .venv/bin/python pipelines/train_super_resolution.py --output-dir runs/sr_5to1 \
        --iterations 1500 --validate-every 500 --threads 1
    .venv/bin/python pipelines/train_super_resolution.py --output-dir runs/sr_5to1 --evaluate-only \
        --weights bundles/ct_super_resolution/models/model.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from monai.data import MetaTensor

from medgan.engines.volumes import threshold_body_mask
from medgan.errors import GeometryMismatchError
from medgan.inferers.sliding_window import make_sliding_window_inferer, predict_volume
from medgan.io.nifti import read_nifti
from medgan.metrics import body_mask_from_ct, evaluate_pair
from medgan.metrics.baselines import upsample_z
from medgan.metrics.image_quality import slice_sensitivity
from medgan.networks import ResidualUNet
from medgan.transforms.degradation.thick_slice import ThickSliceParameters, simulate_thick_slices
from medgan.transforms.intensity.array import DEFAULT_OUTPUT_RANGE, DEFAULT_WINDOW_HU
from medgan.transforms.spatial import preprocessing
from medgan.transforms.spatial.array import DEFAULT_SLAB_VOXELS
from medgan.utils.atomic import atomic_path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct" / "phantom_head_philips"
BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "ct_super_resolution"
#: NormalizeHU's linear map (the bundle's): value = (HU - offset) / scale, window -> output range.
HU_SCALE = (DEFAULT_WINDOW_HU[1] - DEFAULT_WINDOW_HU[0]) / (DEFAULT_OUTPUT_RANGE[1] - DEFAULT_OUTPUT_RANGE[0])
HU_OFFSET = DEFAULT_WINDOW_HU[0] - DEFAULT_OUTPUT_RANGE[0] * HU_SCALE
#: Cubic B-spline (scipy order 3) pre-upsampling in slabs (DEFAULT_SLAB_VOXELS x columns), as in the bundle's
#: inference.yaml (its resample_slab_vox); the slab size does not change the output.
SPLINE_ORDER = 3

logger = logging.getLogger("train_super_resolution")


def pre_upsample(thick, target_spacing_mm: float):
    """The bundle's spatial preprocessing without normalisation: RAS, z resampled to the thin spacing.

    ``(X, Y, Z)`` MetaTensor -> ``(X, Y, (Z - 1) * f + 1)`` float32 MetaTensor in HU (first and last
    slice centres kept, in-plane grid unchanged).
    """
    pre = preprocessing(["image"], pixdim_mm=(0.0, 0.0, target_spacing_mm), image_mode=SPLINE_ORDER,
                        padding_mode="nearest", slab_voxels=DEFAULT_SLAB_VOXELS)
    return pre({"image": thick})["image"][0]


def to_ras(volume):
    """Reorient ``(X, Y, Z)`` to RAS (the working orientation), keeping the grid."""
    return preprocessing(["image"], pixdim_mm=None)({"image": volume})["image"][0]


def slice_offset(grid_affine: np.ndarray, thin_affine: np.ndarray, tol_mm: float = 1e-3) -> int:
    """Index of the thin slice at the grid's first slice; the grids must coincide voxel for voxel.

    Raises:
        GeometryMismatchError: different in-plane grids or slice spacing, or a non-integer z offset.
    """
    grid, thin = np.asarray(grid_affine, dtype=np.float64), np.asarray(thin_affine, dtype=np.float64)
    if not np.allclose(grid[:3, :3], thin[:3, :3], atol=tol_mm):
        raise GeometryMismatchError(
            "the upsampled grid and the thin volume have different voxel axes",
            fix="give a thin series with the thick series' in-plane grid and the target spacing")
    offset = (np.linalg.inv(thin) @ grid[:, 3])[:3]
    if np.abs(offset[:2]).max() > tol_mm or abs(offset[2] - round(offset[2])) > 1e-3:
        raise GeometryMismatchError(f"the thin slices do not fall on the upsampled grid (offset {offset} voxels)",
                                    fix="check that the thick slices are centred on thin slices")
    return int(round(offset[2]))


def check_pair_geometry(thick, thin, ratio: int) -> Dict[str, float]:
    """Check that thick slice ``k`` is centred on thin slices ``ratio k .. ratio k + ratio - 1``.

    Returns the z offset (thin voxels) of the first thick centre and the MAE (HU) between each thick
    slice and the plain mean of its thin slices.
    """
    thin_affine, thick_affine = (np.asarray(v.affine, dtype=np.float64) for v in (thin, thick))
    offset = (np.linalg.inv(thin_affine) @ thick_affine[:, 3])[2]
    expected = (ratio - 1) / 2.0
    if abs(offset - expected) > 1e-3:
        raise GeometryMismatchError(f"first thick slice centre at thin voxel {offset:.3f}, expected {expected}",
                                    fix="this pipeline expects thick slices averaging consecutive thin slices")
    t = thick.numpy().astype(np.float32)
    s = thin.numpy().astype(np.float32)
    n = min(t.shape[2], s.shape[2] // ratio)
    slab = s[:, :, : n * ratio].reshape(s.shape[0], s.shape[1], n, ratio).mean(axis=3)
    return {"first_centre_thin_vox": float(offset), "slab_mean_mae_hu": float(np.abs(slab - t[:, :, :n]).mean())}


def _scaled(volume_hu: np.ndarray) -> torch.Tensor:
    clipped = np.clip(volume_hu, DEFAULT_WINDOW_HU[0], DEFAULT_WINDOW_HU[1])
    return torch.from_numpy(((clipped - HU_OFFSET) / HU_SCALE).astype(np.float32))[None]


def make_case(source_hu: np.ndarray, target_hu: np.ndarray, margin_vox: int = 8) -> Dict[str, torch.Tensor]:
    """A training/validation case on one grid, cropped in plane to the head, in network units."""
    mask = threshold_body_mask(target_hu)
    region = head_box(target_hu, margin_vox)
    return {"source": _scaled(source_hu[region]), "target": _scaled(target_hu[region]),
            "body_mask": torch.from_numpy(mask[region].astype(np.float32))[None]}


def aligned_case(thick, thin_ras, target_spacing_mm: float, thin_range: Tuple[int, int]) -> Dict[str, torch.Tensor]:
    """Pre-upsample ``thick`` and pair it with the thin slices on its grid, all inside ``thin_range``."""
    source = pre_upsample(thick, target_spacing_mm)
    first = slice_offset(source.affine.numpy(), thin_ras.affine.numpy())
    last = first + source.shape[2]
    if first < thin_range[0] or last > thin_range[1]:
        raise ValueError(f"case covers thin slices {first}..{last - 1}, outside the allowed {thin_range}")
    target = thin_ras.numpy().astype(np.float32)[:, :, first:last]
    return make_case(source.numpy(), target)


def sub_volume(volume, start: int, stop: int, x: slice = slice(None), y: slice = slice(None)):
    """Voxels ``[x, y, start:stop]`` as a float32 MetaTensor with the matching affine."""
    affine = np.asarray(volume.affine, dtype=np.float64).copy()
    corner = [x.start or 0, y.start or 0, start]
    affine[:3, 3] = affine[:3, :3] @ np.asarray(corner, dtype=np.float64) + affine[:3, 3]
    data = torch.as_tensor(np.ascontiguousarray(volume.numpy()[x, y, start:stop]).astype(np.float32))
    return MetaTensor(data, affine=torch.from_numpy(affine))


def head_box(volume_hu: np.ndarray, margin_vox: int = 8) -> Tuple[slice, slice]:
    """In-plane bounding box of the head over all slices (+ margin). Cropping to it before the
    pre-upsampling changes no value (the spline interpolates; in-plane voxels stay on the grid)."""
    mask = threshold_body_mask(np.asarray(volume_hu, dtype=np.float32)).any(axis=2)
    xs, ys = np.where(mask)
    return (slice(max(int(xs.min()) - margin_vox, 0), min(int(xs.max()) + margin_vox + 1, mask.shape[0])),
            slice(max(int(ys.min()) - margin_vox, 0), min(int(ys.max()) + margin_vox + 1, mask.shape[1])))


def simulated_thick(thin, start: int, stop: int, thickness_mm: float, profile: str):
    """Thick slices simulated from thin slices ``start:stop`` (MetaTensor with the thick affine)."""
    part = sub_volume(thin, start, stop)
    thick, affine = simulate_thick_slices(part.numpy(), part.affine.numpy(),
                                          ThickSliceParameters(thickness_mm=thickness_mm, profile=profile))
    return MetaTensor(torch.from_numpy(thick), affine=torch.from_numpy(affine))


def build_split(thick, thin, ratio: int, heldout_thick: int, gap_thick: int,
                simulated_phases: Sequence[int], profile: str) -> Tuple[List[dict], List[dict], Dict[str, object]]:
    """Training and validation cases from one real pair (see the module docstring for the split)."""
    target_spacing = float(np.linalg.norm(np.asarray(thin.affine)[:3, 2]))
    thickness = float(np.linalg.norm(np.asarray(thick.affine)[:3, 2]))
    n_thick = thick.shape[2]
    n_train = n_thick - heldout_thick - gap_thick
    if n_train < 4:
        raise ValueError(f"only {n_train} training thick slices left")
    thin_train_end = ratio * n_train  # thin slices 0 .. ratio * n_train - 1 feed the training thick slices
    x, y = head_box(thin.numpy())
    thick = sub_volume(thick, 0, n_thick, x, y)
    thin = sub_volume(thin, 0, thin.shape[2], x, y)
    thin_ras = to_ras(thin)
    train = [aligned_case(sub_volume(thick, 0, n_train), thin_ras, target_spacing, (0, thin_train_end))]
    for phase in simulated_phases:
        sim = simulated_thick(thin, phase, thin_train_end, thickness, profile)
        train.append(aligned_case(sim, thin_ras, target_spacing, (0, thin_train_end)))
    first_held = n_thick - heldout_thick
    # validation: the held-out thick slices with two thick slices of context before them
    val_source = pre_upsample(sub_volume(thick, first_held - 2, n_thick), target_spacing)
    first = slice_offset(val_source.affine.numpy(), thin_ras.affine.numpy())
    val = [make_case(val_source.numpy(), thin_ras.numpy().astype(np.float32)[:, :, first:first + val_source.shape[2]])]
    ranges = {"train_thick": (0, n_train), "train_thin": (0, thin_train_end),
              "gap_thick": (n_train, first_held), "heldout_thick": (first_held, n_thick),
              "heldout_thin_eval": (ratio * first_held + ratio // 2, ratio * (n_thick - 1) + ratio // 2 + 1),
              "simulated_phases": list(simulated_phases), "simulated_profile": profile}
    logger.info("split: %s", ranges)
    return train, val, ranges


def infer_hu(network: torch.nn.Module, source_hu: np.ndarray, roi_size_vox: Sequence[int], overlap: float,
             device: str = "cpu") -> np.ndarray:
    """Sliding-window prediction in HU on the pre-upsampled grid (in-plane crop to the head first)."""
    x, y = head_box(source_hu)
    out = source_hu.astype(np.float32).copy()
    inferer = make_sliding_window_inferer(roi_size_vox, overlap=overlap, device=device)
    pred = predict_volume(network, _scaled(source_hu[x, y]), inferer)
    out[x, y] = pred[0].numpy() * HU_SCALE + HU_OFFSET
    return out


def _metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> Dict[str, float]:
    values = evaluate_pair(pred, target, "raw", mask=mask)
    return {key: float(values[key]) for key in ("psnr_db", "mae_hu", "rmse_hu", "ssim")}


def on_thin_slices(volume, thin_ras, lo: int, hi: int) -> np.ndarray:
    """The slices of an upsampled ``volume`` that lie on thin slices ``lo .. hi - 1`` (checked by affine)."""
    first = slice_offset(np.asarray(volume.affine), thin_ras.affine.numpy())
    if lo < first or hi > first + volume.shape[2]:
        raise ValueError(f"volume covers thin slices {first}..{first + volume.shape[2] - 1}, not {lo}..{hi - 1}")
    return np.asarray(volume.numpy() if hasattr(volume, "numpy") else volume)[:, :, lo - first:hi - first]


def evaluate(network: torch.nn.Module, thick, thin, ratio: int, heldout_thick: int, profile: str,
             roi_size_vox: Sequence[int], overlap: float) -> Dict[str, object]:
    """Held-out metrics of model and baselines on the real pair and on slab-averaged held-out thin CT."""
    target_spacing = float(np.linalg.norm(np.asarray(thin.affine)[:3, 2]))
    thickness = float(np.linalg.norm(np.asarray(thick.affine)[:3, 2]))
    n_thick = thick.shape[2]
    first_held = n_thick - heldout_thick
    x, y = head_box(thin.numpy())
    thick = sub_volume(thick, 0, n_thick, x, y)
    thin = sub_volume(thin, 0, thin.shape[2], x, y)
    thin_ras = to_ras(thin)
    thin_np = thin_ras.numpy().astype(np.float32)
    results: Dict[str, object] = {}
    cases = {
        "real_5mm": to_ras(thick),
        # simulated 5 mm from held-out thin slices plus one thick slice of (never-trained) context
        f"slab_{profile}_5mm": simulated_thick(thin, ratio * (first_held - 1), thin.shape[2], thickness, profile),
    }
    for name, thick_ras in cases.items():
        thick_ras = to_ras(thick_ras)
        held_in_case = first_held - (n_thick - thick_ras.shape[2])  # first held-out thick slice of this case
        source = pre_upsample(thick_ras, target_spacing)
        first = slice_offset(source.affine.numpy(), thin_ras.affine.numpy())
        # evaluated thin slices: from the first held-out thick centre to the last thick centre
        lo = ratio * first_held + ratio // 2
        hi = first + source.shape[2]
        target = thin_np[:, :, lo:hi]
        mask = body_mask_from_ct(target)
        start = time.time()
        pred = infer_hu(network, source.numpy(), roi_size_vox, overlap)
        seconds = time.time() - start
        pred_meta = MetaTensor(torch.from_numpy(pred), affine=source.affine)
        bspline = upsample_z(thick_ras, ratio, "bspline")
        # the Welch sinc (radius 3 thick slices) is slow in 3D: it runs on the held-out slices plus 4
        # thick slices of context, which gives the same values on the evaluated slices
        context = max(held_in_case - 4, 0)
        sinc = upsample_z(sub_volume(thick_ras, context, thick_ras.shape[2]), ratio, "windowed_sinc")
        volumes = {"model": pred_meta, "bspline": bspline, "windowed_sinc": sinc, "pre_upsampled_input": source}
        held = {label: on_thin_slices(volume, thin_ras, lo, hi) for label, volume in volumes.items()}
        rows = {label: _metrics(values, target, mask) for label, values in held.items()}
        logger.info("%s metrics: %s", name, json.dumps(rows))
        spacing = (abs(float(thin_ras.affine[0, 0])), abs(float(thin_ras.affine[1, 1])), target_spacing)
        ssp = {}
        # the thick input's SSP over its whole series: 5 held-out thick slices are too few for z profiles
        for label, volume, dz in (("input_thick_whole_series", thick_ras.numpy(), thickness),
                                  ("bspline", held["bspline"], target_spacing),
                                  ("model", held["model"], target_spacing),
                                  ("target", target, target_spacing)):
            value = slice_sensitivity(np.asarray(volume, dtype=np.float32), (spacing[0], spacing[1], dz))
            fwhm = float(value["ssp_fwhm_mm"])
            ssp[label] = {"ssp_fwhm_mm": None if math.isnan(fwhm) else fwhm, "n_profiles": int(value["n_profiles"])}
        results[name] = {"thin_slices": [lo, hi - 1], "mask_voxels": int(mask.sum()), "metrics": rows,
                         "psnr_gain_over_bspline_db": rows["model"]["psnr_db"] - rows["bspline"]["psnr_db"],
                         "ssp": ssp, "inference_seconds": seconds}
        logger.info("%s: %s", name, json.dumps(results[name]))
    return results


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--heldout-thick-slices", type=int, default=5)
    parser.add_argument("--gap-thick-slices", type=int, default=1)
    parser.add_argument("--simulated-phases", type=int, nargs="*", default=(1, 2, 3, 4),
                        help="thin-slice shifts of the simulated thick slices (0 = the real series' phase)")
    parser.add_argument("--profile", default="triangular")
    parser.add_argument("--patch", type=int, nargs=3, default=(32, 32, 32))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--filters", type=int, nargs="+", default=(8, 16, 32))
    parser.add_argument("--discriminator-channels", type=int, default=8)
    parser.add_argument("--adversarial-weight", type=float, default=0.05)
    parser.add_argument("--l1-weight", type=float, default=100.0)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--ema-decay", type=float, default=0.99)
    parser.add_argument("--validate-every", type=int, default=500)
    parser.add_argument("--roi", type=int, nargs=3, default=(96, 96, 32), help="sliding window for evaluation")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evaluate-only", action="store_true", help="skip training, evaluate --weights")
    parser.add_argument("--weights", type=Path, default=None, help="generator weights to evaluate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    thick = read_nifti(args.data_dir / "thick5mm_kernelUB.nii.gz")
    thin = read_nifti(args.data_dir / "thin1mm_kernelUB.nii.gz")
    ratio_f = float(np.linalg.norm(np.asarray(thick.affine)[:3, 2]) / np.linalg.norm(np.asarray(thin.affine)[:3, 2]))
    ratio = int(round(ratio_f))
    if not math.isclose(ratio_f, ratio, abs_tol=1e-3):
        raise GeometryMismatchError(f"thick/thin spacing ratio {ratio_f:.4f} is not an integer",
                                    fix="use a thin series whose spacing divides the thick spacing")
    geometry = check_pair_geometry(thick, thin, ratio)
    logger.info("pair geometry: %s", geometry)
    args.output_dir.mkdir(parents=True, exist_ok=True)

    network = ResidualUNet(1, 1, filters=tuple(args.filters))
    train_seconds = None
    ranges: Dict[str, object] = {}
    if args.evaluate_only:
        from medgan.bundle import load_state_dict

        if args.weights is None:
            parser.error("--evaluate-only needs --weights")
        network.load_state_dict(load_state_dict(args.weights))
    else:
        from medgan.engines.train import train_paired

        train, val, ranges = build_split(thick, thin, ratio, args.heldout_thick_slices, args.gap_thick_slices,
                                         args.simulated_phases, args.profile)
        start = time.time()
        result = train_paired(
            train, val, args.output_dir, iterations=args.iterations, patch_size_vox=args.patch,
            batch_size=args.batch_size, generator_filters=args.filters,
            discriminator_channels=args.discriminator_channels, adversarial_weight=args.adversarial_weight,
            l1_weight=args.l1_weight, learning_rate=args.learning_rate, ema_decay=args.ema_decay,
            weight_key="body_mask", value_scale=HU_SCALE, value_offset=HU_OFFSET, data_range=4095.0,
            window=(-200.0, 1500.0), diff_range=200.0, validate_every=args.validate_every,
            checkpoint_every=args.validate_every, epoch_length=args.validate_every, sw_overlap=args.overlap,
            device=args.device, seed=args.seed, progress=False, log_every=10)
        train_seconds = time.time() - start
        network = result["final_generator"].cpu()
    results = evaluate(network, thick, thin, ratio, args.heldout_thick_slices, args.profile, args.roi, args.overlap)
    summary = {"pair_geometry": geometry, "split": ranges, "train_seconds": train_seconds,
               "iterations": args.iterations, "arguments": {k: str(v) for k, v in vars(args).items()},
               "evaluation": results}
    with atomic_path(args.output_dir / "evaluation.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    for name, res in results.items():
        logger.info("%s: PSNR model %.2f dB, B-spline %.2f dB (gain %.2f dB)", name,
                    res["metrics"]["model"]["psnr_db"], res["metrics"]["bspline"]["psnr_db"],
                    res["psnr_gain_over_bspline_db"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
