"""Mixed precision: one place that maps ``fp32|bf16|fp16`` and a device to autocast and scalers."""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from medgan.errors import MedganError
from medgan.keys import StrEnum


class Precision(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


def check_precision(precision: Precision | str, device: torch.device) -> Precision:
    """Validate a precision for a device: fp16 needs CUDA (CPU fp16 convolutions are slow and
    unscaled); bf16 works on both."""
    chosen = Precision(precision)
    if chosen == Precision.FP16 and device.type != "cuda":
        raise MedganError(f"precision fp16 needs a CUDA device, got {device}",
                          fix="use precision bf16 or fp32 on the CPU")
    return chosen


def autocast(precision: Precision | str, device: torch.device) -> ContextManager:
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    chosen = Precision(precision)
    if chosen == Precision.FP32:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if chosen == Precision.BF16 else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(precision: Precision | str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 on CUDA (bf16 has fp32's exponent range and needs
    none). A disabled scaler passes losses and steps through unchanged, so one code path serves all."""
    enabled = Precision(precision) == Precision.FP16 and device.type == "cuda"
    return torch.amp.GradScaler(device.type if enabled else "cpu", enabled=enabled)
