"""Turn whole paired volumes into training and held-out cases for :func:`medgan.engines.train.train_paired`."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from medgan.errors import GeometryMismatchError

logger = logging.getLogger(__name__)


def threshold_body_mask(volume_hu: np.ndarray, threshold_hu: float = -500.0, dilation_vox: int = 3) -> np.ndarray:
    """Voxels above ``threshold_hu``, dilated by ``dilation_vox``: a sampling weight and metric region
    for CT (air and table padding stay out). ``(X, Y, Z)`` -> bool ``(X, Y, Z)``."""
    mask = volume_hu > threshold_hu
    return ndimage.binary_dilation(mask, iterations=dilation_vox) if dilation_vox > 0 else mask


def split_paired_volume(source: np.ndarray, target: np.ndarray, heldout_slices: int = 20, gap_slices: int = 4,
                        value_scale: float = 1000.0, value_offset: float = 0.0, threshold_hu: float = -500.0,
                        margin_vox: int = 8) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]],
                                                      dict[str, Sequence[int]]]:
    """Split one voxel-aligned pair along Z: the last ``heldout_slices`` slices are held out, the
    ``gap_slices`` before them are dropped, the rest trains. Both parts are cropped in-plane to the
    body's bounding box (+``margin_vox``) so no time is spent on air.

    Args:
        source: ``(X, Y, Z)`` in physical units (HU).
        target: ``(X, Y, Z)`` on the same grid.
        heldout_slices: slices held out at the end of Z.
        gap_slices: slices dropped between training and held-out slices (neighbour slices correlate).
        value_scale: network value = (physical - value_offset) / value_scale.
        value_offset: see ``value_scale``.
        threshold_hu: body threshold on the source for the mask (see :func:`threshold_body_mask`).
        margin_vox: in-plane margin around the body.

    Returns:
        ``(train_cases, heldout_cases, ranges)``; cases hold ``source``, ``target``, ``body_mask``
        ``(1, x, y, z)``; ``ranges`` gives the voxel ranges used (``train_z``, ``heldout_z``, ``x``, ``y``).
    """
    if source.shape != target.shape:
        raise GeometryMismatchError(f"source {source.shape} and target {target.shape} are not on one grid",
                                    fix="resample the target onto the source grid first")
    depth = source.shape[2]
    first_heldout = depth - heldout_slices
    train_end = first_heldout - gap_slices
    if heldout_slices < 1 or train_end < 1:
        raise ValueError(f"cannot hold out {heldout_slices} (+{gap_slices} gap) of {depth} slices")
    mask = threshold_body_mask(source, threshold_hu)
    xs, ys = np.where(mask.any(axis=2))
    if xs.size == 0:
        raise ValueError(f"no voxel above {threshold_hu} HU: is the source in HU?")
    x0, x1 = max(int(xs.min()) - margin_vox, 0), min(int(xs.max()) + margin_vox + 1, source.shape[0])
    y0, y1 = max(int(ys.min()) - margin_vox, 0), min(int(ys.max()) + margin_vox + 1, source.shape[1])

    def case(z: slice) -> dict[str, torch.Tensor]:
        region = (slice(x0, x1), slice(y0, y1), z)
        return {"source": torch.from_numpy((source[region] - value_offset) / value_scale)[None].float(),
                "target": torch.from_numpy((target[region] - value_offset) / value_scale)[None].float(),
                "body_mask": torch.from_numpy(mask[region].astype(np.float32))[None]}

    ranges = {"train_z": (0, train_end), "heldout_z": (first_heldout, depth), "x": (x0, x1), "y": (y0, y1)}
    logger.info("train slices %s, held-out slices %s, in-plane crop x %s y %s", ranges["train_z"],
                ranges["heldout_z"], ranges["x"], ranges["y"])
    return [case(slice(0, train_end))], [case(slice(first_heldout, depth))], ranges
