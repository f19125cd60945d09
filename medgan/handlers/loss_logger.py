"""Per-iteration loss logging to CSV and TensorBoard (rank 0 only)."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)


def scalar_outputs(output: Any) -> dict[str, float]:
    """The float-valued entries of a trainer output (the losses and mean logits)."""
    if not isinstance(output, dict):
        return {}
    return {str(k): float(v) for k, v in output.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class LossLogger:
    """Appends ``iteration,<loss columns>`` rows to a CSV file every ``every`` iterations and writes the
    same scalars to TensorBoard under ``train/``.

    The CSV is an append-only log (a resumed run appends after the restored iteration; rows a crashed
    run wrote after its last checkpoint stay, and readers keep the last row per iteration).

    Args:
        csv_path: CSV file (created with a header; its folder is created).
        tensorboard_dir: TensorBoard log folder, or None.
        every: logging period in iterations.
    """

    def __init__(self, csv_path: str | os.PathLike[str], tensorboard_dir: str | os.PathLike[str] | None = None,
                 every: int = 1) -> None:
        self.csv_path = Path(csv_path)
        self.tensorboard_dir = None if tensorboard_dir is None else Path(tensorboard_dir)
        self.every = every
        self._columns: list[str] | None = None
        self._writer = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self)
        engine.add_event_handler(Events.COMPLETED, self.close)

    def __call__(self, engine: Engine) -> None:
        if getattr(engine.state, "rank", 0) != 0:
            return
        values = scalar_outputs(engine.state.output)
        if not values:
            return
        if self._columns is None:
            self._columns = sorted(values)
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            if not self.csv_path.exists() or self.csv_path.stat().st_size == 0:
                with open(self.csv_path, "w", newline="") as handle:
                    csv.writer(handle).writerow(["iteration", *self._columns])
        with open(self.csv_path, "a", newline="") as handle:
            csv.writer(handle).writerow([engine.state.iteration, *(f"{values.get(c, float('nan')):.6g}"
                                                                   for c in self._columns)])
        if self.tensorboard_dir is not None:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.tensorboard_dir))
            for name, value in values.items():
                self._writer.add_scalar(f"train/{name}", value, engine.state.iteration)

    def close(self, engine: Engine | None = None) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
