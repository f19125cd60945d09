"""Reproducible 3D patch sampling for training.

Every sample is a pure function of ``(seed, sample index)``: the dataset seeds its random
transforms from that pair, and :class:`IterationSampler` numbers samples by the trainer's global
iteration. A resumed run therefore draws exactly the patches an uninterrupted run would, with any
number of loader workers, and DDP ranks draw disjoint samples.
"""

from __future__ import annotations

from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import Compose, RandSpatialCropd, RandWeightedCropd, Randomizable
from torch.utils.data import Dataset, Sampler

from medgan.keys import Keys

Case = Mapping[str, torch.Tensor]


def _as_case(case: Case) -> dict[str, torch.Tensor]:
    """The case's arrays as float32 channel-first tensors (shared, never modified in place)."""
    out = {}
    for key, value in case.items():
        tensor = value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(np.asarray(value))
        # (MetaTensor metadata is dropped: patches need none)
        if tensor.ndim != 4:
            raise ValueError(f"case key {key!r} must be channel-first (C, X, Y, Z), got shape {tuple(tensor.shape)}")
        out[key] = tensor.float()
    return out


def paired_patch_transform(patch_size_vox: Sequence[int], keys: Sequence[str] = (Keys.SOURCE, Keys.TARGET),
                           weight_key: str | None = None) -> Compose:
    """One random crop shared by all ``keys`` (so source and target patches stay aligned).

    With ``weight_key`` (e.g. ``body_mask``) the crop centre is drawn with probability proportional
    to that map (MONAI ``RandWeightedCropd``): foreground-weighted sampling. For super-resolution on
    a pre-upsampled grid, thick and thin volumes share the grid, so the same crop matches in
    physical space.
    """
    size = [int(s) for s in patch_size_vox]
    if weight_key is None:
        return Compose([RandSpatialCropd(keys=list(keys), roi_size=size, random_size=False)])
    return Compose([RandWeightedCropd(keys=list(keys) + [weight_key], w_key=weight_key, spatial_size=size,
                                      num_samples=1)])


class _SeededPatches:
    """Shared machinery: cases in memory, a transform re-seeded per sample."""

    def __init__(self, transform: Callable, seed: int) -> None:
        if not isinstance(transform, Randomizable):
            raise TypeError("transform must be a MONAI Randomizable (e.g. a Compose) so it can be seeded per sample")
        self.transform = transform
        self.seed = int(seed)

    def _draw(self, cases: Sequence[dict[str, torch.Tensor]], rng: np.random.Generator,
              keep: Sequence[str]) -> dict[str, torch.Tensor]:
        case = cases[int(rng.integers(len(cases)))]
        self.transform.set_random_state(seed=int(rng.integers(2**31 - 1)))
        out = self.transform(dict(case))
        if isinstance(out, list):  # RandWeightedCropd returns a list of num_samples dicts
            out = out[0]
        return {key: torch.as_tensor(out[key]) for key in keep}


class PairedPatchDataset(_SeededPatches, Dataset):
    """Aligned ``source``/``target`` patches from paired volumes (same grid).

    Args:
        cases: dicts with ``source`` and ``target`` (and optionally ``body_mask``) arrays ``(C, X, Y, Z)``,
            already normalised for the network; kept in memory.
        transform: seeded per sample; usually :func:`paired_patch_transform`.
        seed: base seed; sample ``i`` depends only on ``(seed, i)``.
    """

    def __init__(self, cases: Sequence[Case], transform: Callable, seed: int = 0) -> None:
        super().__init__(transform, seed)
        if not cases:
            raise ValueError("no training cases given")
        self.cases = [_as_case(c) for c in cases]
        for index, case in enumerate(self.cases):
            if case[Keys.SOURCE].shape[1:] != case[Keys.TARGET].shape[1:]:
                raise ValueError(f"case {index}: source {tuple(case[Keys.SOURCE].shape)} and target "
                                 f"{tuple(case[Keys.TARGET].shape)} are not on one grid")

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        return self._draw(self.cases, rng, (Keys.SOURCE, Keys.TARGET))


class UnpairedPatchDataset(_SeededPatches, Dataset):
    """Independent ``source`` and ``target`` patches (CycleGAN): each sample draws a source case and
    crop and, separately, a target case and crop.

    Args:
        source_cases: dicts with ``source`` (optionally ``body_mask``) arrays ``(C, X, Y, Z)``.
        target_cases: dicts with ``target`` (optionally ``body_mask``).
        source_transform: crop for source cases (keys ``source`` [+ weight key]).
        target_transform: crop for target cases (keys ``target`` [+ weight key]).
        seed: base seed.
    """

    def __init__(self, source_cases: Sequence[Case], target_cases: Sequence[Case], source_transform: Callable,
                 target_transform: Callable, seed: int = 0) -> None:
        super().__init__(source_transform, seed)
        if not source_cases or not target_cases:
            raise ValueError("CycleGAN needs at least one source and one target case")
        self.target_patches = _SeededPatches(target_transform, seed)
        self.source_cases = [_as_case(c) for c in source_cases]
        self.target_cases = [_as_case(c) for c in target_cases]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        sample = self._draw(self.source_cases, rng, (Keys.SOURCE,))
        sample.update(self.target_patches._draw(self.target_cases, rng, (Keys.TARGET,)))
        return sample


class IterationSampler(Sampler[int]):
    """Endless sample indices numbered by the trainer's global iteration.

    At iteration ``i`` (0-based) rank ``r`` of ``world_size`` gets indices
    ``((i * world_size + r) * batch_size + j)`` for ``j < batch_size``: disjoint across ranks (the
    role a ``DistributedSampler`` plays for finite datasets) and independent of epochs. The trainer
    binds :attr:`start_iteration` to its state, so after a checkpoint is restored the loader resumes
    at the restored iteration.

    Args:
        batch_size: the DataLoader's batch size.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(self, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.batch_size = int(batch_size)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.start_iteration: Callable[[], int] = lambda: 0

    def __iter__(self) -> Iterator[int]:
        iteration = int(self.start_iteration())
        while True:
            first = (iteration * self.world_size + self.rank) * self.batch_size
            yield from range(first, first + self.batch_size)
            iteration += 1
