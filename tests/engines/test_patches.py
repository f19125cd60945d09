"""Patch sampling: shared crops, per-index reproducibility, rank-disjoint resumable indices, foreground weighting."""

from __future__ import annotations

import itertools

import torch
from torch.utils.data import DataLoader

from medgan.engines import IterationSampler, PairedPatchDataset, UnpairedPatchDataset, paired_patch_transform


def _coordinate_case(shape=(20, 18, 12)):
    grid = torch.arange(shape[0] * shape[1] * shape[2], dtype=torch.float32).reshape(1, *shape)
    return {"source": grid, "target": grid + 0.5}


def test_paired_crops_share_one_draw_and_are_reproducible():
    case = _coordinate_case()
    before = case["source"].clone()
    dataset = PairedPatchDataset([case], paired_patch_transform((8, 8, 8)), seed=3)
    first = [dataset[i] for i in range(6)]
    for sample in first:
        assert sample["source"].shape == (1, 8, 8, 8)
        torch.testing.assert_close(sample["target"] - sample["source"], torch.full((1, 8, 8, 8), 0.5))
    again = [PairedPatchDataset([case], paired_patch_transform((8, 8, 8)), seed=3)[i] for i in range(6)]
    for a, b in zip(first, again):
        torch.testing.assert_close(a["source"], b["source"])
    assert len({int(s["source"][0, 0, 0, 0]) for s in first}) > 1  # different indices, different crops
    torch.testing.assert_close(case["source"], before)  # input untouched


def test_foreground_weighted_sampling_stays_in_the_mask():
    shape = (24, 24, 16)
    case = _coordinate_case(shape)
    mask = torch.zeros(1, *shape)
    mask[:, 2:6, 3:5, 10:12] = 1.0  # a small "body" in a corner
    case["body_mask"] = mask
    masked = set(case["source"][mask > 0].long().tolist())
    weighted = PairedPatchDataset([case], paired_patch_transform((8, 8, 8), weight_key="body_mask"), seed=0)
    uniform = PairedPatchDataset([case], paired_patch_transform((8, 8, 8)), seed=0)
    hits_weighted = [bool(masked & set(weighted[i]["source"].long().flatten().tolist())) for i in range(12)]
    hits_uniform = [bool(masked & set(uniform[i]["source"].long().flatten().tolist())) for i in range(12)]
    assert all(hits_weighted)
    assert not all(hits_uniform)  # the weighting is what puts the patches there


def test_unpaired_draws_are_independent():
    source = {"source": torch.arange(16**3, dtype=torch.float32).reshape(1, 16, 16, 16)}
    target = {"target": -torch.arange(16**3, dtype=torch.float32).reshape(1, 16, 16, 16)}
    dataset = UnpairedPatchDataset([source], [target], paired_patch_transform((8, 8, 8), ["source"]),
                                   paired_patch_transform((8, 8, 8), ["target"]), seed=1)
    corners = [(int(dataset[i]["source"].flatten()[0]), -int(dataset[i]["target"].flatten()[0])) for i in range(12)]
    assert any(s != t for s, t in corners)


def test_iteration_sampler_is_rank_disjoint_and_resumes():
    rank0, rank1 = IterationSampler(2, 0, 2), IterationSampler(2, 1, 2)
    a = list(itertools.islice(iter(rank0), 8))
    b = list(itertools.islice(iter(rank1), 8))
    assert a == [0, 1, 4, 5, 8, 9, 12, 13] and b == [2, 3, 6, 7, 10, 11, 14, 15]
    rank0.start_iteration = lambda: 2
    assert list(itertools.islice(iter(rank0), 4)) == [8, 9, 12, 13]
    dataset = PairedPatchDataset([_coordinate_case()], paired_patch_transform((8, 8, 8)), seed=0)
    batches = DataLoader(dataset, batch_size=2, sampler=IterationSampler(2), num_workers=0)
    batch = next(iter(batches))
    assert batch["source"].shape == (2, 1, 8, 8, 8)
