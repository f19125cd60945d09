"""Device selection shared by training and inference."""

from __future__ import annotations

import logging

import torch

from medgan.errors import MedganError

logger = logging.getLogger(__name__)


def select_device(device: str = "auto") -> torch.device:
    """Resolve ``auto|cpu|cuda|cuda:N`` to a :class:`torch.device`.

    ``auto`` picks CUDA when a device is visible, the CPU otherwise. Asking for CUDA on a machine
    without it is an error, never a silent fall-back to the CPU.
    """
    name = device.strip().lower()
    if name == "auto":
        chosen = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        logger.info("device auto -> %s", chosen)
        return chosen
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MedganError(f"device '{device}' was requested but no CUDA device is visible",
                              fix="use --device cpu or --device auto, or install a CUDA build of torch")
        return torch.device(name)
    raise MedganError(f"unknown device '{device}'", fix="use auto, cpu, cuda or cuda:N")
