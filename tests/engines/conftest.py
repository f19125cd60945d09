"""Small synthetic volumes for engine tests: smooth random anatomy-like fields (network units)."""

from __future__ import annotations

import pytest
import torch


def smooth_volume(generator: torch.Generator, shape=(36, 36, 20)) -> torch.Tensor:
    """``(1, X, Y, Z)`` smooth random field with values of order 1."""
    noise = torch.randn((1, 1, *shape), generator=generator)
    return torch.nn.functional.avg_pool3d(noise, 5, 1, 2)[0] * 3.0


@pytest.fixture(scope="session")
def offset_cases():
    """Paired cases whose source is the target plus 0.3 (300 HU at scale 1000): two train, one held out."""
    generator = torch.Generator().manual_seed(1234)
    cases = []
    for _ in range(3):
        target = smooth_volume(generator)
        cases.append({"source": target + 0.3, "target": target})
    return cases[:2], cases[2:]


TINY_PAIRED = dict(patch_size_vox=(16, 16, 16), batch_size=2, generator_filters=(4, 8, 16), discriminator_channels=4,
                   device="cpu", progress=False)
TINY_CYCLE = dict(patch_size_vox=(16, 16, 16), batch_size=1, generator_channels=4, generator_blocks=1,
                  discriminator_channels=4, device="cpu", progress=False)
