"""Periodic whole-volume validation of a generator on held-out cases (an ignite handler)."""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from ignite.engine import Engine, Events
from monai.inferers import SlidingWindowInferer

from medgan.inferers.precision import Precision
from medgan.inferers.sliding_window import predict_volume
from medgan.handlers.snapshots import save_snapshot
from medgan.keys import Keys

logger = logging.getLogger(__name__)


def image_errors(pred: torch.Tensor, target: torch.Tensor, data_range: float,
                 mask: torch.Tensor | None = None) -> dict[str, float]:
    """MAE, RMSE and PSNR (``20 log10(data_range / RMSE)``, dB) in physical units, optionally in a mask."""
    diff = (pred.float() - target.float())
    if mask is not None:
        diff = diff[mask.bool()]
    mse = float((diff**2).mean())
    rmse = math.sqrt(mse)
    psnr = float("inf") if rmse == 0 else 20.0 * math.log10(data_range / rmse)
    return {"mae": float(diff.abs().mean()), "rmse": rmse, "psnr": psnr}


def class_fractions(values: torch.Tensor, classes: Mapping[str, Sequence[float]],
                    mask: torch.Tensor | None = None) -> dict[str, float]:
    """Fraction of the (masked) voxels in each ``[low, high)`` class, as ``<name>_fraction``."""
    inside = values[mask.bool()] if mask is not None else values.reshape(-1)
    count = max(1, inside.numel())
    return {f"{name}_fraction": float(((inside >= low) & (inside < high)).sum()) / count
            for name, (low, high) in classes.items()}


class TranslationValidator:
    """Every ``every_n_iterations`` (and at the end), predicts each held-out volume with the sliding
    window, converts to physical units (``value * value_scale + value_offset``, e.g. back to HU),
    computes MAE/RMSE/PSNR against the target, and writes ``validation.csv``, TensorBoard scalars
    (``val/``) and a PNG snapshot per case. The input's own errors (source vs target, the "do
    nothing" baseline) are logged once as model ``input``. Means over cases go to
    ``engine.state.metrics`` as ``val_mae``, ``val_rmse``, ``val_psnr``. Only rank 0 validates.

    Unpaired training (CycleGAN) has cases without a target: they get no error metrics, only the
    fractions of ``tissue_classes`` in the prediction (e.g. air / soft tissue / bone of a synthetic
    CT inside the MR's body mask: collapse or missing bone shows there) and a snapshot.

    Args:
        cases: dicts with ``source`` and optionally ``target`` ``(C, X, Y, Z)`` in network units (and
            optionally ``body_mask`` to restrict the metrics).
        network: the generator to evaluate (e.g. ``GeneratorEMA.network``), on the inferer's device.
        inferer: from :func:`medgan.inferers.make_sliding_window_inferer`.
        output_dir: folder for ``validation.csv`` and ``snapshots/``.
        every_n_iterations: validation period.
        value_scale: physical = value * value_scale + value_offset.
        value_offset: see ``value_scale``.
        data_range: PSNR peak in physical units (e.g. 4000 HU for [-1024, 3000]).
        case_names: names for the CSV and PNGs (default ``case0``, ...).
        precision: autocast precision for inference.
        window: PNG display window in physical units.
        diff_range: PNG difference window in physical units.
        tensorboard_dir: TensorBoard folder or None.
        tissue_classes: ``{name: (low, high)}`` in physical units; their fractions in the prediction
            are logged for every case (``<name>_fraction``). None: not logged.
        source_value_scale: physical source = value * source_value_scale + source_value_offset, when
            the source has other units than the prediction (MR -> CT); None: ``value_scale``.
        source_value_offset: see ``source_value_scale``.
        source_window: PNG display window of the source in its physical units (MR -> CT); None:
            ``window``.
    """

    def __init__(self, cases: Sequence[Mapping[str, torch.Tensor]], network: torch.nn.Module,
                 inferer: SlidingWindowInferer, output_dir: str | os.PathLike[str], every_n_iterations: int = 100,
                 value_scale: float = 1.0, value_offset: float = 0.0, data_range: float = 4000.0,
                 case_names: Sequence[str] | None = None, precision: Precision | str = Precision.FP32,
                 window: Sequence[float] = (-1000.0, 1000.0), diff_range: float = 200.0,
                 tensorboard_dir: str | os.PathLike[str] | None = None,
                 tissue_classes: Mapping[str, Sequence[float]] | None = None,
                 source_value_scale: float | None = None, source_value_offset: float = 0.0,
                 source_window: Sequence[float] | None = None) -> None:
        if not cases:
            raise ValueError("no validation cases given")
        self.cases = list(cases)
        self.network = network
        self.inferer = inferer
        self.output_dir = Path(output_dir)
        self.every_n_iterations = every_n_iterations
        self.value_scale = value_scale
        self.value_offset = value_offset
        self.data_range = data_range
        self.case_names = list(case_names) if case_names is not None else [f"case{i}" for i in range(len(cases))]
        self.precision = precision
        self.window = tuple(window)
        self.diff_range = diff_range
        self.tensorboard_dir = None if tensorboard_dir is None else Path(tensorboard_dir)
        self.tissue_classes = dict(tissue_classes or {})
        self.source_value_scale = source_value_scale
        self.source_value_offset = source_value_offset
        self.source_window = None if source_window is None else tuple(source_window)
        self.fieldnames = ["iteration", "model", "case", "mae", "rmse", "psnr",
                           *(f"{name}_fraction" for name in self.tissue_classes)]
        self.history: list[dict[str, Any]] = []
        self._baseline_done = False
        self._writer = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_n_iterations), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def _physical(self, value: torch.Tensor) -> torch.Tensor:
        return value.float() * self.value_scale + self.value_offset

    def _physical_source(self, value: torch.Tensor) -> torch.Tensor:
        if self.source_value_scale is None:
            return self._physical(value)
        return value.float() * self.source_value_scale + self.source_value_offset

    def _record(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        path = self.output_dir / "validation.csv"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fieldnames)
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    def validate(self, iteration: int) -> dict[str, float]:
        """Evaluate every case now; returns the means over cases (errors over the cases with a target)."""
        rows = []
        for name, case in zip(self.case_names, self.cases):
            source = self._physical_source(torch.as_tensor(case[Keys.SOURCE]))
            target = self._physical(torch.as_tensor(case[Keys.TARGET])) if Keys.TARGET in case else None
            mask = case.get(Keys.BODY_MASK)
            mask = None if mask is None else torch.as_tensor(mask)[0] > 0
            if not self._baseline_done and target is not None:
                self._record({"iteration": iteration, "model": "input", "case": name,
                              **image_errors(source[0], target[0], self.data_range, mask)})
            pred = self._physical(predict_volume(self.network, torch.as_tensor(case[Keys.SOURCE]), self.inferer,
                                                 self.precision))
            row: dict[str, Any] = {"iteration": iteration, "model": "generator", "case": name}
            if target is not None:
                row.update(image_errors(pred[0], target[0], self.data_range, mask))
            row.update(class_fractions(pred[0], self.tissue_classes, mask))
            self._record(row)
            rows.append(row)
            summary = (f"RMSE {row['rmse']:.1f}" if target is not None else
                       ", ".join(f"{key[:-9]} {100 * value:.0f} %" for key, value in row.items()
                                 if key.endswith("_fraction")))
            save_snapshot(self.output_dir / "snapshots" / f"{name}_iter{iteration:08d}.png", source[0], pred[0],
                          None if target is None else target[0], window=self.window, diff_range=self.diff_range,
                          title=f"{name} iteration {iteration}: {summary}", source_window=self.source_window)
        self._baseline_done = True
        keys = [key for key in self.fieldnames[3:] if any(key in r for r in rows)]
        means = {key: sum(r[key] for r in rows if key in r) / sum(1 for r in rows if key in r) for key in keys}
        logger.info("validation at iteration %d: %s", iteration,
                    ", ".join(f"{key} {value:.4g}" for key, value in means.items()))
        return means

    def __call__(self, engine: Engine) -> None:
        if getattr(engine.state, "rank", 0) != 0:
            return
        if any(r["iteration"] == engine.state.iteration and r["model"] == "generator" for r in self.history):
            return  # COMPLETED right after a periodic validation
        means = self.validate(engine.state.iteration)
        for key, value in means.items():
            engine.state.metrics[f"val_{key}"] = value
        if self.tensorboard_dir is not None:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.tensorboard_dir))
            for key, value in means.items():
                self._writer.add_scalar(f"val/{key}", value, engine.state.iteration)
            self._writer.flush()
