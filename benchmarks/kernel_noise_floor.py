"""How low can a kernel converter's RMSE go? The sharp kernel's own noise that the smooth one lacks.

UB (smooth) and YA (sharp bone kernel) are two reconstructions of one acquisition. YA's noise at
high spatial frequencies was filtered out of UB, so no function of UB can predict it: the noise
standard deviation of YA in uniform regions (where UB's is far lower) bounds from below the RMSE of
any UB -> YA converter there. Prints the noise SD of both reconstructions on the held-out slices
80-99 (``medgan.metrics.image_quality.noise_sd``: automatic uniform ROIs inside the body) and the
unconverted RMSE in the body mask.

    .venv/bin/python benchmarks/kernel_noise_floor.py [--data-root ../shared/data]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from medgan.metrics.image_quality import noise_sd
from medgan.metrics.masks import body_mask_from_ct

PAIR = "ct/phantom_head_philips/thin1mm_kernel{}.nii.gz"
HELDOUT = slice(80, 100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    images = {k: nib.load(str(args.data_root / PAIR.format(k))) for k in ("UB", "YA")}
    volumes = {k: np.asarray(v.dataobj, dtype=np.float32)[:, :, HELDOUT] for k, v in images.items()}
    spacing = [float(s) for s in images["YA"].header.get_zooms()[:3]]
    body = body_mask_from_ct(volumes["YA"])
    noise = {k: noise_sd(v, spacing, mask=body) for k, v in volumes.items()}
    unconverted = float(np.sqrt(((volumes["YA"] - volumes["UB"])[body] ** 2).mean()))
    floor = noise["YA"]["noise_sd_hu"]
    print(json.dumps({"noise_sd_hu": {k: v["noise_sd_hu"] for k, v in noise.items()},
                      "uniform_roi_voxels": {k: v["n_voxels"] for k, v in noise.items()},
                      "rmse_unconverted_body_hu": round(unconverted, 1),
                      "rmse_at_70_percent_reduction_hu": round(0.3 * unconverted, 1),
                      "reduction_if_only_ya_noise_remained_percent": round(100 * (1 - floor / unconverted), 1)},
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
