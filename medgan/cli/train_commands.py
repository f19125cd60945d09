"""``medgan train paired``: pix2pix training on one voxel-aligned volume pair with a held-out slab."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a 3D GAN (paired pix2pix on a voxel-aligned pair)")
    groups = train.add_subparsers(dest="train_command", metavar="KIND", required=True)
    parser = groups.add_parser(
        "paired", help="pix2pix on SOURCE -> TARGET (same grid); the last slices are held out for validation",
        description="Train a residual 3D U-Net with a conditional PatchGAN to turn SOURCE into TARGET. The last "
        "--heldout-slices axial slices are never trained on and are validated with sliding-window inference. "
        "Writes OUTDIR/generator.pt, losses.csv, validation.csv, snapshots/, tensorboard/ and checkpoints/ "
        "(a rerun with the same OUTDIR resumes exactly).")
    parser.add_argument("--source", required=True, help="input image: NIfTI file or DICOM folder (HU)")
    parser.add_argument("--target", required=True, help="target image on the same grid: NIfTI file or DICOM folder")
    parser.add_argument("-o", "--output", required=True, dest="out_dir", help="run folder")
    parser.add_argument("--heldout-slices", type=int, default=20, help="slices held out at the end (default 20)")
    parser.add_argument("--gap-slices", type=int, default=4, help="slices dropped before the held-out ones (default 4)")
    parser.add_argument("--iterations", type=int, default=None, help="training iterations (default: the library's)")
    parser.add_argument("--patch", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="patch size in voxels (default: the library's)")
    parser.add_argument("--batch-size", type=int, default=None, help="patches per iteration")
    parser.add_argument("--filters", type=int, nargs="+", default=None, help="U-Net channels per level")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--validate-every", type=int, default=None, help="validation period in iterations")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None)
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--seed", type=int, default=None)
    parser.set_defaults(func=_run_paired)


def _run_paired(args: argparse.Namespace) -> int:
    import numpy as np

    from medgan.engines.train import train_paired
    from medgan.engines.volumes import split_paired_volume
    from medgan.io import load_volume

    source = np.asarray(load_volume(args.source), dtype=np.float32)
    target = np.asarray(load_volume(args.target), dtype=np.float32)
    train, held, _ = split_paired_volume(source, target, args.heldout_slices, args.gap_slices)
    names = {"iterations": "iterations", "patch": "patch_size_vox", "batch_size": "batch_size",
             "filters": "generator_filters", "learning_rate": "learning_rate", "validate_every": "validate_every",
             "precision": "precision", "device": "device", "seed": "seed"}
    options = {name: getattr(args, attr) for attr, name in names.items() if getattr(args, attr) is not None}
    if "validate_every" in options:
        options["checkpoint_every"] = options["validate_every"]
    result = train_paired(train, held, args.out_dir, weight_key="body_mask", **options)
    print(f"generator: {result['generator_path']}")
    for key, value in sorted(result["validation"].items()):
        print(f"{key}: {value:.3f}")
    return 0
