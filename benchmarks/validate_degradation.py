"""Validation figures of the degradation simulators on the real data (the tables of docs/simulation.md).

    .venv/bin/python benchmarks/validate_degradation.py [--data-root ../shared/data] [--only lowdose kernel thick]

- low dose: noise SD of (low - normal) in soft tissue at dose 0.5/0.25/0.1, its 1/sqrt(dose)
  scaling, mean HU shift in tissue ROIs, NPS shape, fast path vs projection path; abdominal CT
  (every 4th slice of the 3 mm volume) and the head phantom (4 slices, 0.45 mm pixels);
- kernels: noise (adjacent-slice differences in uniform tissue) and 10-90% edge width of the
  outer edge for the real UB/YA pair and for simulated pairs made from UB;
- thick slices: simulated 5 mm from thin UB vs the scanner's 5 mm, per profile.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from medgan.transforms.degradation.kernel import KernelParameters, simulate_kernel
from medgan.transforms.degradation.lowdose import LowDoseParameters, simulate_low_dose, simulate_low_dose_fast
from medgan.transforms.degradation.measure import (
    edge_width_10_90,
    radial_nps,
    slice_difference_noise_sd,
    tissue_mask,
)
from medgan.transforms.degradation.thick_slice import PROFILES, ThickSliceParameters, simulate_thick_slices

ABDOMEN = "ct/abdomen_totalsegmentator/example_ct.nii.gz"
HEAD = "ct/phantom_head_philips/"


def _load(path: Path):
    image = nib.load(str(path))
    return np.asarray(image.dataobj, dtype=np.float32), image.affine, float(image.header.get_zooms()[0])


def lowdose(root: Path) -> None:
    abdomen = _load(root / ABDOMEN)
    head = _load(root / HEAD / "thin1mm_kernelUB.nii.gz")
    for name, (hu, _, pixel), slices, erosion in (("abdomen 3 mm", abdomen, slice(None, None, 4), 1),
                                                  ("head 0.45 mm", head, slice(48, 52), 3)):
        hu = hu[:, :, slices]
        tissue = tissue_mask(hu, 0.0, 100.0, erosion)
        fat = tissue_mask(hu, -150.0, -50.0, erosion)
        roi = 32 if pixel > 1 else 64  # NPS over the whole field of view (FBP noise fills it)
        rows = {}
        for dose in (0.5, 0.25, 0.1):
            start = time.perf_counter()
            noise = simulate_low_dose(hu, pixel, LowDoseParameters(dose, seed=11)) - hu
            freqs, nps = radial_nps(noise, pixel, roi_px=roi, n_bins=8)
            rows[dose] = {"sd_tissue_hu": float(noise[tissue].std()),
                          "sd_x_sqrt_dose": float(noise[tissue].std() * np.sqrt(dose)),
                          "mean_shift_tissue_hu": float(noise[tissue].mean()),
                          "mean_shift_fat_hu": float(noise[fat].mean()) if fat.sum() > 1000 else None,
                          "nps_lowest_over_peak": float(nps[0] / nps.max()),
                          "nps_per_peak": [round(float(v), 2) for v in nps / nps.max()],
                          "nps_peak_per_mm": float(freqs[np.argmax(nps)]),
                          "seconds": round(time.perf_counter() - start, 1)}
            if dose == 0.25:
                fast = simulate_low_dose_fast(hu, pixel, LowDoseParameters(dose, seed=5)) - hu
                _, nps_fast = radial_nps(fast, pixel, roi_px=roi, n_bins=8)
                rows["fast_0.25"] = {"sd_tissue_hu": float(fast[tissue].std()),
                                     "sd_ratio_fast_over_projection": float(fast[tissue].std() / noise[tissue].std()),
                                     "nps_peak_per_mm": float(freqs[np.argmax(nps_fast)]),
                                     "nps_max_abs_difference_rel_peak": float(np.abs(nps_fast - nps).max() / nps.max())}
        print(json.dumps({"lowdose": name, "voxels_tissue": int(tissue.sum()), **{str(k): v for k, v in rows.items()}},
                         indent=1), flush=True)


def kernel(root: Path) -> None:
    ub = _load(root / HEAD / "thin1mm_kernelUB.nii.gz")[0][:, :, 46:52]
    ya = _load(root / HEAD / "thin1mm_kernelYA.nii.gz")[0][:, :, 46:52]
    tissue = tissue_mask(ndimage.uniform_filter(ub, (9, 9, 1)), 0.0, 100.0, 4)

    def measure(image):
        return slice_difference_noise_sd(image, tissue), edge_width_10_90(image, 0.4512)

    noise_ub, edge_ub = measure(ub)
    noise_ya, edge_ya = measure(ya)
    print(json.dumps({"kernel": "real", "UB": [noise_ub, edge_ub], "YA": [noise_ya, edge_ya],
                      "noise_ratio_sharp_over_smooth": noise_ya / noise_ub,
                      "edge_ratio_sharp_over_smooth": edge_ya / edge_ub}), flush=True)
    simulated = {"UB (as is)": ub}
    for name, cutoff in (("hann", 0.5), ("hann", 0.8), ("hamming", 1.0), ("cosine", 1.0), ("shepp-logan", 1.0)):
        simulated[f"{name} {cutoff}"] = simulate_kernel(ub, KernelParameters(name, cutoff))
    for reference, cutoff, gain in (("shepp-logan", 1.0, 3.0), ("cosine", 1.0, 3.0), ("hann", 1.0, 3.0),
                                    ("hann", 0.8, 3.0), ("hann", 0.6, 6.0)):
        simulated[f"ram-lak from {reference} {cutoff} gain {gain}"] = simulate_kernel(
            ub, KernelParameters("ram-lak", 1.0, reference, cutoff, max_gain=gain))
    figures = {name: measure(image) for name, image in simulated.items()}
    names = list(figures)
    best = None
    for i, smooth in enumerate(names):
        for sharp in names[i + 1:]:
            (n_a, e_a), (n_b, e_b) = figures[smooth], figures[sharp]
            if n_b < n_a:
                smooth_, sharp_, (n_a, e_a), (n_b, e_b) = sharp, smooth, (n_b, e_b), (n_a, e_a)
            else:
                smooth_, sharp_ = smooth, sharp
            distance = abs(np.log((n_b / n_a) / (noise_ya / noise_ub))) + abs(np.log((e_b / e_a) / (edge_ya / edge_ub)))
            if best is None or distance < best[0]:
                best = (distance, smooth_, sharp_, n_b / n_a, e_b / e_a)
    for name, (noise, edge) in figures.items():
        print(json.dumps({"kernel": name, "noise_sd_hu": round(noise, 2), "edge_10_90_mm": round(edge, 3)}), flush=True)
    print(json.dumps({"closest_pair": {"smooth": best[1], "sharp": best[2], "noise_ratio": best[3],
                                       "edge_ratio": best[4]}}), flush=True)


def thick(root: Path) -> None:
    thin, thin_affine, _ = _load(root / HEAD / "thin1mm_kernelUB.nii.gz")
    real, real_affine, _ = _load(root / HEAD / "thick5mm_kernelUB.nii.gz")
    head = real > -500.0
    smooth = ndimage.uniform_filter(thin, (9, 9, 1))
    tissue = ndimage.minimum_filter(((smooth >= 0) & (smooth <= 100)).astype(np.uint8), size=(7, 7, 9))
    tissue = tissue.astype(bool)[:, :, 2::5]
    for profile in PROFILES:
        simulated, affine = simulate_thick_slices(thin, thin_affine, ThickSliceParameters(5.0, 5.0, profile))
        difference = simulated - real
        print(json.dumps({"thick": profile, "affine_matches": bool(np.allclose(affine, real_affine, atol=1e-3)),
                          "mae_hu": round(float(np.abs(difference).mean()), 2),
                          "mae_head_hu": round(float(np.abs(difference[head]).mean()), 2),
                          "bias_tissue_hu": round(float(difference[tissue].mean()), 2),
                          "tissue_voxels": int(tissue.sum())}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--only", nargs="+", default=["lowdose", "kernel", "thick"],
                        choices=["lowdose", "kernel", "thick"])
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f}")
    for name in args.only:
        {"lowdose": lowdose, "kernel": kernel, "thick": thick}[name](args.data_root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
