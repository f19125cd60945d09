"""Benchmark: seconds per sliding window of each CT bundle's network, eager vs TorchScript variants.

Times one network call on one window of the bundle's ``roi_size_vox`` (random input of the
normalised range's scale) after warm-up calls, for PyTorch eager, a frozen TorchScript trace
(``torch.jit.freeze``) and ``torch.jit.optimize_for_inference``, and reports the largest output
difference from eager. The bundles ship eager: these variants gave no consistent gain on the
2-core AVX2 machines of docs/running.md (their spread from run to run is larger than their difference).

    .venv/bin/python benchmarks/bench_window.py [--bundles ct_lowdose_denoising ...] [--calls 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Tuple

import torch

BUNDLES = ("ct_lowdose_denoising", "ct_kernel_conversion", "ct_super_resolution")
ROOT = Path(__file__).resolve().parents[1]


def time_calls(function: Callable[[torch.Tensor], torch.Tensor], window: torch.Tensor, calls: int,
               warmup: int = 3) -> Tuple[float, torch.Tensor]:
    """Mean seconds per call after ``warmup`` calls, and the last output."""
    with torch.inference_mode():
        for _ in range(warmup):
            function(window)
        start = time.perf_counter()
        for _ in range(calls):
            output = function(window)
    return (time.perf_counter() - start) / calls, output


def main(argv=None) -> int:
    from medgan.bundle.loading import open_bundle
    from monai.bundle import ConfigParser

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundles", nargs="+", default=list(BUNDLES), choices=BUNDLES)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print("| bundle | window | eager s | frozen TorchScript s | optimize_for_inference s | max |diff| |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.bundles:
        network = open_bundle(ROOT / "bundles" / name, device="cpu").network.eval()
        config = ConfigParser()
        config.read_config(ROOT / "bundles" / name / "configs" / "inference.yaml")
        roi = tuple(int(v) for v in config["roi_size_vox"])
        window = torch.randn(1, 1, *roi) * 0.1
        eager, reference = time_calls(network, window, args.calls)
        with torch.no_grad():
            frozen = torch.jit.freeze(torch.jit.trace(network, window).eval())
            optimised = torch.jit.optimize_for_inference(torch.jit.trace(network, window).eval())
        frozen_s, frozen_out = time_calls(frozen, window, args.calls)
        optimised_s, optimised_out = time_calls(optimised, window, args.calls)
        difference = max(float((frozen_out - reference).abs().max()), float((optimised_out - reference).abs().max()))
        print(f"| {name} | {'x'.join(map(str, roi))} | {eager:.4f} | {frozen_s:.4f} | {optimised_s:.4f} | "
              f"{difference:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
