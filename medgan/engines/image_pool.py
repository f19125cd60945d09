"""Image history buffer (Shrivastava et al. 2017), as used by CycleGAN's discriminators."""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    """Keeps up to ``pool_size`` generated images; :meth:`query` returns, per image, either the new
    one or (with probability 1/2 once the pool is full) a stored one that the new image replaces.

    Uses the global torch generator (seeded per iteration by the trainers). Its contents are part of
    the checkpoint (:meth:`state_dict`), so a resumed run sees the same history.

    Args:
        pool_size: images kept; 0 disables the pool (query returns its input).
    """

    def __init__(self, pool_size: int = 50) -> None:
        self.pool_size = int(pool_size)
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, X, Y, Z)`` (detached) -> a batch of the same shape for the discriminator."""
        images = images.detach()
        if self.pool_size == 0:
            return images
        chosen = []
        for image in images:
            image = image.unsqueeze(0)
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                chosen.append(image)
            elif torch.rand(()).item() > 0.5:
                index = int(torch.randint(0, self.pool_size, ()).item())
                chosen.append(self.images[index].to(image.device).clone())
                self.images[index] = image.clone()
            else:
                chosen.append(image)
        return torch.cat(chosen, dim=0)

    def state_dict(self) -> dict[str, Any]:
        return {"pool_size": self.pool_size, "images": [image.cpu() for image in self.images]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pool_size = int(state["pool_size"])
        self.images = list(state["images"])  # moved to the query's device when drawn
