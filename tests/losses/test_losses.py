"""Losses: known values, signs, zeros at the optimum, gradient penalty maths."""

from __future__ import annotations

import pytest
import torch

from medgan.losses import (
    AdversarialLoss,
    AdversarialMode,
    CycleConsistencyLoss,
    GradientDifferenceLoss,
    GradientPenalty,
    TranslationLoss,
)


@pytest.mark.parametrize("mode", list(AdversarialMode))
def test_discriminator_prefers_separated_logits(mode):
    loss = AdversarialLoss(mode)
    real, fake = torch.full((2, 1, 3, 3, 3), 2.0), torch.full((2, 1, 3, 3, 3), -2.0)
    assert loss.discriminator_loss(real, fake) < loss.discriminator_loss(fake, real)
    # the generator is better off when D scores its output as real
    assert loss.generator_loss(real) < loss.generator_loss(fake)


def test_known_values():
    ones, zeros = torch.ones(4), torch.zeros(4)
    ls = AdversarialLoss("least_squares")
    assert ls.discriminator_loss(ones, zeros).item() == 0.0
    assert ls.generator_loss(zeros).item() == 1.0
    hinge = AdversarialLoss("hinge")
    assert hinge.discriminator_loss(ones, -ones).item() == 0.0
    assert hinge.discriminator_loss(zeros, zeros).item() == 2.0
    ns = AdversarialLoss("non_saturating")
    assert ns.generator_loss(zeros).item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    with pytest.raises(ValueError):
        AdversarialLoss("vanilla")


def test_gradient_penalty_is_zero_for_unit_slope_critic():
    # D(x) = sum(x * w) with ||w|| = 1 has gradient norm exactly 1 everywhere -> penalty 0
    w = torch.randn(1, 1, 4, 4, 4)
    w = w / w.norm()
    critic = lambda x: (x * w).flatten(1).sum(1)  # noqa: E731
    gp = GradientPenalty(weight=10.0)
    real, fake = torch.randn(3, 1, 4, 4, 4), torch.randn(3, 1, 4, 4, 4)
    assert gp(critic, real, fake).item() == pytest.approx(0.0, abs=1e-8)
    # slope 3 -> (3 - 1)^2 * 10 = 40, and the penalty is differentiable w.r.t. the critic
    scale = torch.tensor(3.0, requires_grad=True)
    penalty = gp(lambda x: scale * critic(x), real, fake)
    assert penalty.item() == pytest.approx(40.0, rel=1e-5)
    penalty.backward()
    assert scale.grad.item() == pytest.approx(10 * 2 * (3 - 1), rel=1e-5)


def test_gradient_difference_loss():
    gdl = GradientDifferenceLoss()
    x = torch.arange(64.0).reshape(1, 1, 4, 4, 4)
    assert gdl(x, x).item() == 0.0
    assert gdl(x + 5.0, x).item() == 0.0  # offsets do not change gradients
    flat = torch.zeros_like(x)
    # |d x| along X, Y, Z is 16, 4 and 1; mean over axes = 7
    assert gdl(flat, x).item() == pytest.approx(7.0)


def test_translation_loss_terms_and_weights():
    torch.manual_seed(0)
    target = torch.rand(1, 1, 16, 16, 16) * 2 - 1
    pred = target + 0.1 * torch.randn_like(target)
    loss = TranslationLoss(l1_weight=100.0, ssim_weight=1.0, gdl_weight=2.0, data_range=2.0)
    terms = loss.terms(pred, target)
    assert set(terms) == {"l1", "ssim", "gdl"}
    assert terms["l1"].item() == pytest.approx(100 * (pred - target).abs().mean().item(), rel=1e-6)
    assert 0.0 < terms["ssim"].item() < 1.0
    assert loss(pred, target).item() == pytest.approx(sum(t.item() for t in terms.values()), rel=1e-6)
    perfect = loss.terms(target, target)
    assert all(abs(t.item()) < 1e-4 for t in perfect.values())
    assert set(TranslationLoss(l1_weight=1.0).terms(pred, target)) == {"l1"}


def test_cycle_consistency_loss():
    loss = CycleConsistencyLoss(cycle_weight=10.0, identity_weight=5.0)
    real = torch.zeros(1, 1, 2, 2, 2)
    assert loss.cycle(real, real + 0.5).item() == pytest.approx(5.0)
    assert loss.identity(real, real - 0.5).item() == pytest.approx(2.5)
