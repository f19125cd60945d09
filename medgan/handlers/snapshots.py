"""PNG snapshots a person can look at: source | prediction | target | difference."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from medgan.utils.atomic import atomic_path


def save_snapshot(path: str | os.PathLike[str], source: torch.Tensor, pred: torch.Tensor, target: torch.Tensor | None,
                  window: Sequence[float] = (-1000.0, 1000.0), diff_range: float = 200.0,
                  slice_index: int | None = None, title: str = "",
                  source_window: Sequence[float] | None = None) -> None:
    """Write one axial slice (fixed Z) of each volume side by side as a PNG (matplotlib Agg).

    Args:
        path: PNG file (written atomically).
        source: ``(X, Y, Z)`` in physical units (HU for CT).
        pred: ``(X, Y, Z)``.
        target: ``(X, Y, Z)`` or None (then the difference panel shows pred - source, unless
            ``source_window`` says the source is another modality: then there is no difference panel).
        window: display window (low, high) for the images.
        diff_range: the difference panel shows [-diff_range, diff_range].
        slice_index: Z index (default: middle).
        title: figure title.
        source_window: display window of the source when its units differ from the prediction's
            (MR -> CT); default ``window``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrays = [np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float32)
              for v in (source, pred, target) if v is not None]
    z = arrays[0].shape[2] // 2 if slice_index is None else slice_index
    panels = [("source", arrays[0], tuple(source_window or window)), ("prediction", arrays[1], tuple(window))]
    reference = arrays[0]
    if target is not None:
        panels.append(("target", arrays[2], tuple(window)))
        reference = arrays[2]
    difference = target is not None or source_window is None
    fig, axes = plt.subplots(1, len(panels) + int(difference), figsize=(4 * (len(panels) + int(difference)), 4.3))
    for ax, (name, vol, shown) in zip(axes, panels):
        ax.imshow(vol[:, :, z].T, cmap="gray", vmin=shown[0], vmax=shown[1], origin="lower")
        ax.set_title(name)
    if difference:
        diff = arrays[1][:, :, z] - reference[:, :, z]
        image = axes[-1].imshow(diff.T, cmap="coolwarm", vmin=-diff_range, vmax=diff_range, origin="lower")
        axes[-1].set_title("prediction - " + ("target" if target is not None else "source"))
        fig.colorbar(image, ax=axes[-1], fraction=0.046)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
