"""Intensity units of CT images that are not in Hounsfield units.

The CT template of Rorden et al. (NeuroImage 61:957, 2012), shipped beside the MNI152 templates,
stores *Cormack units*: an invertible piecewise-linear map of HU that stretches the soft-tissue range
ten-fold so that tools written for MR (darkest value 0, contrast in tissue) behave. With HU clamped at
``-1024``: ``C = HU + 1024`` below ``-124`` HU; ``C = 900 + 10 (HU + 124)`` for ``-124 <= HU < 76``
(``C`` in 900..2900); ``C = HU + 2824`` above. Checked on the template: brain tissue peaks at about
2590 C, i.e. 47 HU, air at about 15 C (-1009 HU).
"""

from __future__ import annotations

import numpy as np

_OFFSET = 1024.0  # C = HU + 1024 in the dark range
_MID_START_C = 900.0  # -124 HU
_MID_END_C = 2900.0  # 76 HU
_MID_GAIN = 10.0


def cormack_to_hu(values: np.ndarray) -> np.ndarray:
    """Convert Cormack units to HU (float32 array of the same shape).

    Args:
        values: an array of Cormack units, any shape; expected range about 0..~5000.
    """
    c = np.asarray(values, dtype=np.float64)
    hu = np.where(
        c < _MID_START_C,
        c - _OFFSET,
        np.where(c < _MID_END_C, (c - _MID_START_C) / _MID_GAIN + _MID_START_C - _OFFSET,
                 c - _MID_END_C + _MID_START_C + (_MID_END_C - _MID_START_C) / _MID_GAIN - _OFFSET),
    )
    return hu.astype(np.float32)


def hu_to_cormack(values: np.ndarray) -> np.ndarray:
    """Convert HU to Cormack units (float32); values below ``-1024`` HU are clamped to 0 C."""
    c = np.maximum(np.asarray(values, dtype=np.float64), -_OFFSET) + _OFFSET
    mid_span = (_MID_END_C - _MID_START_C) / _MID_GAIN  # 200 HU wide
    boosted = np.clip(c - _MID_START_C, 0.0, mid_span) * (_MID_GAIN - 1.0)
    return (c + boosted).astype(np.float32)
