"""``medgan export-dicom`` (a volume -> a derived CT series) and ``medgan demo`` (the main job on the
embedded digital phantom: DICOM in, a bundle run end to end, NIfTI, derived DICOM and the HTML report
out, everything checked)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Dict, Sequence

logger = logging.getLogger(__name__)

#: Default folder of ``medgan demo``.
DEMO_OUTPUT_DIR = Path("demo_output")
#: The bundle the demo runs: the phantom is drawn as a smooth-kernel CT on a grid the bundle accepts.
DEMO_BUNDLE = "ct_kernel_conversion"
#: The demo's case id (its folder under ``results/``).
DEMO_CASE = "phantom"
_POSITION_TOL_MM = 0.01


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export-dicom`` and ``demo`` commands."""
    export = subparsers.add_parser(
        "export-dicom", help="write a volume as a derived CT DICOM series",
        description="Write VOLUME (NIfTI, HU) as a new CT image series in OUTDIR: new Series and SOP Instance UIDs, "
                    "the study, patient and frame of reference of the reference series, ImageType "
                    "DERIVED\\SECONDARY, descriptions naming the model, the geometry of VOLUME's own grid.")
    export.add_argument("volume", type=Path, help="input .nii/.nii.gz in HU")
    export.add_argument("outdir", type=Path, help="series folder to create")
    export.add_argument("--reference", type=Path, default=None,
                        help="DICOM folder of the series the volume belongs to (its CT, or the MR of a synthetic CT)")
    export.add_argument("--reference-series", default=None,
                        help="SeriesInstanceUID in the reference folder when it holds several studies")
    export.add_argument("--new-study", action="store_true",
                        help="no reference: start a new study with new UIDs and empty patient attributes")
    export.add_argument("--description", default=None, help="SeriesDescription (default: SYNTHETIC CT <model>)")
    export.add_argument("--derivation", default=None,
                        help="DerivationDescription (default: says synthetic, which model)")
    export.add_argument("--model", default="unknown model", help="name (and version) of the model that made the volume")
    export.add_argument("--series-number", type=int, default=9001, help="SeriesNumber of the new series")
    export.add_argument("--window", type=float, nargs=2, default=(40.0, 400.0), metavar=("CENTER", "WIDTH"),
                        help="display window in HU (default 40 400)")
    export.add_argument("--no-overlap-check", action="store_true",
                        help="allow a volume that does not overlap the reference's images")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty OUTDIR")
    export.set_defaults(func=_export_dicom)

    demo = subparsers.add_parser(
        "demo", help="run the main job on the embedded digital head phantom",
        description="Generate the digital head phantom as a smooth-kernel CT DICOM series, read it with medgan, "
                    f"run the {DEMO_BUNDLE} bundle on it (medgan run: NIfTI, derived DICOM series, sidecar, "
                    "summary), write the HTML report, read everything back and check it, and print a summary.")
    demo.add_argument("--output-dir", type=Path, default=DEMO_OUTPUT_DIR, help="where to write (default ./demo_output)")
    demo.add_argument("--shape", type=int, nargs=3, default=(256, 256, 32), metavar=("X", "Y", "Z"),
                      help="phantom size in voxels (default 256 256 32)")
    demo.add_argument("--spacing-mm", type=float, nargs=3, default=(0.7, 0.7, 1.0), metavar=("X", "Y", "Z"),
                      help="phantom voxel size in mm (default 0.7 0.7 1; the bundle accepts 0.3-0.7 in plane, "
                           "0.8-1.25 mm slices)")
    demo.add_argument("--noise-hu", type=float, default=5.0, help="phantom noise standard deviation in HU")
    demo.add_argument("--seed", type=int, default=0, help="phantom noise seed")
    demo.add_argument("--bundle", default=DEMO_BUNDLE, help=f"bundle to run (default {DEMO_BUNDLE})")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    demo.set_defaults(func=_demo)


def _export_dicom(args: argparse.Namespace) -> int:
    from medgan.errors import MedganError
    from medgan.io.dicom_writer import write_derived_ct_series
    from medgan.io.nifti import read_nifti

    if args.reference is None and not args.new_study:
        raise MedganError("no reference series given", args.volume,
                          "pass --reference DICOM_DIR (the series the volume belongs to), or --new-study to "
                          "start a new study without patient attributes")
    if args.reference is not None and args.new_study:
        raise MedganError("--reference and --new-study exclude each other", args.volume, "pass only one of them")
    image = read_nifti(args.volume, validate=True)
    written = write_derived_ct_series(
        image, args.outdir, reference=args.reference, series_description=args.description,
        derivation_description=args.derivation, model_name=args.model, series_number=args.series_number,
        window_center_hu=args.window[0], window_width_hu=args.window[1],
        reference_series_instance_uid=args.reference_series, check_overlap=not args.no_overlap_check,
        overwrite=args.overwrite)
    print(f"wrote {len(written.files)} CT images to {written.directory}")
    print(f"  SeriesInstanceUID      {written.series_instance_uid} (new)")
    print(f"  StudyInstanceUID       {written.study_instance_uid} "
          f"({'from the reference' if written.study_from_reference else 'new study'})")
    print(f"  FrameOfReferenceUID    {written.frame_of_reference_uid} "
          f"({'from the reference' if written.frame_from_reference else 'new'})")
    return 0


def run_demo(
    output_dir: Path = DEMO_OUTPUT_DIR,
    shape: Sequence[int] = (256, 256, 32),
    spacing_mm: Sequence[float] = (0.7, 0.7, 1.0),
    noise_std_hu: float = 5.0,
    seed: int = 0,
    bundle_name: str = DEMO_BUNDLE,
    device: str = "auto",
) -> Dict[str, Any]:
    """The main job on the embedded phantom; every step is checked and the outputs replace earlier ones.

    Steps: phantom -> CT DICOM series (``input_dicom/``, a smooth-kernel CT: the phantom's noise is
    correlated as a soft kernel makes it) -> medgan's DICOM reader (voxels and geometry checked) ->
    ``medgan run <bundle>`` on the series (``results/phantom/``: ``pred.nii.gz``, the derived series
    ``dicom/``, the sidecar ``pred.json``; ``results/summary.csv``) -> the outputs read back and checked
    (grid, synthetic description, DICOM voxels equal to the NIfTI's, study and frame of reference of the
    input, new UIDs) -> ``results/report.html`` -> ``demo_summary.json``.

    Args:
        output_dir: the folder to write into.
        shape: ``(X, Y, Z)`` phantom voxels.
        spacing_mm: ``(X, Y, Z)`` voxel size in mm (inside the bundle's accepted spacing).
        noise_std_hu: phantom noise standard deviation in HU.
        seed: noise seed.
        bundle_name: the shipped bundle to run.
        device: where the bundle runs.

    Returns:
        the summary written to ``demo_summary.json``.

    Raises:
        MedganError: the bundle refused the phantom or failed, or a check failed (a bug: the demo's
            data are known exactly).
    """
    import numpy as np
    import pydicom

    from medgan.bundle.loading import open_bundle
    from medgan.bundle.runner import STATUS_FAILED, cases_from_input, run_bundle
    from medgan.datasets.phantom import make_head_phantom, write_phantom_dicom
    from medgan.errors import MedganError
    from medgan.io import load_volume
    from medgan.io.nifti import read_nifti
    from medgan.report.html import build_report
    from medgan.utils.atomic import atomic_path

    output_dir = Path(output_dir)
    input_dir, results_dir = output_dir / "input_dicom", output_dir / "results"
    case_dir = results_dir / DEMO_CASE

    def check(ok: bool, what: str, path: Path) -> None:
        if not ok:
            raise MedganError(f"demo check failed: {what}", path,
                              "this is a bug in medgan; rerun with --debug and report it")

    def same_geometry(a: Any, b: Any) -> bool:
        corners = np.array([[i, j, k, 1.0] for i in (0, a.shape[0] - 1) for j in (0, a.shape[1] - 1)
                            for k in (0, a.shape[2] - 1)]).T
        return bool(np.abs(np.asarray(a.affine) @ corners - np.asarray(b.affine) @ corners).max() < _POSITION_TOL_MM)

    phantom = make_head_phantom(shape, spacing_mm, noise_std_hu=noise_std_hu, seed=seed)
    source = write_phantom_dicom(input_dir, shape, spacing_mm, noise_std_hu=noise_std_hu, seed=seed, overwrite=True)
    volume = load_volume(input_dir)
    check(tuple(volume.shape) == tuple(phantom.shape) and bool((volume.as_tensor() == phantom.as_tensor()).all()),
          "the DICOM series read back differs from the phantom", input_dir)
    check(same_geometry(volume, phantom), "the DICOM geometry read back differs from the phantom's", input_dir)

    bundle = open_bundle(bundle_name, device=device)
    [result] = run_bundle(bundle, cases_from_input(input_dir, case_id=DEMO_CASE), results_dir, overwrite=True)
    if result.status == STATUS_FAILED:
        raise MedganError(f"the {bundle.name} bundle failed on the phantom: {result.message}", input_dir,
                          "see the message: --shape and --spacing-mm must give a head CT the bundle accepts")
    pred = read_nifti(case_dir / "pred.nii.gz")
    check(tuple(pred.shape) == tuple(volume.shape) and same_geometry(pred, volume),
          "the bundle's output is not on the input's grid", case_dir / "pred.nii.gz")
    check(pred.meta["medgan"]["nifti"]["descrip"].startswith("SYNTHETIC medgan"),
          "the output NIfTI does not say it is synthetic", case_dir / "pred.nii.gz")
    exported = load_volume(case_dir / "dicom")
    derived_uids = {"series": str(exported.meta.get("SeriesInstanceUID")),
                    "study": str(exported.meta.get("StudyInstanceUID")),
                    "frame": str(exported.meta.get("FrameOfReferenceUID"))}
    check(bool((exported.as_tensor() == pred.as_tensor()).all()) and same_geometry(exported, pred),
          "the derived series read back differs from the NIfTI output", case_dir / "dicom")
    check(derived_uids["study"] == source.study_instance_uid and derived_uids["frame"] == source.frame_of_reference_uid,
          "the derived series left the study or frame of reference of its input", case_dir / "dicom")
    derived_sops = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                    for p in (case_dir / "dicom").iterdir()}
    check(derived_uids["series"] != source.series_instance_uid and not set(source.sop_instance_uids) & derived_sops,
          "the derived series reused a UID of its input", case_dir / "dicom")
    sidecar = json.loads((case_dir / "pred.json").read_text())
    report = build_report(results_dir, results_dir / "report.html", title=f"medgan demo: {bundle.name} on the phantom")

    values, output = volume.numpy(), pred.numpy().astype(np.float32)
    spacing = np.linalg.norm(np.asarray(volume.affine)[:3, :3], axis=0)
    summary = {
        "input_dicom": {"path": str(input_dir), "files": len(source.files),
                        "study_instance_uid": source.study_instance_uid,
                        "series_instance_uid": source.series_instance_uid,
                        "frame_of_reference_uid": source.frame_of_reference_uid},
        "volume": {"shape": [int(n) for n in volume.shape], "spacing_mm": [round(float(s), 4) for s in spacing],
                   "hu_min": int(values.min()), "hu_max": int(values.max()), "dtype": str(values.dtype),
                   "lesions": [lesion["name"] for lesion in phantom.meta["medgan"]["phantom"]["lesions"]]},
        "bundle": {"name": bundle.name, "version": bundle.version, "weights_sha256": bundle.weights_sha256,
                   "device": sidecar["device"], "precision": bundle.precision,
                   "seconds": {k: round(float(v), 2) for k, v in sidecar["timing_s"].items()}},
        "output": {"nifti": str(case_dir / "pred.nii.gz"), "sidecar": str(case_dir / "pred.json"),
                   "summary_csv": str(results_dir / "summary.csv"), "report": str(report),
                   "mean_abs_change_hu": round(float(np.abs(output - values).mean()), 2),
                   "max_abs_change_hu": round(float(np.abs(output - values).max()), 1)},
        "derived_dicom": {"path": str(case_dir / "dicom"), "files": len(derived_sops), "model": bundle.name,
                          "series_instance_uid": derived_uids["series"],
                          "study_instance_uid": derived_uids["study"],
                          "frame_of_reference_uid": derived_uids["frame"],
                          "series_uid_new": derived_uids["series"] != source.series_instance_uid,
                          "study_same_as_reference": derived_uids["study"] == source.study_instance_uid,
                          "frame_same_as_reference": derived_uids["frame"] == source.frame_of_reference_uid},
        "checks": "all passed: input voxels identical, output on the input grid and marked synthetic, "
                  "derived series equal to the NIfTI, corner positions within 0.01 mm, UIDs as required",
    }
    with atomic_path(output_dir / "demo_summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return summary


def _demo(args: argparse.Namespace) -> int:
    import time

    start = time.perf_counter()
    summary = run_demo(args.output_dir, tuple(args.shape), tuple(args.spacing_mm), args.noise_hu, args.seed,
                       args.bundle, args.device)
    seconds = time.perf_counter() - start
    vol, src, der = summary["volume"], summary["input_dicom"], summary["derived_dicom"]
    bundle, out = summary["bundle"], summary["output"]
    print(f"medgan demo: done in {seconds:.1f} s, every check passed")
    print(f"  1. digital head phantom (smooth-kernel CT) -> DICOM series  {src['path']} ({src['files']} files)")
    print(f"  2. read with medgan: shape {'x'.join(map(str, vol['shape']))}, spacing "
          f"{'x'.join(f'{s:g}' for s in vol['spacing_mm'])} mm, HU {vol['hu_min']}..{vol['hu_max']} ({vol['dtype']}), "
          f"lesions: {', '.join(vol['lesions'])}")
    print(f"  3. medgan run {bundle['name']} v{bundle['version']} on {bundle['device']} ({bundle['precision']}): "
          f"{bundle['seconds'].get('inference', 0):.1f} s inference; mean |change| {out['mean_abs_change_hu']} HU")
    print(f"  4. NIfTI (int16 HU, marked synthetic)  {out['nifti']}")
    print(f"  5. derived CT series  {der['path']} ({der['files']} files)")
    print(f"     SeriesInstanceUID   {der['series_instance_uid']} (new; input {src['series_instance_uid']})")
    print(f"     StudyInstanceUID    {der['study_instance_uid']} (same as the input: {der['study_same_as_reference']})")
    print(f"     FrameOfReferenceUID {der['frame_of_reference_uid']} (same as the input: "
          f"{der['frame_same_as_reference']})")
    print(f"  6. sidecar {out['sidecar']}, run summary {out['summary_csv']}")
    print(f"  7. report  {out['report']}")
    print(f"  summary: {Path(args.output_dir) / 'demo_summary.json'}")
    return 0
