"""``medgan register``: put a moving image on a fixed image's grid, with quality control."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "register", help="register a moving image onto a fixed image (rigid/affine/deformable) with QC",
        description="Register MOVING onto FIXED and write OUTDIR/registered.nii.gz (moving on the fixed grid), "
        "transform.tfm (fixed -> moving, ITK), qc.json and qc.png. If QC fails nothing is written and the "
        "command exits with an error giving the QC figures.")
    parser.add_argument("--fixed", required=True, help="reference image: NIfTI file or DICOM folder")
    parser.add_argument("--moving", required=True, help="image to align: NIfTI file or DICOM folder")
    parser.add_argument("-o", "--output", required=True, dest="out_dir", help="output folder")
    parser.add_argument("--mode", choices=["rigid", "affine", "deformable"], default="rigid",
                        help="transform model (default: rigid)")
    parser.add_argument("--metric", choices=["mattes", "correlation", "mean_squares"], default="mattes",
                        help="similarity metric; mattes (mutual information) for MR<->CT (default: mattes)")
    parser.add_argument("--working-spacing-mm", type=float, default=None,
                        help="isotropic spacing the optimiser works at (default: the library's, 2 mm)")
    parser.add_argument("--min-dice", type=float, default=None,
                        help="lowest acceptable body-mask Dice after registration (default: the library's, 0.8)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medgan.registration import ImageRegistration, register_files

    options = {"mode": args.mode, "metric": args.metric}
    if args.working_spacing_mm is not None:
        options["working_spacing_mm"] = args.working_spacing_mm
    if args.min_dice is not None:
        options["min_mask_dice"] = args.min_dice
    paths = register_files(args.fixed, args.moving, args.out_dir, ImageRegistration(**options),
                           overwrite=args.overwrite)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
