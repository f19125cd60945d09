"""Time every metric profile on a CT-sized pair (default 512 x 512 x 300, float32).

Usage: python benchmarks/metrics_profiles.py [--shape 512 512 300] [--profiles synthrad2023 raw ...]

The pair is a smooth synthetic "head" (a water ellipsoid with a bone shell in air) and the same with
Gaussian noise of 20 HU; the body mask is computed from it. Prints one line per profile: seconds, values.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _phantom(shape):
    grids = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    radius = np.sqrt(grids[0] ** 2 / 0.8**2 + grids[1] ** 2 / 0.9**2 + grids[2] ** 2 / 1.2**2)
    volume = np.full(shape, -1000.0, dtype=np.float32)
    volume[radius < 0.95] = 1000.0
    volume[radius < 0.88] = 40.0
    return volume


def main() -> None:
    from medgan.metrics import PROFILES, body_mask_from_ct, evaluate_pair

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES))
    args = parser.parse_args()
    target = _phantom(tuple(args.shape))
    pred = target + np.random.default_rng(0).normal(0, 20, target.shape).astype(np.float32)
    start = time.perf_counter()
    mask = body_mask_from_ct(target)
    print(f"body mask: {time.perf_counter() - start:.1f} s")
    for name in args.profiles:
        start = time.perf_counter()
        values = evaluate_pair(pred, target, name, mask=mask if PROFILES[name].uses_mask else None)
        shown = ", ".join(f"{k}={v:.4f}" for k, v in values.items())
        print(f"{name}: {time.perf_counter() - start:.1f} s  {shown}")


if __name__ == "__main__":
    main()
