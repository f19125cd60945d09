"""Build a DEMO results folder from the real head phantom, only to exercise the report.

Input: thin UB (smooth kernel); reference: thin YA (sharp kernel); the "output" is NOT a model: it is
YA blurred with a Gaussian (sigma 0.6 voxel) so the report has something to show, and the
"uncertainty" is a smoothed absolute difference. Both are labelled as such in the sidecar notes.

    python -m tests.report._demo OUT_DIR [DATA_ROOT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

PHANTOM = "ct/phantom_head_philips"
NOTE = ("DEMO ONLY: 'output' is the reference (YA kernel) blurred with a Gaussian, not a model; "
        "'uncertainty' is a smoothed |output - reference|. Input: UB kernel.")


def build_demo_results(out_dir: Path, data_root: Path, z_slab: slice = slice(30, 70)) -> Path:
    """Write ``out_dir/phantom_head/{input,pred,reference,uncertainty}.nii.gz`` + ``pred.json`` + ``summary.csv``."""
    from monai.data import MetaTensor
    from scipy import ndimage

    from medgan.io.nifti import read_nifti, write_nifti
    from medgan.report.provenance import build_provenance, nifti_description, write_sidecar
    from medgan.utils.atomic import atomic_path

    case = Path(out_dir) / "phantom_head"
    ub = read_nifti(data_root / PHANTOM / "thin1mm_kernelUB.nii.gz")
    ya = read_nifti(data_root / PHANTOM / "thin1mm_kernelYA.nii.gz")
    affine = np.asarray(ya.affine, dtype=np.float64).copy()
    affine[:3, 3] += affine[:3, 2] * z_slab.start
    ref = np.asarray(ya.numpy()[:, :, z_slab], dtype=np.float32)
    source = np.asarray(ub.numpy()[:, :, z_slab], dtype=np.float32)
    pred = ndimage.gaussian_filter(ref, sigma=0.6)
    unc = ndimage.gaussian_filter(np.abs(pred - ref), sigma=2.0)
    description = nifti_description("demo_blur_not_a_model", "0.0.0")
    for name, values, desc in (("input", source, None), ("reference", ref, None),
                               ("pred", np.round(pred), description), ("uncertainty", unc, description)):
        write_nifti(MetaTensor(values, affine=affine), case / f"{name}.nii.gz", description=desc)
    record = build_provenance(
        "demo_blur_not_a_model", "0.0.0", "0" * 64, [data_root / PHANTOM / "thin1mm_kernelUB.nii.gz"],
        case_id="phantom_head", parameters={"gaussian_sigma_vox": 0.6, "z_slab": [z_slab.start, z_slab.stop]},
        device="cpu", timing_s={"inference": 0.0},
        outputs={"pred": "pred.nii.gz", "uncertainty": "uncertainty.nii.gz"},
        extra={"notes": [NOTE], "input_check": {"forced": False, "flags": []},
               "uncertainty": {"method": "demo: smoothed |output - reference|", "score": float(unc.mean()),
                               "unit": "HU"}})
    record["bundle"]["task"] = "ct_kernel_conversion"
    write_sidecar(record, case / "pred.json")
    with atomic_path(Path(out_dir) / "summary.csv") as tmp:
        tmp.write_text("case_id,status,seconds,message\nphantom_head,ok,0.0,demo\n", encoding="utf-8")
    return Path(out_dir)


if __name__ == "__main__":  # pragma: no cover
    root = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[3] / "shared" / "data"
    print(build_demo_results(Path(sys.argv[1]), root))
