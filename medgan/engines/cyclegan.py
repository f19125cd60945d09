"""Unpaired cycle-consistent GAN training (CycleGAN, Zhu et al. 2017) for 3D translation."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from monai.utils import AdversarialIterationEvents as Events
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from medgan.engines.base import Batch, TranslationTrainer, unwrap
from medgan.engines.image_pool import ImagePool
from medgan.engines.keys import CycleKeys as K
from medgan.inferers.precision import Precision
from medgan.keys import Keys
from medgan.losses import AdversarialLoss, CycleConsistencyLoss


class CycleGANTrainer(TranslationTrainer):
    """CycleGAN with ``source``/``target`` names: ``G_source_to_target`` makes target-like images from
    sources and is judged by ``D_target``; ``G_target_to_source`` and ``D_source`` the other way.

    One iteration follows the paper's code: :meth:`forward` (fakes and reconstructions), then
    :meth:`backward_G` (both generators together: adversarial + cycle + identity), then
    :meth:`backward_D` for ``D_target`` and ``D_source`` (each on real images vs fakes from its
    :class:`ImagePool`). Both generators share one optimiser, both discriminators another, as in the
    paper. Outputs are keyed by :class:`~medgan.engines.keys.CycleKeys`.

    Args:
        device: training device.
        max_epochs: epochs to run.
        train_data_loader: yields dicts with unpaired ``source`` and ``target`` batches ``(B, C, X, Y, Z)``.
        g_source_to_target: generator source -> target.
        g_target_to_source: generator target -> source.
        d_source: discriminator of source-domain images.
        d_target: discriminator of target-domain images.
        g_optimizer: optimiser over both generators' parameters.
        d_optimizer: optimiser over both discriminators' parameters.
        epoch_length: iterations per epoch.
        adversarial_loss: GAN objective (default least squares, as in the paper).
        cycle_loss: cycle and identity weights (default 10 and 5).
        pool_size: image history per discriminator (paper: 50).
        precision: ``fp32``, ``bf16`` or ``fp16`` (CUDA).
        seed: base of the per-iteration seeds.
        train_handlers: ignite handlers with ``attach``.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        g_source_to_target: torch.nn.Module,
        g_target_to_source: torch.nn.Module,
        d_source: torch.nn.Module,
        d_target: torch.nn.Module,
        g_optimizer: Optimizer,
        d_optimizer: Optimizer,
        epoch_length: int | None = None,
        adversarial_loss: AdversarialLoss | None = None,
        cycle_loss: CycleConsistencyLoss | None = None,
        pool_size: int = 50,
        precision: Precision | str = Precision.FP32,
        seed: int = 0,
        train_handlers: Sequence | None = None,
    ) -> None:
        super().__init__(device, max_epochs, train_data_loader, epoch_length, precision, seed, train_handlers)
        self.state.g_source_to_target = g_source_to_target
        self.state.g_target_to_source = g_target_to_source
        self.state.d_source = d_source
        self.state.d_target = d_target
        self._set_optimisers(g_optimizer, d_optimizer)
        self.adversarial_loss = adversarial_loss if adversarial_loss is not None else AdversarialLoss()
        self.cycle_loss = cycle_loss if cycle_loss is not None else CycleConsistencyLoss()
        self.fake_source_pool = ImagePool(pool_size)
        self.fake_target_pool = ImagePool(pool_size)
        self._finish_init()

    def checkpoint_objects(self) -> dict[str, Any]:
        return {
            "trainer": self,
            "g_source_to_target": unwrap(self.state.g_source_to_target),
            "g_target_to_source": unwrap(self.state.g_target_to_source),
            "d_source": unwrap(self.state.d_source),
            "d_target": unwrap(self.state.d_target),
            "g_optimizer": self.state.g_optimizer,
            "d_optimizer": self.state.d_optimizer,
            "g_scaler": self.state.g_scaler,
            "d_scaler": self.state.d_scaler,
            "fake_source_pool": self.fake_source_pool,
            "fake_target_pool": self.fake_target_pool,
        }

    # -- the paper's three steps -------------------------------------------------------------------
    def forward(self, real_source: torch.Tensor, real_target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Fakes and cycle reconstructions: ``fake_target = G_s2t(real_source)``,
        ``rec_source = G_t2s(fake_target)`` and the mirror images."""
        g_s2t, g_t2s = self.state.g_source_to_target, self.state.g_target_to_source
        with self.autocast():
            fake_target = g_s2t(real_source)
            rec_source = g_t2s(fake_target)
            fake_source = g_t2s(real_target)
            rec_target = g_s2t(fake_source)
        return {"fake_target": fake_target, "rec_source": rec_source, "fake_source": fake_source,
                "rec_target": rec_target}

    def backward_G(self, real_source: torch.Tensor, real_target: torch.Tensor,
                   images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Generator losses; returns the terms by :class:`CycleKeys` (the total under ``G_LOSS``)."""
        terms: dict[str, torch.Tensor] = {}
        if self.cycle_loss.identity_weight:
            with self.autocast():
                same_target = self.state.g_source_to_target(real_target)
                same_source = self.state.g_target_to_source(real_source)
            terms[K.IDENTITY_TARGET_LOSS] = self.cycle_loss.identity(real_target, same_target)
            terms[K.IDENTITY_SOURCE_LOSS] = self.cycle_loss.identity(real_source, same_source)
        with self.autocast():
            logits_target = self.state.d_target(images["fake_target"])
            logits_source = self.state.d_source(images["fake_source"])
        terms[K.G_ADV_TARGET_LOSS] = self.adversarial_loss.generator_loss(logits_target)
        terms[K.G_ADV_SOURCE_LOSS] = self.adversarial_loss.generator_loss(logits_source)
        terms[K.CYCLE_SOURCE_LOSS] = self.cycle_loss.cycle(real_source, images["rec_source"])
        terms[K.CYCLE_TARGET_LOSS] = self.cycle_loss.cycle(real_target, images["rec_target"])
        terms[K.G_LOSS] = sum(terms.values(), torch.zeros((), device=real_source.device))
        return terms

    def backward_D(self, discriminator: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """One discriminator's loss on real images vs (pooled, detached) fakes, in one call."""
        with self.autocast():
            logits = discriminator(torch.cat([real, fake.detach()], dim=0))
        real_logits, fake_logits = logits.float().chunk(2, dim=0)
        return self.adversarial_loss.discriminator_loss(real_logits, fake_logits)

    def _iteration(self, engine: CycleGANTrainer, batchdata: Batch) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("the data loader gave no batch")
        state = engine.state
        engine.seed_iteration()
        real_source = engine.to_device(batchdata[Keys.SOURCE])
        real_target = engine.to_device(batchdata[Keys.TARGET])
        for network in (state.g_source_to_target, state.g_target_to_source, state.d_source, state.d_target):
            network.train()
        out: dict[str, Any] = {K.REAL_SOURCE: real_source, K.REAL_TARGET: real_target}
        state.output = out

        images = engine.forward(real_source, real_target)
        out[K.FAKE_TARGET] = images["fake_target"].detach()
        out[K.FAKE_SOURCE] = images["fake_source"].detach()
        engine.fire_event(Events.GENERATOR_FORWARD_COMPLETED)

        state.g_optimizer.zero_grad(set_to_none=True)
        g_terms = engine.backward_G(real_source, real_target, images)
        out.update({key: value.item() for key, value in g_terms.items()})
        engine.fire_event(Events.GENERATOR_LOSS_COMPLETED)
        engine.optimise(g_terms[K.G_LOSS], state.g_optimizer, state.g_scaler)
        engine.fire_event(Events.GENERATOR_MODEL_COMPLETED)

        state.d_optimizer.zero_grad(set_to_none=True)
        d_target_loss = engine.backward_D(state.d_target, real_target,
                                          engine.fake_target_pool.query(images["fake_target"]))
        d_source_loss = engine.backward_D(state.d_source, real_source,
                                          engine.fake_source_pool.query(images["fake_source"]))
        out[K.D_TARGET_LOSS] = d_target_loss.item()
        out[K.D_SOURCE_LOSS] = d_source_loss.item()
        engine.fire_event(Events.DISCRIMINATOR_LOSS_COMPLETED)
        engine.optimise(d_target_loss + d_source_loss, state.d_optimizer, state.d_scaler)
        engine.fire_event(Events.DISCRIMINATOR_MODEL_COMPLETED)
        return out
