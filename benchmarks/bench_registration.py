"""Registration accuracy and time on real volumes moved by known transforms.

For each case a real volume (full resolution) is resampled through random rigid or affine transforms
(rotations up to 10 degrees about each axis, shifts up to 20 mm, affine: up to 8 % scaling/shear) and
registered back; the target registration error (TRE) is measured on a 6 mm grid of points inside the
fixed body mask. For the MR <-> CT template pair the reference is the pair's own registration (the two
population templates are not aligned to each other exactly), and the distance of that registration
from the nominal MNI alignment is printed too. Wall and CPU seconds are per registration, inputs at
full resolution (reading excluded).

Usage::

    python benchmarks/bench_registration.py [--data-root ../shared/data] [--seeds 3] [--working-spacing-mm 2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medgan.registration import ImageRegistration, cormack_to_hu
from medgan.registration.evaluation import (
    apply_known_transform,
    body_points,
    random_transform,
    target_registration_error,
)

CASES = {
    # name: (fixed file, moving source file or None (= fixed), mode, affine known transform, min Dice)
    "head MR, rigid": ("mr/head_vs_seg_001/VS-SEG-001_t1_mpr_tra_gk_v4_2.nii.gz", None, "rigid", False, 0.8),
    "head MR, affine": ("mr/head_vs_seg_001/VS-SEG-001_t1_mpr_tra_gk_v4_2.nii.gz", None, "affine", True, 0.8),
    "head CT phantom, rigid": ("ct/phantom_head_philips/thin1mm_kernelUB.nii.gz", None, "rigid", False, 0.8),
    "head CT phantom, affine": ("ct/phantom_head_philips/thin1mm_kernelUB.nii.gz", None, "affine", True, 0.8),
    "MNI T1 <- CT template (MR<->CT), rigid": ("templates_mni/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                                               "templates_mni/scct.nii", "rigid", False, 0.55),
    "head MR, deformable (rigid truth)": ("mr/head_vs_seg_001/VS-SEG-001_t1_mpr_tra_gk_v4_2.nii.gz", None,
                                          "deformable", False, 0.8),
}


def _read(path: Path) -> sitk.Image:
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    if path.name.startswith("scct"):  # Cormack units -> HU
        hu = sitk.GetImageFromArray(cormack_to_hu(sitk.GetArrayViewFromImage(image)))
        hu.CopyInformation(image)
        image = hu
    return image


def _timed(registration: ImageRegistration, fixed: sitk.Image, moving: sitk.Image):
    wall, cpu = time.perf_counter(), time.process_time()
    result = registration(fixed, moving)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("MEDGAN_DATA_ROOT", "../shared/data"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--working-spacing-mm", type=float, default=2.0)
    parser.add_argument("--cases", nargs="*", default=list(CASES), help="subset of case names")
    args = parser.parse_args()
    root = Path(args.data_root)

    print("| case | working spacing (mm) | TRE mean (mm) | TRE max (mm) | wall s / registration | CPU s | "
          "Dice before -> after |")
    print("|---|---|---|---|---|---|---|")
    for name in args.cases:
        fixed_file, source_file, mode, affine, min_dice = CASES[name]
        fixed = _read(root / fixed_file)
        source = _read(root / source_file) if source_file else fixed
        registration = ImageRegistration(mode=mode, working_spacing_mm=args.working_spacing_mm,
                                         min_mask_dice=min_dice)
        reference = sitk.Transform()
        note = ""
        if source_file:
            reference = registration(fixed, source).transform
            nominal = target_registration_error(reference, sitk.Transform(), body_points(fixed, 6.0))
            note = f" (pair's own optimum is {nominal.mean():.2f} mm mean / {nominal.max():.2f} mm max from nominal)"
        centre = fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()])
        points = body_points(fixed, 6.0)
        tre_mean, tre_max, walls, cpus, dice = [], [], [], [], []
        for seed in range(args.seeds):
            known = random_transform(np.random.default_rng(seed), centre, affine=affine)
            moving = apply_known_transform(source, known)
            result, wall, cpu = _timed(registration, fixed, moving)
            expected = sitk.CompositeTransform([known.GetInverse(), reference])
            tre = target_registration_error(result.transform, expected, points)
            tre_mean.append(tre.mean())
            tre_max.append(tre.max())
            walls.append(wall)
            cpus.append(cpu)
            dice.append(f"{result.qc.mask_dice_before:.2f}->{result.qc.mask_dice_after:.2f}")
        print(f"| {name}{note} | {args.working_spacing_mm:g} | {np.mean(tre_mean):.3f} | {np.max(tre_max):.3f} | "
              f"{np.mean(walls):.1f} | {np.mean(cpus):.1f} | {', '.join(dice)} |", flush=True)


if __name__ == "__main__":
    main()
