"""Train and evaluate the low-dose CT denoising bundle on simulated pairs made from real CT.

Pairs: the real scan is the normal-dose target; its low-dose input is simulated with
``medgan.transforms.degradation.SimulateLowDose`` (projection-domain Poisson + electronic noise,
Ram-Lak FBP of the noise; the fast image-domain path, validated against it in docs/simulation.md,
only where ``--fast-sources`` names a source). Sources and held-out regions (never trained on):

- ``abdomen``: ``ct/abdomen_totalsegmentator/example_ct.nii.gz`` (3 mm isotropic, 122 x 101 x 112).
  Slices ``[0, 112 - heldout - gap)`` train; the last ``--heldout-slices`` (default 28) are held out.
- ``head``: ``ct/phantom_head_philips/thin1mm_kernelUB.nii.gz`` (0.45 x 0.45 x 1 mm, 512 x 512 x 100).
  Slices ``[0, 100 - 20 - gap)`` train; the last 20 are held out.
- ``j2k``: ``dicom/ct_abdomen_j2k`` (another patient, 20 slices, 0.7 mm pixels): never trained on,
  evaluation only.

Every training source gets one low-dose realisation per ``--dose-fractions`` value (a different
seed each); evaluation uses dose 0.25 with a seed no training pair used.

Commands (the shipped weights; docs/README.md of the bundle has the figures)::

    OMP_NUM_THREADS=1 .venv/bin/python pipelines/train_lowdose_denoising.py train \\
        --output-dir runs/lowdose_wide --threads 1 --install bundles/ct_lowdose_denoising
    OMP_NUM_THREADS=1 .venv/bin/python pipelines/train_lowdose_denoising.py evaluate \\
        --bundle bundles/ct_lowdose_denoising --output-dir runs/lowdose_wide/eval --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from medgan.errors import MedganError
from medgan.utils.atomic import atomic_path

logger = logging.getLogger("medgan.pipelines.train_lowdose_denoising")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "ct_lowdose_denoising"
#: NormalizeHU window of the bundle (network value = (clip(HU) - 1023.5) / 2047.5).
WINDOW_HU = (-1024.0, 3071.0)
VALUE_SCALE = (WINDOW_HU[1] - WINDOW_HU[0]) / 2.0
VALUE_OFFSET = (WINDOW_HU[1] + WINDOW_HU[0]) / 2.0
EVAL_DOSE = 0.25
EVAL_SEED = 250_007
TRAIN_SEED_BASE = 1_000
#: Lesions inserted into training volumes (``--train-lesion-copies`` of each diameter x contrast):
#: other sizes and contrasts than the evaluation's, so the evaluation does not test memorised spheres.
TRAIN_LESION_DIAMETERS_MM = (4.0, 6.0, 8.0)
TRAIN_LESION_CONTRASTS_HU = (-60.0, -30.0, -15.0, 15.0, 30.0, 60.0)


@dataclass(frozen=True)
class Source:
    """A real CT and its held-out slab (the last ``heldout_slices`` slices; ``gap_slices`` before them unused)."""

    name: str
    path: str
    heldout_slices: int
    gap_slices: int
    trains: bool


SOURCES: Dict[str, Source] = {
    "abdomen": Source("abdomen", "ct/abdomen_totalsegmentator/example_ct.nii.gz", 28, 4, True),
    "head": Source("head", "ct/phantom_head_philips/thin1mm_kernelUB.nii.gz", 20, 4, True),
    "j2k": Source("j2k", "dicom/ct_abdomen_j2k", 20, 0, False),
}


def load_hu(data_root: Path, source: Source):
    """The real CT as a float32 ``MetaTensor`` ``(X, Y, Z)`` in HU."""
    from medgan.io import load_volume

    image = load_volume(data_root / source.path)
    return image.float()


def simulate(image, dose_fraction: float, seed: int, fast: bool, threads: int) -> np.ndarray:
    """Low-dose version of ``image`` (``MetaTensor`` ``(X, Y, Z)`` HU) as float32 ``(X, Y, Z)``."""
    from medgan.transforms.degradation import SimulateLowDose

    low = SimulateLowDose(dose_fraction, seed=seed, fast=fast, num_threads=threads)(image)
    return low.numpy().astype(np.float32)


def clip_hu(volume_hu: np.ndarray) -> np.ndarray:
    """HU clipped to the bundle's window (its ``NormalizeHU(clip=True)``); network value = (HU - offset) / scale."""
    return np.clip(volume_hu, *WINDOW_HU).astype(np.float32)


def with_training_lesions(image, source: Source, copies: int, seed: int):
    """``image`` with random spherical lesions in the soft tissue of its training slices only.

    Returns the lesioned ``MetaTensor`` (HU), its array and the lesions. Lesions are placed at least one
    largest diameter below the first excluded slice, so no lesion reaches the gap or the held-out slab.
    """
    from monai.data import MetaTensor

    from medgan.metrics.lesions import insert_lesions, place_lesions

    spacing = [float(v) for v in np.linalg.norm(image.affine[:3, :3].numpy(), axis=0)]
    depth = image.shape[2]
    margin = int(np.ceil(max(TRAIN_LESION_DIAMETERS_MM) / spacing[2]))
    allowed = np.zeros(image.shape, dtype=bool)
    allowed[:, :, :max(0, depth - source.heldout_slices - source.gap_slices - margin)] = True
    lesions = place_lesions(image.numpy(), spacing, TRAIN_LESION_DIAMETERS_MM, TRAIN_LESION_CONTRASTS_HU,
                            mask=allowed, copies=copies, seed=seed)
    lesioned = insert_lesions(image.numpy(), spacing, lesions)
    return MetaTensor(torch.from_numpy(lesioned), affine=image.affine, meta=dict(image.meta)), lesioned, lesions


def training_cases(args: argparse.Namespace) -> Tuple[List[dict], List[dict], Dict[str, object]]:
    """Training cases (one per source and dose) and the held-out abdomen slab at dose 0.25 for validation."""
    from medgan.engines.volumes import split_paired_volume

    train: List[dict] = []
    held: List[dict] = []
    record: Dict[str, object] = {}
    for name in args.sources:
        source = SOURCES[name]
        if not source.trains:
            raise MedganError(f"source {name} is evaluation-only", fix=f"train on {[s for s in SOURCES if SOURCES[s].trains]}")
        image = load_hu(args.data_root, source)
        normal = image.numpy()
        fast = name in args.fast_sources
        for index, dose in enumerate(args.dose_fractions):
            seed = TRAIN_SEED_BASE + 100 * list(SOURCES).index(name) + index
            start = time.time()
            case_image, case_normal, lesions = image, normal, []
            if args.train_lesion_copies:  # into the normal dose (the target), then the low dose made from it
                case_image, case_normal, lesions = with_training_lesions(image, source, args.train_lesion_copies, seed)
            low = simulate(case_image, dose, seed, fast, args.threads)
            logger.info("%s: dose %.3g (seed %d, %s path) in %.1f s", name, dose, seed,
                        "fast" if fast else "projection", time.time() - start)
            cases, _, ranges = split_paired_volume(clip_hu(low), clip_hu(case_normal), source.heldout_slices,
                                                   source.gap_slices, value_scale=VALUE_SCALE,
                                                   value_offset=VALUE_OFFSET)
            train += cases
            record[f"{name}_dose{dose:g}"] = {"seed": seed, "fast": fast, "train_z": list(ranges["train_z"]),
                                              "heldout_z": list(ranges["heldout_z"]),
                                              "lesions": [lesion.as_dict() for lesion in lesions]}
            if any(lesion.centre_vox[2] >= ranges["train_z"][1] for lesion in lesions):
                raise MedganError(f"a training lesion of {name} lies outside its training slices {ranges['train_z']}")
        if name == "abdomen":
            low = simulate(image, EVAL_DOSE, EVAL_SEED, False, args.threads)
            _, held, _ = split_paired_volume(clip_hu(low), clip_hu(normal), source.heldout_slices,
                                             source.gap_slices, value_scale=VALUE_SCALE, value_offset=VALUE_OFFSET)
    return train, held, record


def install(generator_path: Path, bundle_dir: Path) -> str:
    """Copy the trained generator into ``bundle_dir/models/model.pt`` and record its sha256 in metadata.json."""
    from medgan.bundle import load_state_dict, save_state_dict

    digest = save_state_dict(load_state_dict(generator_path), bundle_dir / "models" / "model.pt")
    metadata_path = bundle_dir / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    metadata["medgan"]["weights_sha256"] = digest
    with atomic_path(metadata_path) as tmp:
        tmp.write_text(json.dumps(metadata, indent=4) + "\n", encoding="utf-8")
    logger.info("installed %s into %s (sha256 %s)", generator_path, bundle_dir, digest)
    return digest


def train(args: argparse.Namespace) -> int:
    from medgan.engines.train import train_paired

    torch.set_num_threads(args.threads)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    train_cases, held, record = training_cases(args)
    start = time.time()
    result = train_paired(
        train_cases, held, args.output_dir, iterations=args.iterations, patch_size_vox=args.patch,
        batch_size=args.batch_size, generator_filters=args.filters, generator_norm=args.norm,
        discriminator_channels=args.discriminator_channels,
        adversarial_weight=args.adversarial_weight, l1_weight=args.l1_weight, learning_rate=args.learning_rate,
        ema_decay=args.ema_decay, weight_key="body_mask", value_scale=VALUE_SCALE, value_offset=VALUE_OFFSET,
        data_range=WINDOW_HU[1] - WINDOW_HU[0], window=(-160.0, 240.0), diff_range=100.0,
        validate_every=args.validate_every, checkpoint_every=args.validate_every, epoch_length=args.validate_every,
        precision=args.precision, device=args.device, seed=args.seed, progress=False, log_every=10)
    minutes = (time.time() - start) / 60.0
    summary = {"iterations": result["iterations"], "train_minutes": round(minutes, 2), "pairs": record,
               "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"},
               "validation": {k: float(v) for k, v in result["validation"].items()}}
    with atomic_path(args.output_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    logger.info("trained %d iterations in %.1f min; validation %s", result["iterations"], minutes, summary["validation"])
    if args.install is not None:
        install(result["generator_path"], args.install)
    return 0


# ----------------------------------------------------------------------------------------------- evaluation

LESION_DIAMETERS_MM = (3.0, 5.0, 10.0)
LESION_CONTRASTS_HU = (-100.0, -20.0, -10.0, 10.0, 20.0, 100.0)


def heldout_slab(image, source: Source):
    """The held-out slab of ``image`` (last ``heldout_slices`` slices) with its own affine, float32 HU."""
    from monai.data import MetaTensor

    first = image.shape[2] - source.heldout_slices
    affine = image.affine.clone().double()
    affine[:3, 3] += affine[:3, 2] * first
    return MetaTensor(image[:, :, first:].as_tensor().clone().float(), affine=affine,
                      meta={"filename_or_obj": f"{source.path} slices {first}-{image.shape[2] - 1}"}), first


def predict(bundle, volume) -> np.ndarray:
    """The bundle's preprocessing -> sliding window -> postprocessing on a ``MetaTensor`` (what ``medgan run`` does)."""
    from medgan.inferers import predict_volume

    data = bundle.preprocessing({"image": volume})
    data["pred"] = predict_volume(bundle.network, data["image"], bundle.inferer, bundle.precision)
    return bundle.postprocessing(data)["pred"][0].numpy().astype(np.float32)


def quality(image: np.ndarray, normal: np.ndarray, spacing: Sequence[float], mask: np.ndarray,
            rois: list, roi_vox: int, repeat: Optional[np.ndarray] = None, repeat_roi_vox: int = 32
            ) -> Dict[str, float]:
    """Reference metrics (ldct-abdomen, raw in the body) and physics quality (noise SD, NPS) of one image.

    ``repeat``: the same method's output for a second low-dose realisation (another noise seed); the NPS
    of ``(image - repeat) / sqrt(2)`` over ``repeat_roi_vox`` ROIs tiling the eroded body is then the
    method's noise alone, free of anatomy and of its bias (the repeated-scan NPS of CT physics).
    """
    from medgan.metrics import evaluate_pair
    from medgan.metrics.image_quality import noise_power_spectrum, noise_sd

    ldct = evaluate_pair(image, normal, "ldct-abdomen")
    raw = evaluate_pair(image, normal, "raw", mask=mask)
    nps = noise_power_spectrum(image, spacing, rois=rois, roi_size_vox=roi_vox)
    error_nps = None if image is normal else noise_power_spectrum(image, spacing, roi_size_vox=roi_vox, second=normal,
                                                                  mask=mask)
    noise_nps, noise_sd_two = None, float("nan")
    if repeat is not None:
        inner = noise_region(mask)
        noise_nps = noise_power_spectrum(image, spacing, roi_size_vox=repeat_roi_vox, second=repeat, mask=inner)
        noise_sd_two = repeat_noise_sd(image, repeat, inner)
    return {"ldct_psnr_db": ldct["psnr_db"], "ldct_ssim": ldct["ssim"], "ldct_rmse_hu": ldct["rmse_hu"],
            "repeat_nps_peak_per_mm": float("nan") if noise_nps is None else noise_nps["peak_frequency_per_mm"],
            "repeat_nps_mean_per_mm": float("nan") if noise_nps is None else noise_nps["mean_frequency_per_mm"],
            "repeat_noise_sd_hu": noise_sd_two,
            "raw_psnr_db": raw["psnr_db"], "raw_rmse_hu": raw["rmse_hu"], "raw_mae_hu": raw["mae_hu"],
            "raw_ssim": raw["ssim"],
            "noise_sd_hu": noise_sd(image, spacing, mask=mask)["noise_sd_hu"],
            "nps_peak_per_mm": nps["peak_frequency_per_mm"], "nps_mean_per_mm": nps["mean_frequency_per_mm"],
            "nps_peak_hu2mm2": float(np.max(nps["nps_radial_hu2mm2"])),
            "error_nps_peak_per_mm": float("nan") if error_nps is None else error_nps["peak_frequency_per_mm"],
            "error_nps_mean_per_mm": float("nan") if error_nps is None else error_nps["mean_frequency_per_mm"]}


def baseline_filters(spacing: Sequence[float], noise_hu: float):
    """``name -> (strength -> filtered image function, (low, high) strength range, parameter name)``."""
    from medgan.metrics import baselines

    pixel = float(spacing[0])
    return {
        "gaussian": (lambda low, x: baselines.gaussian_denoise(low, spacing, sigma_mm=x * pixel),
                     (0.2, 4.0), "sigma (pixels)"),
        "bilateral": (lambda low, x: baselines.bilateral_denoise(low, spacing, sigma_spatial_mm=1.5 * pixel,
                                                                 sigma_hu=x * noise_hu), (0.3, 8.0),
                      "sigma_hu / input noise SD (spatial sigma 1.5 pixels)"),
        "nlm": (lambda low, x: baselines.nlm_denoise(low, h_factor=x, noise_sd_hu=noise_hu), (0.2, 3.0),
                "h / input noise SD"),
    }


def noise_region(body: np.ndarray) -> np.ndarray:
    """The body eroded by 3 voxels: where the noise of two realisations is measured (no body outline)."""
    from scipy import ndimage

    return ndimage.binary_erosion(body, iterations=3)


def repeat_noise_sd(image: np.ndarray, repeat: np.ndarray, mask: np.ndarray) -> float:
    """Noise SD of a method from its outputs for two noise realisations: SD of ``(image - repeat) / sqrt(2)`` in ``mask``."""
    return float(np.std((image - repeat)[mask] / np.sqrt(2.0)))


def matched_baseline(apply, low: np.ndarray, low_repeat: np.ndarray, bounds: Tuple[float, float], target_sd: float,
                     mask: np.ndarray, steps: int) -> Tuple[float, np.ndarray, np.ndarray, List[tuple]]:
    """Bisection (log scale) of a filter strength so the output's noise SD (from two noise realisations,
    :func:`repeat_noise_sd`) equals ``target_sd``; returns the chosen strength, its image and repeat image,
    and every ``(strength, image, repeat image)`` tried. Matching on the realisation noise, not on a local SD of one image, keeps a
    filter that flattens uniform tissue but leaves blotches (non-local means) from looking quieter than it is."""
    low_s, high_s = bounds
    tried: List[Tuple[float, np.ndarray, np.ndarray, float]] = []
    for _ in range(steps):
        strength = float(np.sqrt(low_s * high_s))
        image, repeat = apply(low, strength), apply(low_repeat, strength)
        sd = repeat_noise_sd(image, repeat, mask)
        tried.append((strength, image, repeat, sd))
        if sd > target_sd:
            low_s = strength
        else:
            high_s = strength
    best = min(tried, key=lambda t: abs(t[3] - target_sd))
    return best[0], best[1], best[2], [t[:3] for t in tried]


def evaluate_source(args: argparse.Namespace, bundle, name: str) -> Dict[str, object]:
    from medgan.io.nifti import write_nifti
    from medgan.metrics import body_mask_from_ct
    from medgan.metrics import lesions as lesion_harness
    from medgan.metrics.baselines import estimate_noise_sd
    from medgan.metrics.image_quality import uniform_rois

    source = SOURCES[name]
    normal_meta, first = heldout_slab(load_hu(args.data_root, source), source)
    low = simulate(normal_meta, EVAL_DOSE, EVAL_SEED, False, args.threads)
    normal = normal_meta.numpy()
    spacing = tuple(float(v) for v in np.linalg.norm(normal_meta.affine.numpy()[:3, :3], axis=0))
    out = args.output_dir / name
    out.mkdir(parents=True, exist_ok=True)
    from monai.data import MetaTensor

    def as_meta(array: np.ndarray) -> MetaTensor:
        return MetaTensor(torch.from_numpy(np.rint(array).astype(np.float32)), affine=normal_meta.affine,
                          meta=dict(normal_meta.meta))

    write_nifti(as_meta(normal), out / "normal.nii.gz", dtype=np.int16)
    write_nifti(as_meta(low), out / "low.nii.gz", dtype=np.int16)
    low = np.rint(low).astype(np.float32)  # what a user's int16 file holds
    start = time.time()
    pred = predict(bundle, as_meta(low))
    seconds = time.time() - start
    write_nifti(as_meta(pred), out / "pred.nii.gz", dtype=np.int16)
    # a second noise realisation of the same dose: every method's noise NPS from the pair of its outputs
    low_repeat = np.rint(simulate(normal_meta, EVAL_DOSE, EVAL_SEED + 1, False, args.threads)).astype(np.float32)
    pred_repeat = predict(bundle, as_meta(low_repeat))
    nps_vox = args.repeat_nps_roi_vox

    mask = body_mask_from_ct(normal)
    roi_vox = args.nps_roi_vox
    rois = uniform_rois(normal, spacing, roi_size_vox=roi_vox, mask=mask)
    if not rois:
        raise MedganError(f"no uniform {roi_vox}-pixel soft-tissue ROI in the held-out slab of {source.path} for the NPS",
                          fix="use --nps-roi-vox with a smaller ROI")
    rows: Dict[str, Dict[str, object]] = {
        "normal dose (reference)": quality(normal, normal, spacing, mask, rois, roi_vox),
        f"low dose {EVAL_DOSE:g} (input)": quality(low, normal, spacing, mask, rois, roi_vox, low_repeat, nps_vox),
        "model": {**quality(pred, normal, spacing, mask, rois, roi_vox, pred_repeat, nps_vox),
                  "seconds": round(seconds, 1)},
    }
    target_sd = float(rows["model"]["repeat_noise_sd_hu"])
    noise_hu = estimate_noise_sd(low)
    images = {"model": pred, "input": low}
    for filter_name, (apply, bounds, parameter) in baseline_filters(spacing, noise_hu).items():
        strength, image, repeat, tried = matched_baseline(apply, low, low_repeat, bounds, target_sd,
                                                          noise_region(mask), args.bisection_steps)
        rows[f"{filter_name} (matched noise)"] = {**quality(image, normal, spacing, mask, rois, roi_vox,
                                                            repeat, nps_vox),
                                                  "parameter": parameter, "strength": round(strength, 3)}
        images[f"{filter_name} (matched noise)"] = image
        from medgan.metrics import evaluate_pair

        best = max(tried, key=lambda t: evaluate_pair(t[1], normal, "ldct-abdomen")["psnr_db"])
        rows[f"{filter_name} (best PSNR of those tried)"] = {**quality(best[1], normal, spacing, mask, rois, roi_vox,
                                                                       best[2], nps_vox),
                                                             "parameter": parameter, "strength": round(best[0], 3)}
        logger.info("%s: %s matched at %.3g, best PSNR at %.3g", name, filter_name, strength, best[0])
    result: Dict[str, object] = {"source": source.path, "heldout_slices": [first, first + source.heldout_slices - 1],
                                 "spacing_mm": spacing, "dose_fraction": EVAL_DOSE, "seed": EVAL_SEED,
                                 "nps_roi_vox": roi_vox, "nps_rois": len(rois), "repeat_nps_roi_vox": nps_vox,
                                 "repeat_seed": EVAL_SEED + 1, "overrides": bundle.parameters["overrides"], "methods": rows}
    if name in args.lesion_sources:
        # a thin slab (the head's 20 slices of 1 mm) cannot keep a whole diameter from its faces: a radius
        diameters = tuple(args.lesion_diameters)
        border = None if spacing[2] * normal.shape[2] > 4 * max(diameters) else 0.5 * max(diameters)
        lesions = lesion_harness.place_lesions(normal, spacing, diameters, LESION_CONTRASTS_HU, mask=mask,
                                               copies=args.lesion_copies, seed=args.seed, border_mm=border)
        normal_with = lesion_harness.insert_lesions(normal, spacing, lesions)
        low_with = np.rint(normal_with + (low - normal))  # the same noise realisation (the lesions' effect on counts < 0.1 %)
        pred_with = predict(bundle, as_meta(low_with))
        write_nifti(as_meta(low_with), out / "low_with_lesions.nii.gz", dtype=np.int16)
        write_nifti(as_meta(pred_with), out / "pred_with_lesions.nii.gz", dtype=np.int16)
        best_baseline = max((k for k in rows if k.endswith("(matched noise)")), key=lambda k: rows[k]["ldct_psnr_db"])
        filter_name = best_baseline.split(" ")[0]
        apply = baseline_filters(spacing, noise_hu)[filter_name][0]
        strength = float(rows[best_baseline]["strength"])
        with_images = {"model": pred_with, "input": low_with, best_baseline: apply(low_with, strength)}
        result["lesions"] = {
            method: lesion_harness.measure_lesions(with_images[method], images[method], lesions, spacing)
            for method in with_images}
        result["spurious"] = {method: lesion_harness.spurious_structure(images[method], normal, spacing, mask=mask)
                              for method in with_images}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def evaluate(args: argparse.Namespace) -> int:
    from medgan.bundle.loading import open_bundle

    torch.set_num_threads(args.threads)
    from medgan.cli.bundle_commands import parse_overrides

    bundle = open_bundle(args.bundle, device=args.device, overrides=parse_overrides(args.override))
    results: Dict[str, Dict[str, object]] = {}
    for name in args.sources:  # the files are rewritten after each source, so partial results are kept
        results[name] = evaluate_source(args, bundle, name)
        with atomic_path(args.output_dir / "metrics.json") as tmp:
            tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        with atomic_path(args.output_dir / "tables.md") as tmp:
            tmp.write_text(markdown_tables(results), encoding="utf-8")
    logger.info("wrote %s", args.output_dir / "tables.md")
    return 0


def markdown_tables(results: Dict[str, Dict[str, object]]) -> str:
    """The docs tables: metrics per method and source, lesions and spurious structure."""
    lines: List[str] = []
    for name, result in results.items():
        z0, z1 = result["heldout_slices"]
        lines += [f"### {name}: {result['source']}, held-out slices {z0}-{z1}, dose {result['dose_fraction']}",
                  "", "| method | PSNR ldct-abdomen (dB) | SSIM ldct-abdomen | RMSE (HU) | PSNR raw body (dB) | "
                  "SSIM raw | noise SD (HU) | NPS peak (1/mm) | NPS mean f (1/mm) | NPS peak value (HU²mm²) | "
                  "error NPS peak / mean f (1/mm) | noise NPS peak / mean f (1/mm), two realisations | "
                  "noise SD (HU), two realisations | setting |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for method, m in result["methods"].items():
            setting = f"{m['parameter']} = {m['strength']}" if "strength" in m else ""
            lines.append(f"| {method} | {m['ldct_psnr_db']:.2f} | {m['ldct_ssim']:.4f} | {m['ldct_rmse_hu']:.1f} | "
                         f"{m['raw_psnr_db']:.2f} | {m['raw_ssim']:.4f} | {m['noise_sd_hu']:.1f} | "
                         f"{m['nps_peak_per_mm']:.3f} | {m['nps_mean_per_mm']:.3f} | {m['nps_peak_hu2mm2']:.1f} | "
                         f"{m['error_nps_peak_per_mm']:.3f} / {m['error_nps_mean_per_mm']:.3f} | "
                         f"{m.get('repeat_nps_peak_per_mm', float('nan')):.3f} / "
                         f"{m.get('repeat_nps_mean_per_mm', float('nan')):.3f} | "
                         f"{m.get('repeat_noise_sd_hu', float('nan')):.1f} | {setting} |")
        lines.append("")
        if "lesions" in result:
            lines += [f"Lesions ({name}): contrast retained (mean over copies) and CNR", "",
                      "| method | diameter (mm) | contrast (HU) | inserted (HU, partial volume) | retained | CNR |",
                      "|---|---|---|---|---|---|"]
            for method, rows in result["lesions"].items():
                groups: Dict[Tuple[float, float], List[dict]] = {}
                for row in rows:
                    groups.setdefault((row["diameter_mm"], row["contrast_hu"]), []).append(row)
                for (diameter, contrast), group in sorted(groups.items()):
                    lines.append(f"| {method} | {diameter:g} | {contrast:+g} | "
                                 f"{np.mean([g['inserted_hu'] for g in group]):.1f} | "
                                 f"{np.mean([g['retained'] for g in group]):.2f} | "
                                 f"{np.mean([g['cnr'] for g in group]):.2f} |")
            lines += ["", f"Spurious structure ({name}, lesion-free, 5 mm balls in soft tissue)", "",
                      "| method | p99 abs (HU) | max abs (HU) | fraction > 20 HU |", "|---|---|---|---|"]
            for method, s in result["spurious"].items():
                lines.append(f"| {method} | {s['p99_abs_hu']:.1f} | {s['max_abs_hu']:.1f} | "
                             f"{s['fraction_above_threshold']:.4f} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="simulate pairs and train (optionally install the weights into the bundle)")
    tr.add_argument("--data-root", type=Path, default=DATA)
    tr.add_argument("--output-dir", type=Path, required=True)
    tr.add_argument("--sources", nargs="+", default=["abdomen", "head"], choices=[s for s in SOURCES if SOURCES[s].trains])
    tr.add_argument("--fast-sources", nargs="*", default=["head"], help="sources whose pairs use the fast path")
    tr.add_argument("--dose-fractions", type=float, nargs="+", default=[0.1, 0.15, 0.2, 0.25, 0.35, 0.5])
    tr.add_argument("--train-lesion-copies", type=int, default=0,
                    help="insert this many lesions of each training diameter x contrast into every training volume "
                         "(before the low dose is simulated; training slices only)")
    tr.add_argument("--iterations", type=int, default=2000)
    tr.add_argument("--patch", type=int, nargs=3, default=(48, 48, 16))
    tr.add_argument("--batch-size", type=int, default=4)
    tr.add_argument("--filters", type=int, nargs="+", default=(16, 32, 64))
    tr.add_argument("--norm", default="instance", choices=["instance", "batch"],
                    help="generator normalisation: batch makes the sliding-window output independent of the window layout")
    tr.add_argument("--discriminator-channels", type=int, default=16)
    tr.add_argument("--adversarial-weight", type=float, default=1.0)
    tr.add_argument("--l1-weight", type=float, default=100.0)
    tr.add_argument("--learning-rate", type=float, default=1e-3)
    tr.add_argument("--ema-decay", type=float, default=0.99)
    tr.add_argument("--validate-every", type=int, default=250)
    tr.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    tr.add_argument("--device", default="auto")
    tr.add_argument("--threads", type=int, default=1)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--install", type=Path, default=None, help="bundle folder to install the weights into")
    tr.set_defaults(func=train)
    ev = sub.add_parser("evaluate", help="held-out metrics: model vs input vs baselines at matched noise, lesions")
    ev.add_argument("--data-root", type=Path, default=DATA)
    ev.add_argument("--bundle", type=Path, default=BUNDLE)
    ev.add_argument("--output-dir", type=Path, required=True)
    ev.add_argument("--sources", nargs="+", default=["abdomen", "head", "j2k"], choices=list(SOURCES))
    ev.add_argument("--lesion-sources", nargs="*", default=["abdomen", "head"], choices=list(SOURCES))
    ev.add_argument("--lesion-copies", type=int, default=2)
    ev.add_argument("--lesion-diameters", type=float, nargs="+", default=list(LESION_DIAMETERS_MM),
                    help="lesion diameters (mm); a thin slab with little uniform tissue takes only small ones")
    ev.add_argument("--bisection-steps", type=int, default=6)
    ev.add_argument("--nps-roi-vox", type=int, default=16, help="NPS ROI side (pixels)")
    ev.add_argument("--repeat-nps-roi-vox", type=int, default=32,
                    help="ROI side (pixels) of the noise NPS from two noise realisations")
    ev.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="set an inference.yaml setting for the evaluation (as medgan run --override)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--threads", type=int, default=1)
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(func=evaluate)
    ins = sub.add_parser("install", help="copy a run's generator.pt into the bundle and record its sha256")
    ins.add_argument("generator", type=Path)
    ins.add_argument("--bundle", type=Path, default=BUNDLE)
    ins.set_defaults(func=lambda a: 0 if install(a.generator, a.bundle) else 1)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except MedganError as err:
        logger.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
