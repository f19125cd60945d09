"""Paired conditional GAN training (pix2pix, Isola et al. 2017) for 3D translation."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from monai.utils import AdversarialIterationEvents as Events
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from medgan.engines.base import Batch, TranslationTrainer, unwrap
from medgan.engines.keys import TranslationKeys as K
from medgan.inferers.precision import Precision
from medgan.keys import Keys
from medgan.losses import AdversarialLoss, GradientPenalty, TranslationLoss


class PairedGANTrainer(TranslationTrainer):
    """pix2pix for volumes: the target is the real image, and the discriminator judges (source, image)
    pairs, so it learns whether an output fits its input, not only whether it looks like CT.

    One iteration (the paper's ``optimize_parameters``): ``forward`` (``pred = G(source)``), then
    ``backward_D`` on ``cat(source, target)`` as real and ``cat(source, pred.detach())`` as fake (one
    discriminator call on both, concatenated along the batch), then ``backward_G`` with
    ``adversarial(D(cat(source, pred))) + reconstruction(pred, target)``. Events of MONAI's
    ``AdversarialIterationEvents`` fire after each stage; ``engine.state.output`` is keyed by
    :class:`~medgan.engines.keys.TranslationKeys`.

    Args:
        device: training device.
        max_epochs: epochs to run (an epoch is ``epoch_length`` iterations).
        train_data_loader: yields dicts with ``source`` and ``target`` batches ``(B, C, X, Y, Z)``.
        generator: maps source to target (may be wrapped in ``DistributedDataParallel``).
        discriminator: PatchGAN taking ``source_channels + target_channels`` (conditional) or target
            channels only (``conditional=False``).
        g_optimizer: generator optimiser.
        d_optimizer: discriminator optimiser.
        epoch_length: iterations per epoch (required for endless loaders).
        adversarial_loss: the GAN objective (default least squares).
        reconstruction_loss: weighted L1/SSIM/GDL (default ``L1 * 100``).
        adversarial_weight: weight of the generator's adversarial term.
        gradient_penalty: optional WGAN-GP penalty added to the discriminator loss.
        conditional: feed the source to the discriminator with the image.
        precision: ``fp32``, ``bf16`` (CPU or CUDA) or ``fp16`` (CUDA, with gradient scalers).
        seed: base of the per-iteration seeds.
        train_handlers: ignite handlers with ``attach``.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        g_optimizer: Optimizer,
        d_optimizer: Optimizer,
        epoch_length: int | None = None,
        adversarial_loss: AdversarialLoss | None = None,
        reconstruction_loss: TranslationLoss | None = None,
        adversarial_weight: float = 1.0,
        gradient_penalty: GradientPenalty | None = None,
        conditional: bool = True,
        precision: Precision | str = Precision.FP32,
        seed: int = 0,
        train_handlers: Sequence | None = None,
    ) -> None:
        super().__init__(device, max_epochs, train_data_loader, epoch_length, precision, seed, train_handlers)
        self.state.generator = generator
        self.state.discriminator = discriminator
        self._set_optimisers(g_optimizer, d_optimizer)
        self.adversarial_loss = adversarial_loss if adversarial_loss is not None else AdversarialLoss()
        self.reconstruction_loss = reconstruction_loss if reconstruction_loss is not None else TranslationLoss()
        self.adversarial_weight = adversarial_weight
        self.gradient_penalty = gradient_penalty
        self.conditional = conditional
        self._finish_init()

    def checkpoint_objects(self) -> dict[str, Any]:
        return {
            "trainer": self,
            "generator": unwrap(self.state.generator),
            "discriminator": unwrap(self.state.discriminator),
            "g_optimizer": self.state.g_optimizer,
            "d_optimizer": self.state.d_optimizer,
            "g_scaler": self.state.g_scaler,
            "d_scaler": self.state.d_scaler,
        }

    def _d_input(self, source: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([source, image], dim=1) if self.conditional else image

    def _iteration(self, engine: PairedGANTrainer, batchdata: Batch) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("the data loader gave no batch")
        state = engine.state
        engine.seed_iteration()
        source = engine.to_device(batchdata[Keys.SOURCE])
        target = engine.to_device(batchdata[Keys.TARGET])
        generator, discriminator = state.generator, state.discriminator
        generator.train()
        discriminator.train()
        out: dict[str, Any] = {K.SOURCE: source, K.TARGET: target}
        state.output = out

        # forward
        with engine.autocast():
            pred = generator(source)
        out[K.PRED] = pred.detach()
        engine.fire_event(Events.GENERATOR_FORWARD_COMPLETED)

        # backward_D: real pairs vs generated pairs, one call on both
        state.d_optimizer.zero_grad(set_to_none=True)
        real_in = engine._d_input(source, target)
        fake_in = engine._d_input(source, pred.detach())
        with engine.autocast():
            logits = discriminator(torch.cat([real_in, fake_in], dim=0))
        real_logits, fake_logits = logits.float().chunk(2, dim=0)
        d_loss = engine.adversarial_loss.discriminator_loss(real_logits, fake_logits)
        if engine.gradient_penalty is not None:
            d_loss = d_loss + engine.gradient_penalty(discriminator, real_in, fake_in)
        out[K.D_LOSS] = d_loss.item()
        out[K.D_REAL_LOGIT] = real_logits.mean().item()
        out[K.D_FAKE_LOGIT] = fake_logits.mean().item()
        engine.fire_event(Events.DISCRIMINATOR_LOSS_COMPLETED)
        engine.optimise(d_loss, state.d_optimizer, state.d_scaler)
        engine.fire_event(Events.DISCRIMINATOR_MODEL_COMPLETED)

        # backward_G: fool the (just updated) discriminator and match the target
        state.g_optimizer.zero_grad(set_to_none=True)
        with engine.autocast():
            fake_logits = discriminator(engine._d_input(source, pred))
        g_adv = engine.adversarial_weight * engine.adversarial_loss.generator_loss(fake_logits)
        recon_terms = engine.reconstruction_loss.terms(pred, target)
        g_loss = g_adv + sum(recon_terms.values(), torch.zeros((), device=g_adv.device))
        out[K.G_ADV_LOSS] = g_adv.item()
        for name, key in (("l1", K.G_L1_LOSS), ("ssim", K.G_SSIM_LOSS), ("gdl", K.G_GDL_LOSS)):
            if name in recon_terms:
                out[key] = recon_terms[name].item()
        out[K.G_LOSS] = g_loss.item()
        engine.fire_event(Events.GENERATOR_LOSS_COMPLETED)
        engine.optimise(g_loss, state.g_optimizer, state.g_scaler)
        engine.fire_event(Events.GENERATOR_MODEL_COMPLETED)
        return out
