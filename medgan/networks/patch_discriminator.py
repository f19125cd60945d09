"""3D PatchGAN discriminator (pix2pix / CycleGAN), instance norm, optional spectral norm."""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm


def max_discriminator_layers(patch_size_vox: Sequence[int], min_output_vox: int = 2) -> int:
    """Largest ``num_layers`` for which a :class:`PatchDiscriminator` on ``patch_size_vox`` still
    gives logits at least ``min_output_vox`` voxels wide in every dimension.

    Each stride-2 layer (``num_layers`` of them) halves the size (kernel 4, padding 1) and the two
    stride-1 layers each shrink it by one voxel. Instance norm needs more than one voxel, so the
    default keeps at least 2.
    """
    smallest = min(int(s) for s in patch_size_vox)
    layers = 0
    while PatchDiscriminator.logits_size(smallest, layers + 1) >= min_output_vox:
        layers += 1
    return layers


class PatchDiscriminator(nn.Module):
    """Fully convolutional 3D PatchGAN: one logit per overlapping receptive field.

    The conditional (pix2pix) discriminator is the same network with ``in_channels`` = source +
    target channels; the trainer concatenates them. Batch norm is not offered: it breaks at batch 1
    and on 1-voxel maps; instance norm (or spectral norm without normalisation) is used instead.

    Shape rule: spatial size ``s`` -> ``logits_size(s, num_layers)`` per dimension; input
    ``(B, in_channels, X, Y, Z)`` -> ``(B, 1, x, y, z)``. :func:`max_discriminator_layers` gives the
    deepest network a patch size allows; a too-small input raises ``ValueError``.

    Args:
        in_channels: input channels (2 for a conditional single-channel discriminator).
        channels: channels of the first layer; doubled per layer up to ``8 * channels``.
        num_layers: stride-2 layers (3 gives a 70^3 receptive field as in pix2pix).
        norm: ``"instance"`` or ``"none"``.
    """

    supports_torchscript: ClassVar[bool] = True

    def __init__(
        self,
        in_channels: int = 2,
        channels: int = 32,
        num_layers: int = 3,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        if norm not in ("instance", "none"):
            raise ValueError(f"norm must be 'instance' or 'none', got {norm!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.num_layers = num_layers

        def conv(c_in: int, c_out: int, stride: int) -> nn.Module:
            return self._wrap(nn.Conv3d(c_in, c_out, kernel_size=4, stride=stride, padding=1))

        def normalise(c: int) -> list[nn.Module]:
            return [nn.InstanceNorm3d(c, affine=True)] if norm == "instance" else []

        layers: list[nn.Module] = [conv(in_channels, channels, 2), nn.LeakyReLU(0.2, inplace=True)]
        c_out = channels
        for index in range(1, num_layers):
            c_in, c_out = c_out, channels * min(2**index, 8)
            layers += [conv(c_in, c_out, 2), *normalise(c_out), nn.LeakyReLU(0.2, inplace=True)]
        c_in, c_out = c_out, channels * min(2**num_layers, 8)
        layers += [conv(c_in, c_out, 1), *normalise(c_out), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(conv(c_out, 1, 1))
        self.model = nn.Sequential(*layers)

    def _wrap(self, conv: nn.Conv3d) -> nn.Module:
        """Hook for subclasses that re-parametrise each convolution."""
        return conv

    @staticmethod
    def logits_size(size_vox: int, num_layers: int) -> int:
        """Logit-map size along one dimension for an input ``size_vox`` wide."""
        for _ in range(num_layers):
            size_vox = (size_vox + 2 - 4) // 2 + 1
        return size_vox - 2  # two stride-1 kernel-4 convolutions with padding 1

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Logit shape ``(B, 1, x, y, z)``; raises ``ValueError`` when the input is too small."""
        spatial = tuple(self.logits_size(int(s), self.num_layers) for s in input_shape[2:])
        if min(spatial) < 2:
            raise ValueError(
                f"input {tuple(input_shape[2:])} is too small for {self.num_layers} discriminator layers "
                f"(logits {spatial}); use num_layers <= {max_discriminator_layers(input_shape[2:])} or larger patches"
            )
        return (int(input_shape[0]), 1) + spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1, x, y, z)`` for images ``(B, in_channels, X, Y, Z)``."""
        return self.model(x)


class SpectralNormPatchDiscriminator(PatchDiscriminator):
    """:class:`PatchDiscriminator` with spectral normalisation on every convolution (Miyato et al.
    2018), which bounds the discriminator's Lipschitz constant; usually used without instance norm.

    TorchScript is not available: ``torch.nn.utils.parametrizations`` do not script.
    """

    supports_torchscript: ClassVar[bool] = False

    def __init__(self, in_channels: int = 2, channels: int = 32, num_layers: int = 3, norm: str = "none") -> None:
        super().__init__(in_channels=in_channels, channels=channels, num_layers=num_layers, norm=norm)

    def _wrap(self, conv: nn.Conv3d) -> nn.Module:
        return _spectral_norm(conv)
