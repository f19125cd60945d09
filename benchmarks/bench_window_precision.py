"""Benchmark: lower-precision arithmetic for the denoising network's windows on the CPU, speed and HU error.

The bundle issue's CPU goal asks for a faster run whose output stays within 1 HU (99th percentile) of
the naive fp32 one. This measures, on one 96 x 96 x 16 window at a time, what the arithmetic options
give: OpenVINO fp32 (the shipped backend), OpenVINO bf16 (``INFERENCE_PRECISION_HINT``), PyTorch fp32 and
bf16 autocast, and, when the optional ``nncf`` package is installed (``pip install nncf``; not a medgan
dependency), OpenVINO int8 after NNCF post-training quantisation calibrated on windows of the training
slices. Windows: the real abdomen CT (``ct/abdomen_totalsegmentator/example_ct.nii.gz``) with 45 HU of
Gaussian noise (about dose 0.25 there); test windows from the held-out slices 84-111, calibration windows
from the training slices. Errors are |output - PyTorch fp32 output| in HU over the test windows.

    .venv/bin/python benchmarks/bench_window_precision.py [--windows 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, List

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "ct_lowdose_denoising"
HELDOUT_FIRST_SLICE = 84  # the denoising pipeline's held-out abdomen slab starts here


def real_windows(ct: np.ndarray, z_range: tuple, count: int, roi: tuple, window_hu: tuple,
                 rng: np.random.Generator) -> List[np.ndarray]:
    """``count`` windows of ``ct`` (at least 20 % above -500 HU) with 45 HU of noise, normalised like the bundle."""
    low, high = window_hu
    out = []
    while len(out) < count:
        corner = [int(rng.integers(0, ct.shape[0] - roi[0] + 1)), int(rng.integers(0, ct.shape[1] - roi[1] + 1)),
                  int(rng.integers(z_range[0], z_range[1] - roi[2] + 1))]
        window = ct[corner[0]:corner[0] + roi[0], corner[1]:corner[1] + roi[1], corner[2]:corner[2] + roi[2]]
        if (window > -500).mean() < 0.2:
            continue
        noisy = window + rng.normal(0.0, 45.0, roi)
        out.append(((np.clip(noisy, low, high) - low) / (high - low) * 2.0 - 1.0)[None, None].astype(np.float32))
    return out


def timed(function: Callable[[np.ndarray], np.ndarray], windows: List[np.ndarray]) -> tuple:
    """Mean seconds per window after two warm-up calls, and the outputs."""
    for window in windows[:2]:
        function(window)
    start = time.perf_counter()
    outputs = [function(window) for window in windows]
    return (time.perf_counter() - start) / len(windows), outputs


def main(argv=None) -> int:
    import nibabel as nib
    import openvino as ov
    from monai.bundle import ConfigParser

    from medgan.bundle.loading import open_bundle

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args(argv)
    source = args.data_root / "ct" / "abdomen_totalsegmentator" / "example_ct.nii.gz"
    if not source.is_file():
        print(f"no {source} (pass --data-root)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    config = ConfigParser()
    config.read_config(BUNDLE / "configs" / "inference.yaml")
    roi = tuple(int(v) for v in config["roi_size_vox"])
    window_hu = tuple(float(v) for v in config["window_hu"])
    hu_per_unit = (window_hu[1] - window_hu[0]) / 2.0
    network = open_bundle(BUNDLE, device="cpu", overrides={"cpu_backend": "torch"}).network.eval()
    ct = np.asarray(nib.load(str(source)).dataobj, dtype=np.float32)
    rng = np.random.default_rng(0)
    test = real_windows(ct, (HELDOUT_FIRST_SLICE, ct.shape[2]), args.windows, roi, window_hu, rng)
    calibration = real_windows(ct, (0, HELDOUT_FIRST_SLICE), 64, roi, window_hu, rng)

    def torch_run(window: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(window)).float().numpy()

    def torch_bf16(window: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return network(torch.from_numpy(window)).float().numpy()

    with torch.no_grad():
        model = ov.convert_model(network, example_input=torch.from_numpy(test[0]))
    core = ov.Core()

    def compiled(ov_model, precision: str) -> Callable[[np.ndarray], np.ndarray]:
        runner = core.compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": args.threads,
                                                      "INFERENCE_PRECISION_HINT": precision,
                                                      "PERFORMANCE_HINT": "LATENCY"})
        return lambda window: np.asarray(runner(window)[0], dtype=np.float32)

    variants = {"PyTorch fp32 (naive's arithmetic)": torch_run, "PyTorch bf16 autocast": torch_bf16,
                "OpenVINO fp32 (shipped)": compiled(model, "f32"), "OpenVINO bf16": compiled(model, "bf16")}
    try:
        import nncf
    except ImportError:
        print("nncf not installed: no int8 row (pip install nncf)", file=sys.stderr)
    else:
        quantised = nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration))
        variants["OpenVINO int8 (NNCF post-training quantisation)"] = compiled(quantised, "f32")
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    print(f"CPU: {core.get_property('CPU', 'FULL_DEVICE_NAME')}; OpenVINO capabilities {', '.join(capabilities)}; "
          f"{args.threads} threads; {len(test)} held-out windows {'x'.join(map(str, roi))}")
    print("| arithmetic | s / window | speed vs PyTorch fp32 | |diff| p99 / max (HU) |")
    print("|---|---:|---:|---|")
    reference_seconds, reference = timed(torch_run, test)
    flat_reference = np.concatenate([r.ravel() for r in reference])
    for name, function in variants.items():
        seconds, outputs = (reference_seconds, reference) if function is torch_run else timed(function, test)
        diff = np.abs(np.concatenate([o.ravel() for o in outputs]) - flat_reference) * hu_per_unit
        print(f"| {name} | {seconds:.4f} | {reference_seconds / seconds:.2f} | "
              f"{np.percentile(diff, 99):.2f} / {diff.max():.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
