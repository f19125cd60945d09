"""``medgan simulate low-dose|kernel|thick-slice IN OUT``: degrade one real volume into a training input.

Each command writes the NIfTI ``OUT`` and ``OUT``'s JSON record (input sha256 and every parameter,
seed included) beside it. The physics and the measured validation are in docs/simulation.md.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# Kept here (not imported from the simulators) so ``--help`` needs no numpy/astra import.
_FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
_PROFILES = ("rectangular", "triangular", "gaussian")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` command group."""
    parser = subparsers.add_parser(
        "simulate", help="simulate low dose, another reconstruction kernel or thick slices from a real scan",
        description="Degrade one real volume (NIfTI file or DICOM folder) and write a NIfTI with a JSON record "
                    "of every parameter beside it (docs/simulation.md).")
    kinds = parser.add_subparsers(dest="simulation", metavar="KIND", required=True)

    low = _add_kind(kinds, "low-dose", "projection-domain Poisson + electronic noise at a lower dose")
    low.add_argument("--dose-fraction", type=float, required=True,
                     help="simulated dose / real dose, in (0, 1], e.g. 0.25 for quarter dose")
    low.add_argument("--seed", type=int, default=0, help="seed of the noise draw (default: 0)")
    low.add_argument("--i0", type=float, default=None,
                     help="effective photons per 1 mm detector bin per rotation at full dose (default: "
                          "calibrated, see docs/simulation.md)")
    low.add_argument("--i0-reference-pixel-mm", type=float, default=1.0,
                     help="pixel size --i0 is quoted for; photons per bin scale as 1/pixel^2 so a dose gives the "
                          "same noise on any grid (default: 1); 0: --i0 is per bin of the image's own pixels")
    low.add_argument("--electronic-noise", type=float, default=None, help="electronic noise SD in counts")
    low.add_argument("--views", type=int, default=None, help="projection angles (default: from the slice size)")
    low.add_argument("--filter", choices=_FILTERS, default="ram-lak",
                     help="FBP filter of the noise; match the scan's reconstruction (default: ram-lak)")
    low.add_argument("--cutoff", type=float, default=1.0, help="filter cut-off, fraction of Nyquist (default: 1)")
    low.add_argument("--fast", action="store_true",
                     help="image-domain approximation (validated against the projection path, ~30x faster)")
    low.set_defaults(func=_low_dose)

    kernel = _add_kind(kinds, "kernel", "re-reconstruct with another FBP filter (smoother or sharper)")
    kernel.add_argument("--filter", choices=_FILTERS, required=True, help="target FBP filter")
    kernel.add_argument("--cutoff", type=float, default=1.0, help="target cut-off, fraction of Nyquist")
    kernel.add_argument("--reference-filter", choices=_FILTERS, default="ram-lak",
                        help="filter the input is taken to be reconstructed with (default: ram-lak = as is)")
    kernel.add_argument("--reference-cutoff", type=float, default=1.0, help="its cut-off")
    kernel.add_argument("--max-gain", type=float, default=3.0, help="gain cap when sharpening (default: 3)")
    kernel.add_argument("--views", type=int, default=None, help="projection angles (default: from the slice size)")
    kernel.set_defaults(func=_kernel)

    thick = _add_kind(kinds, "thick-slice", "average thin slices into thick ones with a slice profile")
    thick.add_argument("--thickness-mm", type=float, required=True, help="slice thickness (profile FWHM), mm")
    thick.add_argument("--interval-mm", type=float, default=None, help="slice interval, mm (default: = thickness)")
    thick.add_argument("--profile", choices=_PROFILES, default="triangular",
                       help="slice sensitivity profile (default: triangular, the best fit to a scanner's 5 mm slices)")
    thick.set_defaults(func=_thick_slice)


def _add_kind(kinds: argparse._SubParsersAction, name: str, text: str) -> argparse.ArgumentParser:
    parser = kinds.add_parser(name, help=text, description=text)
    parser.add_argument("input", type=Path, metavar="IN", help="real volume: NIfTI file or DICOM folder")
    parser.add_argument("output", type=Path, metavar="OUT", help="output .nii.gz (a .json record goes beside it)")
    parser.add_argument("--series", default=None, help="DICOM series (UID or number) when IN holds several")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    if name != "thick-slice":
        parser.add_argument("--threads", type=int, default=None, help="threads over slices (default: all CPUs)")
    return parser


def _run(args: argparse.Namespace, transform) -> int:
    from medgan.transforms.degradation.files import simulate_file

    record = simulate_file(transform, args.input, args.output, series=args.series, overwrite=args.overwrite)
    print(json.dumps({"output": record["output"], "record": record["record"], "parameters": record["parameters"]},
                     indent=2))
    return 0


def _low_dose(args: argparse.Namespace) -> int:
    from medgan.transforms.degradation.array import SimulateLowDose

    optional = {"i0_photons": args.i0, "electronic_noise_sd": args.electronic_noise}
    transform = SimulateLowDose(args.dose_fraction, seed=args.seed, n_views=args.views, filter_name=args.filter,
                                cutoff=args.cutoff, fast=args.fast, num_threads=args.threads,
                                i0_reference_pixel_mm=args.i0_reference_pixel_mm or None,
                                **{k: v for k, v in optional.items() if v is not None})
    return _run(args, transform)


def _kernel(args: argparse.Namespace) -> int:
    from medgan.transforms.degradation.array import SimulateKernel

    transform = SimulateKernel(args.filter, args.cutoff, args.reference_filter, args.reference_cutoff,
                               args.max_gain, args.views, num_threads=args.threads)
    return _run(args, transform)


def _thick_slice(args: argparse.Namespace) -> int:
    from medgan.transforms.degradation.array import SimulateThickSlices

    return _run(args, SimulateThickSlices(args.thickness_mm, args.interval_mm, args.profile))
