"""Benchmark: seconds and peak memory to simulate low dose for a 512 x 512 x 100 CT.

Each path runs in its own child process (so peak RSS is that path's alone) with ``--threads``
threads over slices. The machine load (1-minute load average) is printed before and after, because
the figures are only comparable on an otherwise idle machine.

    .venv/bin/python benchmarks/bench_lowdose.py [--data-root ../shared/data] [--threads 2]
        [--paths projection fast] [--views 360]

Input: ``ct/phantom_head_philips/thin1mm_kernelUB.nii.gz`` (real head phantom CT, 512 x 512 x 100,
0.45 mm pixels). Prints one JSON line per path and a summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

INPUT = "ct/phantom_head_philips/thin1mm_kernelUB.nii.gz"


def _child(args: argparse.Namespace) -> None:
    import nibabel as nib
    import numpy as np

    from medgan.transforms.degradation.lowdose import LowDoseParameters, simulate_low_dose, simulate_low_dose_fast

    image = nib.load(str(args.data_root / INPUT))
    hu = np.asarray(image.dataobj, dtype=np.float32)[:, :, : args.slices]
    pixel_mm = float(image.header.get_zooms()[0])
    rss_loaded_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    params = LowDoseParameters(0.25, seed=0, n_views=args.views)
    simulate = simulate_low_dose if args.child == "projection" else simulate_low_dose_fast
    start, cpu_start = time.perf_counter(), time.process_time()
    low = simulate(hu, pixel_mm, params, num_threads=args.threads)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    brain = (hu > 0) & (hu < 100)
    print(json.dumps({
        "path": args.child, "shape": list(hu.shape), "views": params.for_shape(*hu.shape[:2]).n_views,
        "threads": args.threads, "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
        "seconds_per_100_slices": round(100.0 * seconds / hu.shape[2], 1),
        "peak_rss_mb": round(peak_mb), "rss_after_loading_mb": round(rss_loaded_mb),
        "noise_sd_hu_0_100": round(float((low - hu)[brain].std()), 1),
    }))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--views", type=int, default=None, help="projection views (default: automatic, 360)")
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--paths", nargs="+", default=["projection", "fast"], choices=["projection", "fast"])
    parser.add_argument("--child", choices=["projection", "fast"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return 0
    if not (args.data_root / INPUT).exists():
        print(f"missing {args.data_root / INPUT}; pass --data-root", file=sys.stderr)
        return 2
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    results = []
    for path in args.paths:
        command = [sys.executable, __file__, "--child", path, "--data-root", str(args.data_root),
                   "--threads", str(args.threads), "--slices", str(args.slices)]
        if args.views:
            command += ["--views", str(args.views)]
        line = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        print(line, flush=True)
        results.append(json.loads(line))
        print(f"load average after {path}: {os.getloadavg()[0]:.2f}")
    print("| path | views | threads | seconds | s / 100 slices | peak RSS MB | noise SD HU |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['path']} | {r['views']} | {r['threads']} | {r['seconds']} | {r['seconds_per_100_slices']} "
              f"| {r['peak_rss_mb']} | {r['noise_sd_hu_0_100']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
