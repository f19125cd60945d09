"""What the denoising bundle's restore settings trade: noise, noise texture and lesion contrast.

The bundle gives back ``restore_fraction`` of what its network removed, low-passed by a Gaussian of
``restore_sigma_vox`` voxels (0: all frequencies, a plain blend with the input). This runs
``pipelines/train_lowdose_denoising.py evaluate`` (held-out slab, dose 0.25, lesions) once per
``FRACTION,SIGMA`` setting and source, each in its own folder under ``--output-dir``, and writes one
table per source (``restore.md`` and ``.json``) of the model's rows: PSNR/SSIM (ldct-abdomen), the
noise SD and the noise power spectrum's peak and mean frequency from two noise realisations (the
input's simulated noise is the texture reference), the lesion contrast retained, and the best
baseline's PSNR at the same noise.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/lowdose_restore.py --output-dir runs/restore \\
        --settings 0,0 0.2,0 0.4,0 1,0.6 1,0.7 --sources abdomen j2k --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pipelines"))

import train_lowdose_denoising as lowdose  # noqa: E402

from medgan.utils.atomic import atomic_path  # noqa: E402

#: (diameter mm, |contrast| HU) of the lesion columns.
LESION_COLUMNS = ((5.0, 20.0), (5.0, 100.0), (10.0, 20.0))


def retained(rows: List[dict], diameter: float, contrast: float) -> float:
    """Mean contrast retained over the copies and both signs of one lesion size and contrast."""
    values = [r["retained"] for r in rows if r["diameter_mm"] == diameter and abs(r["contrast_hu"]) == contrast]
    return float(np.mean(values)) if values else float("nan")


def summarise(setting: Tuple[float, float, float], result: Dict[str, object]) -> Dict[str, float]:
    methods = result["methods"]
    model = methods["model"]
    low = next(m for k, m in methods.items() if k.startswith("low dose"))
    matched = {k: m for k, m in methods.items() if k.endswith("(matched noise)")}
    best_name = max(matched, key=lambda k: matched[k]["ldct_psnr_db"])
    row = {"restore_fraction": setting[0], "restore_sigma_vox": setting[1], "texture_fraction": setting[2],
           "psnr_db": model["ldct_psnr_db"], "gain_over_input_db": model["ldct_psnr_db"] - low["ldct_psnr_db"],
           "ssim": model["ldct_ssim"],
           "noise_sd_hu": model["repeat_noise_sd_hu"], "noise_nps_peak_per_mm": model["repeat_nps_peak_per_mm"],
           "noise_nps_mean_per_mm": model["repeat_nps_mean_per_mm"],
           "input_nps_peak_per_mm": low["repeat_nps_peak_per_mm"],
           "input_nps_mean_per_mm": low["repeat_nps_mean_per_mm"],
           "best_matched_baseline": best_name, "best_matched_baseline_psnr_db": matched[best_name]["ldct_psnr_db"],
           "spurious_fraction": result["spurious"]["model"]["fraction_above_threshold"]}
    for diameter, contrast in LESION_COLUMNS:
        row[f"retained_{diameter:g}mm_{contrast:g}hu"] = retained(result["lesions"]["model"], diameter, contrast)
    return row


def table(rows: List[Dict[str, float]]) -> str:
    lesion_heads = " | ".join(f"retained {d:g} mm / {c:g} HU" for d, c in LESION_COLUMNS)
    lines = [f"| restore_fraction, restore_sigma_vox, texture_fraction | PSNR (dB) | gain over input (dB) | SSIM | "
             f"noise SD (HU) | noise NPS peak / mean f (1/mm) | {lesion_heads} | spurious > 20 HU | "
             f"best baseline at matched noise (dB) |",
             "|" + "---|" * (8 + len(LESION_COLUMNS))]
    for r in rows:
        lesions = " | ".join(f"{r[f'retained_{d:g}mm_{c:g}hu']:.2f}" for d, c in LESION_COLUMNS)
        setting = f"{r['restore_fraction']:g}, {r['restore_sigma_vox']:g}, {r['texture_fraction']:g}"
        lines.append(f"| {setting} | {r['psnr_db']:.2f} | {r['gain_over_input_db']:+.2f} | {r['ssim']:.4f} | "
                     f"{r['noise_sd_hu']:.1f} | {r['noise_nps_peak_per_mm']:.3f} / {r['noise_nps_mean_per_mm']:.3f} | "
                     f"{lesions} | {100 * r['spurious_fraction']:.1f} % | "
                     f"{r['best_matched_baseline_psnr_db']:.2f} ({r['best_matched_baseline'].split(' ')[0]}) |")
    first = rows[0]
    lines += ["", f"Input (dose 0.25) noise NPS peak / mean f: {first['input_nps_peak_per_mm']:.3f} / "
              f"{first['input_nps_mean_per_mm']:.3f} 1/mm."]
    return "\n".join(lines) + "\n"


def parse_setting(text: str) -> Tuple[float, float, float]:
    """``FRACTION,SIGMA[,TEXTURE]`` -> ``(restore_fraction, restore_sigma_vox, texture_fraction)``."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 3):
        raise argparse.ArgumentTypeError(f"a setting is FRACTION,SIGMA_VOX[,TEXTURE_FRACTION] (e.g. 1,0.7 or 0,0,0.4), "
                                         f"got {text!r}")
    return values[0], values[1], values[2] if len(values) == 3 else 0.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--settings", type=parse_setting, nargs="+",
                        default=[(0.0, 0.0, 0.0), (0.2, 0.0, 0.0), (1.0, 0.7, 0.0), (0.0, 0.0, 0.4)],
                        metavar="FRACTION,SIGMA_VOX[,TEXTURE_FRACTION]")
    parser.add_argument("--sources", nargs="+", default=["abdomen"], choices=list(lowdose.SOURCES))
    parser.add_argument("--bundle", type=Path, default=lowdose.BUNDLE)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bisection-steps", type=int, default=5)
    args = parser.parse_args(argv)
    for source in args.sources:
        rows = []
        for fraction, sigma, texture in args.settings:
            name = f"restore_{fraction:g}_{sigma:g}" + (f"_{texture:g}" if texture else "")
            folder = args.output_dir / source / name
            code = lowdose.main(["evaluate", "--bundle", str(args.bundle), "--output-dir", str(folder),
                                 "--sources", source, "--lesion-sources", source, "--threads", str(args.threads),
                                 "--bisection-steps", str(args.bisection_steps),
                                 "--override", f"restore_fraction={fraction}",
                                 "--override", f"restore_sigma_vox={sigma}",
                                 "--override", f"texture_fraction={texture}"])
            if code != 0:
                return code
            result = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))[source]
            rows.append(summarise((fraction, sigma, texture), result))
        with atomic_path(args.output_dir / source / "restore.json") as tmp:
            tmp.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        with atomic_path(args.output_dir / source / "restore.md") as tmp:
            tmp.write_text(table(rows), encoding="utf-8")
        print(f"## {source}\n\n{table(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
