"""Cycle-consistency and identity losses of CycleGAN (Zhu et al. 2017)."""

from __future__ import annotations

import torch
from torch import nn


class CycleConsistencyLoss(nn.Module):
    """Weighted L1 terms of the CycleGAN generator objective.

    ``cycle(real, reconstructed) = cycle_weight * |G_t2s(G_s2t(real)) - real|`` and
    ``identity(real, mapped) = identity_weight * |G_s2t(real_target) - real_target|``. The paper's
    defaults are ``lambda = 10`` and identity ``0.5 * lambda`` (weights here are absolute, not relative).

    Args:
        cycle_weight: weight of each cycle term.
        identity_weight: weight of each identity term; 0 disables the identity mapping entirely.
    """

    def __init__(self, cycle_weight: float = 10.0, identity_weight: float = 5.0) -> None:
        super().__init__()
        self.cycle_weight = cycle_weight
        self.identity_weight = identity_weight

    def cycle(self, real: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
        return self.cycle_weight * (reconstructed.float() - real.float()).abs().mean()

    def identity(self, real: torch.Tensor, mapped: torch.Tensor) -> torch.Tensor:
        return self.identity_weight * (mapped.float() - real.float()).abs().mean()
