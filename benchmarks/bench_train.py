"""Training throughput and peak memory of one pix2pix step per generator size, patch size and precision.

Each configuration runs in its own process (so peak RSS is per configuration): a
``PairedGANTrainer`` with a residual U-Net and a conditional PatchGAN (16 base channels) on random
patches; after ``--warmup`` iterations, ``--iterations`` are timed. Prints a Markdown table and,
with ``--csv``, writes the numbers.

    .venv/bin/python benchmarks/bench_train.py --sizes small medium --patches 64 96 --precisions fp32 bf16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SIZES = {"small": (16, 32, 64), "medium": (16, 32, 64, 128), "large": (32, 64, 128, 256)}


def run_one(size: str, patch: int, precision: str, batch_size: int, warmup: int, iterations: int) -> dict:
    import torch

    from medgan.engines import PairedGANTrainer
    from medgan.networks import PatchDiscriminator, ResidualUNet, max_discriminator_layers

    torch.manual_seed(0)
    generator = ResidualUNet(1, 1, filters=SIZES[size])
    discriminator = PatchDiscriminator(2, channels=16, num_layers=min(3, max_discriminator_layers((patch,) * 3)))
    x = torch.randn(batch_size, 1, patch, patch, patch)
    batch = {"source": x, "target": x + 0.1 * torch.randn_like(x)}
    total = warmup + iterations
    trainer = PairedGANTrainer("cpu", 1, [batch] * total, generator, discriminator,
                               torch.optim.Adam(generator.parameters()), torch.optim.Adam(discriminator.parameters()),
                               epoch_length=total, precision=precision)
    stamps: list[float] = []
    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: stamps.append(time.perf_counter()))
    trainer.run()
    timed = stamps[warmup - 1:] if warmup > 0 else stamps
    seconds = (timed[-1] - timed[0]) / (len(timed) - 1)
    return {"size": size, "generator_params": sum(p.numel() for p in generator.parameters()), "patch": patch,
            "precision": precision, "batch_size": batch_size, "seconds_per_iteration": seconds,
            "iterations_per_second": 1.0 / seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads(), "skipped_steps": getattr(trainer.state, "skipped_steps", 0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"], choices=sorted(SIZES))
    parser.add_argument("--patches", nargs="+", type=int, default=[64, 96])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--csv", default=None, help="write the results to this CSV file")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per configuration; one that runs longer is reported as not finished")
    parser.add_argument("--one", nargs=3, metavar=("SIZE", "PATCH", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        size, patch, precision = args.one
        print(json.dumps(run_one(size, int(patch), precision, args.batch_size, args.warmup, args.iterations)))
        return 0
    results = []
    for size in args.sizes:
        for patch in args.patches:
            for precision in args.precisions:
                command = [sys.executable, __file__, "--one", size, str(patch), precision, "--batch-size",
                           str(args.batch_size), "--warmup", str(args.warmup), "--iterations", str(args.iterations)]
                try:
                    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    print(f"| {size} | | {patch}^3 x{args.batch_size} | {precision} | did not finish "
                          f"{args.warmup + args.iterations} iterations in {args.timeout:.0f} s | | |", flush=True)
                    continue
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print("| generator | params | patch | precision | s/iteration | iterations/s | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:  # (configurations that timed out were printed as they happened)
        print(f"| {r['size']} | {r['generator_params'] / 1e6:.2f}M | {r['patch']}^3 x{r['batch_size']} | {r['precision']} | "
              f"{r['seconds_per_iteration']:.2f} | {r['iterations_per_second']:.3f} | {r['peak_rss_mib']:.0f} |")
    if args.csv and not results:
        print(f"no configuration finished: {args.csv} not written", file=sys.stderr)
    elif args.csv:
        import csv

        from medgan.utils.atomic import atomic_path

        with atomic_path(args.csv) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(results[0]))
            writer.writeheader()
            writer.writerows(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
