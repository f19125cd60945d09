"""Safe weight files: state dictionaries only, checked against a sha256 before use.

A bundle's ``models/model.pt`` is loaded with ``torch.load(weights_only=True)``, which refuses
to unpickle anything but tensors and plain containers, so a planted pickle payload never runs.
``.safetensors`` files are read with safetensors, which has no code path at all.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from medgan.errors import BundleError
from medgan.utils.atomic import atomic_path, sha256_file

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


def load_state_dict(path: PathLike, expected_sha256: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Load a generator state dict from ``path`` safely.

    Args:
        path: a ``.pt``/``.pth`` file holding a state dict (optionally under a ``"state_dict"`` or
            ``"generator"`` key) or a ``.safetensors`` file.
        expected_sha256: hex digest the file must have; ``None`` skips the check (only for files
            the caller produced itself).

    Raises:
        BundleError: the file is missing, its hash differs, or it holds anything but tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError("weights file not found", path, "check the bundle's models/ folder")
    if expected_sha256 is not None:
        actual = sha256_file(path)
        if actual != expected_sha256.lower():
            raise BundleError(
                f"weights sha256 {actual} does not match the expected {expected_sha256}",
                path,
                "the file was changed or corrupted: restore the bundle's original weights, "
                "or update the hash in metadata.json only if you trained these weights yourself",
            )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own error types
            raise BundleError(f"not a valid safetensors file ({err})", path, "re-export the weights") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BundleError(
            f"refused to load: the file holds objects other than tensors ({first_line})",
            path,
            "medgan only loads plain state dicts; re-save the weights with torch.save(model.state_dict())",
        ) from None
    for key in ("state_dict", "generator"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BundleError("the file is not a state dict of tensors", path,
                          "re-save the weights with torch.save(model.state_dict())")
    return obj


def save_state_dict(state_dict: Dict[str, torch.Tensor], path: PathLike) -> str:
    """Write a state dict atomically (``.pt`` or ``.safetensors`` by suffix); return its sha256."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(tmp))
        else:
            torch.save(tensors, tmp)
    digest = sha256_file(path)
    logger.info("wrote weights %s (sha256 %s)", path, digest)
    return digest
