"""Held-out slab split of a paired volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgan.engines.volumes import split_paired_volume
from medgan.errors import GeometryMismatchError


def test_split_holds_out_the_last_slices_with_a_gap_and_crops_to_the_body():
    source = np.full((40, 30, 50), -1000.0, dtype=np.float32)
    source[10:20, 5:25, :] = 40.0  # the "body"
    target = source + 100.0
    source_before = source.copy()
    train, held, ranges = split_paired_volume(source, target, heldout_slices=10, gap_slices=3, margin_vox=2)
    assert ranges["train_z"] == (0, 37) and ranges["heldout_z"] == (40, 50)
    assert ranges["x"] == (10 - 3 - 2, 20 + 3 + 2) and ranges["y"] == (0, 30)  # mask dilated by 3, margin 2
    assert train[0]["source"].shape == (1, 20, 30, 37) and held[0]["target"].shape == (1, 20, 30, 10)
    torch.testing.assert_close(held[0]["target"] - held[0]["source"], torch.full((1, 20, 30, 10), 0.1))
    assert held[0]["body_mask"].sum() > 0 and held[0]["body_mask"].max() == 1.0
    np.testing.assert_array_equal(source, source_before)


def test_split_refuses_mismatched_or_too_short_volumes():
    with pytest.raises(GeometryMismatchError):
        split_paired_volume(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="cannot hold out"):
        split_paired_volume(np.zeros((4, 4, 10)), np.zeros((4, 4, 10)), heldout_slices=8, gap_slices=2)
