"""Whole-volume inference: a configured MONAI ``SlidingWindowInferer`` and a prediction helper."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from monai.inferers import SlidingWindowInferer

from medgan.inferers.precision import Precision, autocast, check_precision
from medgan.utils.device import select_device


class SkipBackgroundWindows:
    """Wrap a network so that windows holding only background are not run through it.

    A window whose every input value is below ``threshold`` (network units; e.g. air below -500 HU:
    no body, couch or head holder in it) is returned as it came in (its first ``out_channels``
    channels), so it costs nothing; the other windows of the batch go through ``network``. A window
    contributes to its own voxels only, so every voxel inside a computed window's reach that no
    skipped window covers gets exactly the output it would get without skipping; voxels a skipped
    window covers (all background) blend its input value in. Needs a same-shape network
    (output channels <= input channels).

    Args:
        network: callable on ``(B, C, X, Y, Z)`` windows.
        threshold: windows with ``max < threshold`` are background.
        out_channels: channels of the network's output.
    """

    def __init__(self, network: Callable[..., torch.Tensor], threshold: float, out_channels: int = 1) -> None:
        self.network = network
        self.threshold = float(threshold)
        self.out_channels = int(out_channels)
        self.windows = 0
        self.skipped = 0

    def __call__(self, windows: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        keep = windows.flatten(1).amax(dim=1) >= self.threshold
        self.windows += int(keep.numel())
        self.skipped += int((~keep).sum())
        if bool(keep.all()):
            return self.network(windows, *args, **kwargs)
        out = windows[:, : self.out_channels].clone()
        if bool(keep.any()):
            out[keep] = self.network(windows[keep], *args, **kwargs).to(out.dtype)
        return out


class BackgroundSkippingInferer(SlidingWindowInferer):
    """MONAI's ``SlidingWindowInferer`` that skips background windows (:class:`SkipBackgroundWindows`).

    ``last_windows`` and ``last_skipped`` count the windows of the latest call.

    Args:
        background_below: the background threshold in network units.
        out_channels: channels of the network's output.
        *args, **kwargs: ``SlidingWindowInferer``'s.
    """

    def __init__(self, *args: Any, background_below: float, out_channels: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.background_below = float(background_below)
        self.out_channels = int(out_channels)
        self.last_windows = 0
        self.last_skipped = 0

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        wrapped = SkipBackgroundWindows(network, self.background_below, self.out_channels)
        result = super().__call__(inputs, wrapped, *args, **kwargs)
        self.last_windows, self.last_skipped = wrapped.windows, wrapped.skipped
        return result


def make_sliding_window_inferer(roi_size_vox: Sequence[int], overlap: float = 0.5, sw_batch_size: int = 4,
                                sigma_scale: float = 0.125, device: str = "auto",
                                progress: bool = False,
                                skip_background_below: Optional[float] = None) -> SlidingWindowInferer:
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
        skip_background_below: when given, windows whose every value (network units) is below it
            are not computed (:class:`BackgroundSkippingInferer`): on a CT with a 500 mm field of
            view, the air around the patient. None: every window is computed.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    extra: dict = {}
    cls: type = SlidingWindowInferer
    if skip_background_below is not None:
        cls, extra = BackgroundSkippingInferer, {"background_below": float(skip_background_below)}
    return cls(
        **extra,
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
