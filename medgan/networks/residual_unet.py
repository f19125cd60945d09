"""3D U-Net generator that predicts a correction added to its input (paired tasks)."""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch
from monai.networks.nets import DynUNet
from torch import nn


class ResidualUNet(nn.Module):
    """U-Net (MONAI ``DynUNet`` with residual blocks and instance norm) with a residual output.

    ``output = input[:, :out_channels] + unet(input)`` when ``residual`` is True: the network learns
    the correction (noise, blur, kernel difference), not the image. The last 1x1x1 convolution is
    initialised to zero, so an untrained network is the identity map, which makes paired training
    start from the input instead of from noise.

    Super-resolution uses this network on a pre-upsampled grid (thick slices interpolated to the thin
    spacing first), so input and output have the same shape and patches of any size work.

    Shape rule: input ``(B, in_channels, X, Y, Z)`` -> output ``(B, out_channels, X, Y, Z)``; every
    spatial size must be divisible by ``2 ** (len(filters) - 1)``.

    Args:
        in_channels: input channels.
        out_channels: output channels; with ``residual`` it must not exceed ``in_channels``.
        filters: feature channels per level, full resolution first; the number of levels is
            ``len(filters)`` (each level below the first halves the size).
        residual: add the first ``out_channels`` input channels to the output.
        norm: MONAI norm name (``"instance"`` keeps batch 1 training stable).
        zero_init_output: initialise the last convolution to zero (identity start when residual).
    """

    supports_torchscript: ClassVar[bool] = True

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        filters: Sequence[int] = (16, 32, 64, 128),
        residual: bool = True,
        norm: str = "instance",
        zero_init_output: bool = True,
    ) -> None:
        super().__init__()
        if len(filters) < 3:
            raise ValueError(f"filters needs at least three levels (DynUNet), got {tuple(filters)}")
        if residual and out_channels > in_channels:
            raise ValueError(f"a residual output needs out_channels <= in_channels, got {out_channels} > {in_channels}")
        levels = len(filters)
        self.residual = residual
        self.out_channels = out_channels
        self.divisor = 2 ** (levels - 1)
        self.unet = DynUNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=[3] * levels,
            strides=[1] + [2] * (levels - 1),
            upsample_kernel_size=[2] * (levels - 1),
            filters=list(filters),
            norm_name=norm,
            res_block=True,
        )
        if zero_init_output:
            last = self.unet.output_block.conv.conv
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Output shape ``(B, out_channels, X, Y, Z)`` for an input shape; checks divisibility."""
        spatial = tuple(int(s) for s in input_shape[2:])
        if any(s % self.divisor for s in spatial):
            raise ValueError(f"spatial size {spatial} must be divisible by {self.divisor} for this U-Net depth")
        return (int(input_shape[0]), self.out_channels) + spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C_in, X, Y, Z)`` to ``(B, C_out, X, Y, Z)``."""
        correction = self.unet(x)
        if self.residual:
            return x[:, : self.out_channels] + correction
        return correction
