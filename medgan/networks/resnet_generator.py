"""ResNet-style 3D generator (CycleGAN): reflection padding, instance norm, residual blocks."""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch
from torch import nn


class ResidualBlock3D(nn.Module):
    """Two 3x3x3 convolutions with reflection padding and instance norm, plus the skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad3d(1),
            nn.Conv3d(channels, channels, kernel_size=3),
            nn.InstanceNorm3d(channels, affine=True),
            nn.ReLU(inplace=True),
            nn.ReflectionPad3d(1),
            nn.Conv3d(channels, channels, kernel_size=3),
            nn.InstanceNorm3d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """The CycleGAN generator in 3D: 7x7x7 stem, ``num_downsampling`` stride-2 convolutions,
    ``num_blocks`` residual blocks, transposed convolutions back up, 7x7x7 head.

    Shape rule: input ``(B, in_channels, X, Y, Z)`` -> output ``(B, out_channels, X, Y, Z)``;
    spatial sizes must be divisible by ``2 ** num_downsampling`` and larger than 3 voxels (reflection
    padding of the stem).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        base_channels: channels after the stem; doubled at each downsampling.
        num_downsampling: stride-2 stages.
        num_blocks: residual blocks at the lowest resolution (the paper uses 9 at 256^2; 3D on a CPU
            trains in reasonable time with 3-6).
        output_activation: ``"tanh"`` for intensities scaled to [-1, 1] (as in the paper) or
            ``"none"`` for an unbounded output.
    """

    supports_torchscript: ClassVar[bool] = True

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        num_downsampling: int = 2,
        num_blocks: int = 4,
        output_activation: str = "tanh",
    ) -> None:
        super().__init__()
        if output_activation not in ("tanh", "none"):
            raise ValueError(f"output_activation must be 'tanh' or 'none', got {output_activation!r}")
        self.out_channels = out_channels
        self.divisor = 2**num_downsampling
        layers: list[nn.Module] = [
            nn.ReflectionPad3d(3),
            nn.Conv3d(in_channels, base_channels, kernel_size=7),
            nn.InstanceNorm3d(base_channels, affine=True),
            nn.ReLU(inplace=True),
        ]
        channels = base_channels
        for _ in range(num_downsampling):
            layers += [
                nn.Conv3d(channels, channels * 2, kernel_size=3, stride=2, padding=1),
                nn.InstanceNorm3d(channels * 2, affine=True),
                nn.ReLU(inplace=True),
            ]
            channels *= 2
        layers += [ResidualBlock3D(channels) for _ in range(num_blocks)]
        for _ in range(num_downsampling):
            layers += [
                nn.ConvTranspose3d(channels, channels // 2, kernel_size=3, stride=2, padding=1, output_padding=1),
                nn.InstanceNorm3d(channels // 2, affine=True),
                nn.ReLU(inplace=True),
            ]
            channels //= 2
        layers += [nn.ReflectionPad3d(3), nn.Conv3d(channels, out_channels, kernel_size=7)]
        if output_activation == "tanh":
            layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Output shape ``(B, out_channels, X, Y, Z)``; checks divisibility."""
        spatial = tuple(int(s) for s in input_shape[2:])
        if any(s % self.divisor for s in spatial):
            raise ValueError(f"spatial size {spatial} must be divisible by {self.divisor}")
        return (int(input_shape[0]), self.out_channels) + spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C_in, X, Y, Z)`` to ``(B, C_out, X, Y, Z)``."""
        return self.model(x)
