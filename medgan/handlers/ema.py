"""Exponential moving average of a generator's weights (an ignite handler)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from ignite.engine import Engine, Events


class GeneratorEMA:
    """Keeps ``ema = decay * ema + (1 - decay) * weights`` after every iteration; buffers are copied.

    With ``warmup`` the decay ramps as ``min(decay, (1 + n) / (10 + n))`` over the first updates, so
    a short run's average is not dominated by the random initialisation. Use :attr:`network` for
    validation and export; its state is part of the checkpoint (:meth:`state_dict`).

    Args:
        network: the generator being trained (the bare module, not a DDP wrapper).
        decay: long-run decay per iteration (0.999 averages over about 1000 iterations).
        warmup: ramp the decay up from 0.1.
    """

    def __init__(self, network: torch.nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.source = network.module if isinstance(network, torch.nn.parallel.DistributedDataParallel) else network
        self.network = copy.deepcopy(self.source).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        self.update()

    @torch.no_grad()
    def update(self) -> None:
        """Blend the current weights into the average."""
        self.num_updates += 1
        n = self.num_updates
        decay = min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay
        ema_params = list(self.network.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in self.source.parameters()], 1.0 - decay)
        for ema_buffer, buffer in zip(self.network.buffers(), self.source.buffers()):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict[str, Any]:
        return {"network": self.network.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["network"])
        self.num_updates = int(state["num_updates"])
