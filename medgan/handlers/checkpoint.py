"""Atomic training checkpoints that MONAI's ``CheckpointLoader`` can restore.

A checkpoint is one ``torch.save`` of ``{name: obj.state_dict()}`` for the objects a trainer's
``checkpoint_objects()`` returns (plus e.g. ``"ema"``); it loads with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from ignite.engine import Engine, Events

from medgan.errors import MedganError
from medgan.utils.atomic import atomic_path

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint_(\d{8})\.pt$")


def save_checkpoint(path: str | os.PathLike[str], objects: Mapping[str, Any]) -> Path:
    """Write ``{name: obj.state_dict()}`` atomically to ``path``."""
    state = {name: obj.state_dict() for name, obj in objects.items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str], objects: Mapping[str, Any], map_location: str = "cpu") -> None:
    """Restore every object in ``objects`` from a checkpoint; names missing from the file are errors."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError) as err:
        raise MedganError(f"cannot read the checkpoint ({err})", path, "point to a checkpoint_*.pt written by training") from err
    missing = sorted(set(objects) - set(state))
    if missing:
        raise MedganError(f"the checkpoint lacks {missing} (it holds {sorted(state)})", path,
                          "resume with the same trainer type and options that wrote it")
    for name, obj in objects.items():
        obj.load_state_dict(state[name])
    logger.info("restored %s from %s", ", ".join(objects), path)


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest iteration in ``directory`` (None when there is none)."""
    folder = Path(directory)
    if not folder.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)))
    return found[-1][1] if found else None


class TrainingCheckpointer:
    """Saves ``checkpoint_<iteration>.pt`` every ``every_n_iterations`` and at the end of training,
    keeping the newest ``keep_last``; only rank 0 writes.

    Args:
        directory: checkpoint folder.
        objects: name -> object with ``state_dict`` (e.g. ``trainer.checkpoint_objects()`` plus ``ema``).
        every_n_iterations: save period.
        keep_last: how many checkpoints to keep (older ones are deleted after a successful save).
    """

    def __init__(self, directory: str | os.PathLike[str], objects: Mapping[str, Any], every_n_iterations: int = 500,
                 keep_last: int = 2) -> None:
        if every_n_iterations < 1 or keep_last < 1:
            raise ValueError("every_n_iterations and keep_last must be at least 1")
        self.directory = Path(directory)
        self.objects = dict(objects)
        self.every_n_iterations = every_n_iterations
        self.keep_last = keep_last

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_n_iterations), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if getattr(engine.state, "rank", 0) != 0:
            return
        path = self.directory / f"checkpoint_{engine.state.iteration:08d}.pt"
        if path.exists():
            return
        save_checkpoint(path, self.objects)
        logger.info("saved %s", path)
        found = sorted(p for p in self.directory.iterdir() if _NAME.match(p.name))
        for old in found[: -self.keep_last]:
            old.unlink()
