"""Ignite handlers for the translation trainers: EMA, checkpoints, loss logs, validation, snapshots."""

from medgan.handlers.checkpoint import TrainingCheckpointer, latest_checkpoint, load_checkpoint, save_checkpoint
from medgan.handlers.ema import GeneratorEMA
from medgan.handlers.loss_logger import LossLogger
from medgan.handlers.snapshots import save_snapshot
from medgan.handlers.validation import TranslationValidator, image_errors

__all__ = [
    "GeneratorEMA",
    "LossLogger",
    "TrainingCheckpointer",
    "TranslationValidator",
    "image_errors",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "save_snapshot",
]
