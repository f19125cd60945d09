"""Generators and discriminators for 3D image translation (one network per file)."""

from medgan.networks.patch_discriminator import (
    PatchDiscriminator,
    SpectralNormPatchDiscriminator,
    max_discriminator_layers,
)
from medgan.networks.resnet_generator import ResnetGenerator
from medgan.networks.residual_unet import ResidualUNet

__all__ = ["PatchDiscriminator", "ResidualUNet", "ResnetGenerator", "SpectralNormPatchDiscriminator", "max_discriminator_layers"]
