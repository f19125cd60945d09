"""Benchmark: seconds per volume and peak memory of each bundle's whole-volume inference.

Up to three settings per bundle, each run in its own child process (so peak RSS is that run's alone):

* ``naive``: fp32 Gaussian-blended sliding window with the settings MONAI model-zoo bundles commonly
  ship (``overlap 0.5``, ``sw_batch_size 4``), every window computed, by PyTorch;
* ``exact``: the same windows, every one computed, one per network call, by the bundle's CPU backend
  (OpenVINO for the CT bundles): the naive output to float32 rounding (CT bundles);
* ``shipped``: the bundle's own ``inference.yaml`` (what ``medgan run`` uses), or the overrides given
  with ``--shipped-overrides``.

A run is ``medgan run``'s per-case path (load, input check, preprocessing, sliding window,
postprocessing, NIfTI write; no DICOM) on a real volume padded to the benchmark size: CT bundles get
the real head phantom CT (512 x 512 x 100 at 1 mm, ``ct/phantom_head_philips``) mirrored in z to
``--slices`` (default 300; super-resolution: the real 5 mm volume mirrored to a fifth as many thick
slices); the MR bundle gets the real head MR (512 x 512 x 120) resampled to 256 x 256 x 200. The
outputs of each setting are compared with the naive one voxel by voxel in HU (99th percentile and
maximum of the absolute difference, over the volume and inside the body: naive output > -500 HU,
largest component, holes filled).
The 1-minute load average is printed before and after: figures are comparable only on an idle machine.

    .venv/bin/python benchmarks/bench_inference.py [--bundles ct_lowdose_denoising ...] [--runs 3]
        [--naive-runs 1] [--settings naive exact shipped] [--slices 300] [--device auto]
        [--data-root ../shared/data] [--json results.json]

On a GPU machine ``--device cuda`` measures the same two settings with the windows on the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

BUNDLES = ("ct_lowdose_denoising", "ct_kernel_conversion", "ct_super_resolution", "mr_synthetic_ct")
ROOT = Path(__file__).resolve().parents[1]
NAIVE = {"sw_overlap": 0.5, "sw_batch_size": 4, "skip_background_below_hu": None}
EXACT = {"sw_overlap": 0.5, "sw_batch_size": 1, "skip_background_below_hu": None}
#: the naive window layout, one window per call, air-only windows skipped as the bundle ships it
EXACT_AIR = {"sw_overlap": 0.5, "sw_batch_size": 1}
SETTINGS = ("naive", "exact", "exact-air", "shipped")
CT_THIN = "ct/phantom_head_philips/thin1mm_kernelUB.nii.gz"
CT_THICK = "ct/phantom_head_philips/thick5mm_kernelUB.nii.gz"
MR_HEAD = "mr/head_vs_seg_001/VS-SEG-001_t1_mpr_tra_gk_v4_2.nii.gz"


def naive_overrides(name: str) -> Dict[str, Any]:
    """:data:`NAIVE`, plus PyTorch as the CPU backend where the bundle has a ``cpu_backend`` setting."""
    config = (ROOT / "bundles" / name / "configs" / "inference.yaml").read_text(encoding="utf-8")
    return {**NAIVE, "cpu_backend": "torch"} if "\ncpu_backend:" in config else dict(NAIVE)


def _mirror_to(values: Any, slices: int) -> Any:
    """Repeat a volume along z as v, flip(v), v, ... (no seams in anatomy) and cut to ``slices``."""
    import numpy as np

    parts, flip = [], False
    while sum(p.shape[2] for p in parts) < slices:
        parts.append(values[:, :, ::-1] if flip else values)
        flip = not flip
    return np.ascontiguousarray(np.concatenate(parts, axis=2)[:, :, :slices])


def make_inputs(data_root: Path, folder: Path, slices: int = 300) -> Dict[str, Path]:
    """Write the benchmark volumes (NIfTI) into ``folder``; returns bundle name -> input file."""
    import nibabel as nib
    import numpy as np
    import SimpleITK as sitk

    def save(values: Any, like: Any, name: str, zooms: Any = None) -> Path:
        image = nib.Nifti1Image(values, like.affine)
        if zooms is not None:
            image.header.set_zooms(zooms)
            image.set_qform(image.header.get_best_affine(), code=1)
            image.set_sform(image.header.get_best_affine(), code=1)
        path = folder / name
        nib.save(image, str(path))
        return path

    thin = nib.load(str(data_root / CT_THIN))
    thick = nib.load(str(data_root / CT_THICK))
    ct300 = save(_mirror_to(np.asarray(thin.dataobj, dtype=np.int16), slices), thin, f"ct_512x512x{slices}.nii.gz")
    thick60 = save(_mirror_to(np.asarray(thick.dataobj, dtype=np.int16), slices // 5), thick,
                   f"ct_thick_512x512x{slices // 5}.nii.gz")

    mr = sitk.ReadImage(str(data_root / MR_HEAD), sitk.sitkFloat32)
    size = (256, 256, 200)
    extent = [n * s for n, s in zip(mr.GetSize(), mr.GetSpacing())]
    spacing = [e / n for e, n in zip(extent, size)]
    resampled = sitk.Resample(mr, size, sitk.Transform(), sitk.sitkLinear, mr.GetOrigin(), spacing,
                              mr.GetDirection(), 0.0, sitk.sitkFloat32)
    mr_path = folder / "mr_256x256x200.nii.gz"
    sitk.WriteImage(resampled, str(mr_path))
    return {"ct_lowdose_denoising": ct300, "ct_kernel_conversion": ct300, "ct_super_resolution": thick60,
            "mr_synthetic_ct": mr_path}


def _child(args: argparse.Namespace) -> None:
    import torch

    from medgan.bundle.loading import open_bundle
    from medgan.bundle.runner import RunCase, run_case

    overrides = json.loads(args.overrides)
    start = time.perf_counter()
    bundle = open_bundle(args.bundle, device=args.device, overrides=overrides)
    result = run_case(bundle, RunCase(case_id="case", source=Path(args.input)), args.out, write_dicom=False,
                      force=True)
    seconds = time.perf_counter() - start
    sidecar = json.loads((Path(result.case_dir) / "pred.json").read_text())
    peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    print(json.dumps({
        "bundle": args.bundle, "setting": args.setting, "overrides": overrides, "device": result.device,
        "threads": torch.get_num_threads(), "seconds": round(seconds, 1),
        "inference_seconds": round(float(sidecar["timing_s"]["inference"]), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0),
        "peak_gpu_mb": None if peak_gpu_mb is None else round(peak_gpu_mb),
        "parameters": {k: sidecar["parameters"].get(k) for k in ("roi_size_vox", "overlap", "sw_batch_size",
                                                                  "precision", "skip_background_below")},
        "background_windows_skipped": (f"{sidecar['sliding_window']['background_windows_skipped']} of "
                                       f"{sidecar['sliding_window']['windows']}" if "sliding_window" in sidecar
                                       else None),
    }))


def _run_child(bundle: str, setting: str, overrides: Dict[str, Any], source: Path, out: Path,
               device: str) -> Dict[str, Any]:
    command = [sys.executable, __file__, "--child", "--bundle", bundle, "--setting", setting, "--input", str(source),
               "--out", str(out), "--overrides", json.dumps(overrides), "--device", device]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{bundle} {setting} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _difference_hu(a: Path, b: Path) -> Dict[str, float]:
    """|a - b| over the volume and inside the body of ``a`` (a CT output)."""
    import nibabel as nib
    import numpy as np

    from medgan.metrics.masks import body_mask_from_ct

    x = np.asarray(nib.load(str(a)).dataobj, dtype=np.float32)
    y = np.asarray(nib.load(str(b)).dataobj, dtype=np.float32)
    diff = np.abs(x - y)
    body = diff[body_mask_from_ct(x)]
    return {"p99_abs_diff_hu": float(np.percentile(diff, 99)), "max_abs_diff_hu": float(diff.max()),
            "mean_abs_diff_hu": float(diff.mean()), "body_p99_abs_diff_hu": float(np.percentile(body, 99)),
            "body_max_abs_diff_hu": float(body.max())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", nargs="+", default=list(BUNDLES), choices=BUNDLES)
    parser.add_argument("--runs", type=int, default=3, help="runs of the shipped setting (median reported)")
    parser.add_argument("--naive-runs", type=int, default=1, help="runs of the naive setting (median reported)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--shipped-overrides", default="{}", help="JSON overrides for the shipped setting")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--slices", type=int, default=300, help="slices of the CT volume (thin grid)")
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    parser.add_argument("--setting", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return 0
    if not (args.data_root / CT_THIN).is_file():
        print(f"no benchmark data under {args.data_root} (pass --data-root)", file=sys.stderr)
        return 2
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    results: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="medgan-bench-") as tmp:
        inputs = make_inputs(args.data_root, Path(tmp), args.slices)
        for name in args.bundles:
            outputs: Dict[str, Path] = {}
            rows: Dict[str, Dict[str, Any]] = {}
            chosen = {"naive": (naive_overrides(name), args.naive_runs), "exact": (EXACT, args.runs),
                      "exact-air": (EXACT_AIR, args.runs),
                      "shipped": (json.loads(args.shipped_overrides), args.runs)}
            for setting in args.settings:
                if setting.startswith("exact") and name == "mr_synthetic_ct":
                    continue  # MR input: no HU background to skip
                overrides, runs = chosen[setting]
                records = []
                for run in range(runs):
                    out = Path(tmp) / f"{name}-{setting}-{run}"
                    record = _run_child(name, setting, overrides, inputs[name], out, args.device)
                    print(json.dumps(record), flush=True)
                    records.append(record)
                    outputs[setting] = out / "case" / "pred.nii.gz"
                rows[setting] = {
                    "bundle": name, "setting": setting, "runs": runs, "device": records[0]["device"],
                    "input": inputs[name].name, "parameters": records[0]["parameters"],
                    "median_seconds": statistics.median(r["seconds"] for r in records),
                    "median_inference_seconds": statistics.median(r["inference_seconds"] for r in records),
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in records),
                    "background_windows_skipped": records[0].get("background_windows_skipped"),
                }
                results.append(rows[setting])
            if "naive" in rows:
                for setting, row in rows.items():
                    if setting != "naive":
                        row.update(_difference_hu(outputs["naive"], outputs[setting]))
                        row["speedup"] = round(rows["naive"]["median_seconds"] / row["median_seconds"], 2)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("| bundle | input | setting | roi, overlap, sw batch, skip | windows skipped | runs | s / volume (median) "
          "| inference s | peak RSS MB | speed-up | |diff| vs naive p99 / max HU, volume | same, body |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---:|---|---|")
    for row in results:
        p = row["parameters"]
        skip = "yes" if p.get("skip_background_below") is not None else "no"
        diff = (f"{row['p99_abs_diff_hu']:.1f} / {row['max_abs_diff_hu']:.0f}" if "p99_abs_diff_hu" in row else "")
        body = (f"{row['body_p99_abs_diff_hu']:.1f} / {row['body_max_abs_diff_hu']:.0f}" if "p99_abs_diff_hu" in row
                else "")
        print(f"| {row['bundle']} | {row['input']} | {row['setting']} | {p['roi_size_vox']}, {p['overlap']}, "
              f"{p['sw_batch_size']}, {skip} | {row['background_windows_skipped'] or ''} | {row['runs']} | "
              f"{row['median_seconds']:.1f} | {row['median_inference_seconds']:.1f} | {row['peak_rss_mb']} | "
              f"{row.get('speedup', '')} | {diff} | {body} |")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
