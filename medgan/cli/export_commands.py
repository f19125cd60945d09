"""``medgan export-dicom`` (a volume -> a derived CT series) and ``medgan demo`` (the main job on the
embedded digital phantom: DICOM in, NIfTI and a derived DICOM series out, everything checked)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Dict, Sequence

logger = logging.getLogger(__name__)

#: Default folder of ``medgan demo``.
DEMO_OUTPUT_DIR = Path("demo_output")
#: The model name the demo writes: no model runs, the volume passes through unchanged.
DEMO_MODEL_NAME = "demo identity (no model applied)"
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
        description="Generate the digital head phantom as a CT DICOM series, read it with medgan, write NIfTI, "
                    "export a derived DICOM series, read everything back and check it, and print a summary.")
    demo.add_argument("--output-dir", type=Path, default=DEMO_OUTPUT_DIR, help="where to write (default ./demo_output)")
    demo.add_argument("--shape", type=int, nargs=3, default=(256, 256, 64), metavar=("X", "Y", "Z"),
                      help="phantom size in voxels (default 256 256 64)")
    demo.add_argument("--spacing-mm", type=float, nargs=3, default=(0.9, 0.9, 3.0), metavar=("X", "Y", "Z"),
                      help="phantom voxel size in mm (default 0.9 0.9 3)")
    demo.add_argument("--noise-hu", type=float, default=5.0, help="phantom noise standard deviation in HU")
    demo.add_argument("--seed", type=int, default=0, help="phantom noise seed")
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
    shape: Sequence[int] = (256, 256, 64),
    spacing_mm: Sequence[float] = (0.9, 0.9, 3.0),
    noise_std_hu: float = 5.0,
    seed: int = 0,
) -> Dict[str, Any]:
    """The main job on the embedded phantom; every step is checked and the outputs replace earlier ones.

    Steps: phantom -> CT DICOM series (``input_dicom/``) -> medgan's DICOM reader -> NIfTI
    (``phantom_ct.nii.gz``) -> read back -> derived CT series (``derived_dicom/``, the study and frame
    of ``input_dicom``) -> medgan's reader again; then ``demo_summary.json``.

    Args:
        output_dir: the folder to write into.
        shape: ``(X, Y, Z)`` phantom voxels.
        spacing_mm: ``(X, Y, Z)`` voxel size in mm.
        noise_std_hu: phantom noise standard deviation in HU.
        seed: noise seed.

    Returns:
        the summary written to ``demo_summary.json``.

    Raises:
        MedganError: when any step's check fails (a bug: the demo's data are known exactly).
    """
    import numpy as np

    from medgan.datasets.phantom import make_head_phantom, write_phantom_dicom
    from medgan.errors import MedganError
    from medgan.io import load_volume
    from medgan.io.dicom_writer import write_derived_ct_series
    from medgan.io.nifti import read_nifti, write_nifti
    from medgan.utils.atomic import atomic_path

    output_dir = Path(output_dir)
    input_dir, derived_dir = output_dir / "input_dicom", output_dir / "derived_dicom"
    nifti_path = output_dir / "phantom_ct.nii.gz"

    def check(ok: bool, what: str, path: Path) -> None:
        if not ok:
            raise MedganError(f"demo check failed: {what}", path,
                              "this is a bug in medgan; rerun with --debug and report it")

    def same_geometry(a: Any, b: Any) -> bool:
        corners = np.array([[i, j, k, 1.0] for i in (0, a.shape[0] - 1) for j in (0, a.shape[1] - 1)
                            for k in (0, a.shape[2] - 1)]).T
        return bool(np.abs(a.affine.numpy() @ corners - b.affine.numpy() @ corners).max() < _POSITION_TOL_MM)

    phantom = make_head_phantom(shape, spacing_mm, noise_std_hu=noise_std_hu, seed=seed)
    source = write_phantom_dicom(input_dir, shape, spacing_mm, noise_std_hu=noise_std_hu, seed=seed, overwrite=True)
    volume = load_volume(input_dir)
    check(tuple(volume.shape) == tuple(phantom.shape) and bool((volume.as_tensor() == phantom.as_tensor()).all()),
          "the DICOM series read back differs from the phantom", input_dir)
    check(same_geometry(volume, phantom), "the DICOM geometry read back differs from the phantom's", input_dir)

    write_nifti(volume, nifti_path, description="medgan digital head phantom, HU")
    from_nifti = read_nifti(nifti_path)
    check(bool((from_nifti.as_tensor() == volume.as_tensor()).all()) and same_geometry(from_nifti, volume),
          "the NIfTI read back differs from the volume written", nifti_path)

    derived = write_derived_ct_series(from_nifti, derived_dir, reference=input_dir, model_name=DEMO_MODEL_NAME,
                                      series_description="DEMO DERIVED CT (identity)", overwrite=True)
    exported = load_volume(derived_dir)
    check(bool((exported.as_tensor() == volume.as_tensor()).all()) and same_geometry(exported, volume),
          "the derived series read back differs from the volume exported", derived_dir)
    check(derived.study_instance_uid == source.study_instance_uid
          and derived.frame_of_reference_uid == source.frame_of_reference_uid,
          "the derived series left the study or frame of reference of its reference", derived_dir)
    check(derived.series_instance_uid != source.series_instance_uid
          and not set(derived.sop_instance_uids) & set(source.sop_instance_uids),
          "the derived series reused a UID of its reference", derived_dir)

    values = volume.numpy()
    spacing = np.linalg.norm(volume.affine.numpy()[:3, :3], axis=0)
    summary = {
        "input_dicom": {"path": str(input_dir), "files": len(source.files),
                        "study_instance_uid": source.study_instance_uid,
                        "series_instance_uid": source.series_instance_uid,
                        "frame_of_reference_uid": source.frame_of_reference_uid},
        "volume": {"shape": [int(n) for n in volume.shape], "spacing_mm": [round(float(s), 4) for s in spacing],
                   "hu_min": int(values.min()), "hu_max": int(values.max()), "dtype": str(values.dtype),
                   "lesions": [lesion["name"] for lesion in phantom.meta["medgan"]["phantom"]["lesions"]]},
        "nifti": {"path": str(nifti_path)},
        "derived_dicom": {"path": str(derived_dir), "files": len(derived.files), "model": DEMO_MODEL_NAME,
                          "series_instance_uid": derived.series_instance_uid,
                          "study_instance_uid": derived.study_instance_uid,
                          "frame_of_reference_uid": derived.frame_of_reference_uid,
                          "series_uid_new": derived.series_instance_uid != source.series_instance_uid,
                          "sop_uids_new": not set(derived.sop_instance_uids) & set(source.sop_instance_uids),
                          "study_same_as_reference": derived.study_instance_uid == source.study_instance_uid,
                          "frame_same_as_reference": derived.frame_of_reference_uid == source.frame_of_reference_uid},
        "checks": "all passed: voxels identical, corner positions within 0.01 mm, UIDs as required",
    }
    with atomic_path(output_dir / "demo_summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return summary


def _demo(args: argparse.Namespace) -> int:
    import time

    start = time.perf_counter()
    summary = run_demo(args.output_dir, tuple(args.shape), tuple(args.spacing_mm), args.noise_hu, args.seed)
    seconds = time.perf_counter() - start
    vol, src, der = summary["volume"], summary["input_dicom"], summary["derived_dicom"]
    print(f"medgan demo: done in {seconds:.1f} s, every check passed")
    print(f"  1. digital head phantom -> CT DICOM series  {src['path']} ({src['files']} files)")
    print(f"  2. read with medgan: shape {'x'.join(map(str, vol['shape']))}, spacing "
          f"{'x'.join(f'{s:g}' for s in vol['spacing_mm'])} mm, HU {vol['hu_min']}..{vol['hu_max']} ({vol['dtype']}), "
          f"lesions: {', '.join(vol['lesions'])}")
    print(f"  3. NIfTI                                     {summary['nifti']['path']}")
    print(f"  4. derived CT series ({der['model']})  {der['path']} ({der['files']} files)")
    print(f"     SeriesInstanceUID   {der['series_instance_uid']} (new; reference {src['series_instance_uid']})")
    print(f"     StudyInstanceUID    {der['study_instance_uid']} (same as the reference: "
          f"{der['study_same_as_reference']})")
    print(f"     FrameOfReferenceUID {der['frame_of_reference_uid']} (same as the reference: "
          f"{der['frame_same_as_reference']})")
    print(f"  5. read back with medgan: voxels identical, positions within {_POSITION_TOL_MM} mm")
    print(f"  summary: {Path(args.output_dir) / 'demo_summary.json'}")
    return 0
