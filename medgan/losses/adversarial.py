"""Adversarial objectives for the generator and the discriminator, and the WGAN-GP penalty."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from medgan.keys import StrEnum


class AdversarialMode(StrEnum):
    """GAN objectives: least squares (Mao 2017), hinge (Lim 2017), non-saturating (Goodfellow 2014)
    and Wasserstein (Arjovsky 2017; pair it with :class:`GradientPenalty`)."""

    LEAST_SQUARES = "least_squares"
    HINGE = "hinge"
    NON_SATURATING = "non_saturating"
    WASSERSTEIN = "wasserstein"


class AdversarialLoss(nn.Module):
    """Generator and discriminator losses on raw discriminator logits (any shape, e.g. PatchGAN maps).

    ``generator_loss(fake_logits)`` is what the generator minimises; ``discriminator_loss(real_logits,
    fake_logits)`` is what the discriminator minimises (for least squares and non-saturating it is
    halved, as in pix2pix, so D learns more slowly than G).

    Args:
        mode: one of :class:`AdversarialMode`.
    """

    def __init__(self, mode: AdversarialMode | str = AdversarialMode.LEAST_SQUARES) -> None:
        super().__init__()
        self.mode = AdversarialMode(mode)

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """Scalar loss pushing the discriminator's output on generated images towards "real"."""
        fake_logits = fake_logits.float()
        if self.mode == AdversarialMode.LEAST_SQUARES:
            return ((fake_logits - 1.0) ** 2).mean()
        if self.mode == AdversarialMode.NON_SATURATING:
            return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        return -fake_logits.mean()  # hinge and Wasserstein generators maximise the critic

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Scalar loss separating real from generated logits."""
        real_logits, fake_logits = real_logits.float(), fake_logits.float()
        if self.mode == AdversarialMode.LEAST_SQUARES:
            return 0.5 * (((real_logits - 1.0) ** 2).mean() + (fake_logits**2).mean())
        if self.mode == AdversarialMode.NON_SATURATING:
            real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
            return 0.5 * (real + fake)
        if self.mode == AdversarialMode.HINGE:
            return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
        return fake_logits.mean() - real_logits.mean()


class GradientPenalty(nn.Module):
    """WGAN-GP penalty (Gulrajani et al. 2017): ``weight * E[(||grad D(x_hat)||_2 - 1)^2]`` on random
    interpolates ``x_hat = a * real + (1 - a) * fake`` with one ``a ~ U(0, 1)`` per sample.

    Uses the global torch generator, which the trainers seed per iteration, so a resumed run draws
    the same interpolation weights.

    Args:
        weight: penalty weight (10 in the paper).
    """

    def __init__(self, weight: float = 10.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, discriminator: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                fake: torch.Tensor) -> torch.Tensor:
        """Penalty for discriminator inputs ``(B, C, X, Y, Z)`` (real and fake already concatenated
        with any conditioning channels)."""
        real, fake = real.detach().float(), fake.detach().float()
        alpha = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), device=real.device)
        mixed = (alpha * real + (1.0 - alpha) * fake).requires_grad_(True)
        logits = discriminator(mixed)
        (grad,) = torch.autograd.grad(logits.float().sum(), mixed, create_graph=True)
        norm = grad.flatten(1).norm(2, dim=1)
        return self.weight * ((norm - 1.0) ** 2).mean()
