"""Whole-volume inference: a configured MONAI ``SlidingWindowInferer`` and a prediction helper."""

from __future__ import annotations

from typing import Sequence

import torch
from monai.inferers import SlidingWindowInferer

from medgan.inferers.precision import Precision, autocast, check_precision
from medgan.utils.device import select_device


def make_sliding_window_inferer(roi_size_vox: Sequence[int], overlap: float = 0.5, sw_batch_size: int = 4,
                                sigma_scale: float = 0.125, device: str = "auto",
                                progress: bool = False) -> SlidingWindowInferer:
    """A sliding-window inferer with Gaussian blending.

    Windows run on ``device`` (``auto`` picks CUDA when present); the stitched volume stays on the
    CPU, so GPU memory is bounded by ``sw_batch_size`` windows whatever the volume size.

    Args:
        roi_size_vox: window size ``(X, Y, Z)`` in voxels (must suit the network, e.g. divisible by
            the U-Net's downsampling factor).
        overlap: fraction of a window shared with its neighbour (0.5: every voxel is seen by up to 8
            windows in 3D; Gaussian weights hide the seams).
        sw_batch_size: windows per network call.
        sigma_scale: Gaussian sigma as a fraction of the window size.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for the windows.
        progress: show a tqdm bar over windows.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    return SlidingWindowInferer(
        roi_size=[int(s) for s in roi_size_vox],
        sw_batch_size=int(sw_batch_size),
        overlap=float(overlap),
        mode="gaussian",
        sigma_scale=float(sigma_scale),
        padding_mode="replicate",
        sw_device=select_device(device),
        device=torch.device("cpu"),
        progress=progress,
    )


def predict_volume(network: torch.nn.Module, image: torch.Tensor, inferer: SlidingWindowInferer,
                   precision: Precision | str = Precision.FP32) -> torch.Tensor:
    """Run ``network`` over a whole volume.

    Args:
        network: on the inferer's window device; put in eval mode here and restored after.
        image: ``(C, X, Y, Z)`` or ``(B, C, X, Y, Z)`` on the CPU.
        inferer: from :func:`make_sliding_window_inferer`.
        precision: autocast precision on the window device (fp16 needs CUDA).

    Returns:
        float32 prediction on the CPU with the input's number of dimensions.
    """
    device = torch.device(inferer.sw_device) if inferer.sw_device is not None else image.device
    chosen = check_precision(precision, device)
    batched = image if image.ndim == 5 else image.unsqueeze(0)
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode(), autocast(chosen, device):
            pred = inferer(batched.float(), network)
    finally:
        network.train(was_training)
    pred = pred.as_tensor() if hasattr(pred, "as_tensor") else pred
    pred = pred.float().cpu()
    return pred if image.ndim == 5 else pred[0]
