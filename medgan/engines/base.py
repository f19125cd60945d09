"""Shared machinery of the translation trainers (a :class:`monai.engines.Trainer` subclass)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from monai.engines import Trainer
from monai.utils import AdversarialIterationEvents
from torch.utils.data import DataLoader

from medgan.engines.patches import IterationSampler
from medgan.inferers.precision import Precision, autocast, check_precision, make_grad_scaler

Batch = Mapping[str, torch.Tensor]


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside a ``DistributedDataParallel`` wrapper (or the module itself)."""
    return network.module if isinstance(network, torch.nn.parallel.DistributedDataParallel) else network


class TranslationTrainer(Trainer):
    """Base of the paired and CycleGAN trainers.

    Adds to MONAI's ``Trainer``: a precision (``fp32|bf16|fp16``) with autocast and per-optimiser
    gradient scalers; per-iteration seeding of the global torch generator (from ``seed``, the
    iteration and the rank), so in-step randomness (image pool, gradient-penalty weights) is the same
    in a resumed run; binding of an :class:`IterationSampler` to the engine's iteration; and
    :meth:`checkpoint_objects`, the dict of everything an exact resume needs (MONAI
    ``CheckpointLoader`` and :class:`medgan.handlers.TrainingCheckpointer` take it as is).

    Outputs are not decollated (they are scalar losses and batch tensors).
    """

    def __init__(self, device: torch.device | str, max_epochs: int, train_data_loader: Iterable | DataLoader,
                 epoch_length: int | None, precision: Precision | str, seed: int,
                 train_handlers: Sequence | None) -> None:
        device = torch.device(device)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            handlers=None,
            amp=False,  # precision is handled here, not by MONAI's CUDA-only amp flag
            event_names=[AdversarialIterationEvents],
            decollate=False,
        )
        self.precision = check_precision(precision, device)
        self.seed = int(seed)
        sampler = getattr(train_data_loader, "sampler", None)
        if isinstance(sampler, IterationSampler):
            sampler.start_iteration = lambda: self.state.iteration
        self._train_handlers = train_handlers

    def _set_optimisers(self, g_optimizer: torch.optim.Optimizer, d_optimizer: torch.optim.Optimizer) -> None:
        """Store the generator and discriminator optimisers with one gradient scaler each."""
        self.state.g_optimizer = g_optimizer
        self.state.d_optimizer = d_optimizer
        self.state.g_scaler = make_grad_scaler(self.precision, self.state.device)
        self.state.d_scaler = make_grad_scaler(self.precision, self.state.device)

    def _finish_init(self) -> None:
        """Subclasses call this last: handlers attach once the state holds every object."""
        if self._train_handlers is not None:
            self._register_handlers(self._train_handlers)

    def run(self) -> None:  # type: ignore[override]
        """Train until ``max_epochs``; calling it again after a restore continues from the restored state."""
        super(Trainer, self).run()  # skip Trainer.run: it would replace our scalers with CUDA ones

    def autocast(self):
        """Autocast context for this trainer's precision and device."""
        return autocast(self.precision, self.state.device)

    def seed_iteration(self) -> None:
        """Seed the global torch generator from (seed, iteration, rank)."""
        state = np.random.SeedSequence([self.seed, int(self.state.iteration), int(self.state.rank)])
        torch.manual_seed(int(state.generate_state(1, dtype=np.uint64)[0] % (2**63 - 1)))

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor
        return tensor.to(self.state.device, non_blocking=self.non_blocking).float()

    def optimise(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        """Backward ``loss`` through the scaler and step ``optimizer``.

        With fp16 the scaler skips steps whose gradients are not finite. bf16 has no scaler, and CPU
        bf16 convolutions in torch 2.13 intermittently give non-finite weight gradients (seen on the
        discriminator's last layer in a few percent of steps); such a step is skipped the same way,
        logged, and counted in ``state.skipped_steps`` instead of corrupting the weights.
        """
        scaler.scale(loss).backward()
        if not scaler.is_enabled() and self.precision != Precision.FP32:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if not all(bool(torch.isfinite(g).all()) for g in grads):
                self.state.skipped_steps = getattr(self.state, "skipped_steps", 0) + 1
                self.logger.warning("iteration %d: non-finite gradients under %s, optimiser step skipped (%d so far)",
                                    self.state.iteration, self.precision, self.state.skipped_steps)
                return
        scaler.step(optimizer)
        scaler.update()

    def checkpoint_objects(self) -> dict[str, Any]:
        """Name -> object with ``state_dict``/``load_state_dict`` for checkpoints (networks unwrapped from DDP)."""
        raise NotImplementedError
