"""medgan: 3D GANs for CT and MR image translation, built on MONAI."""

__version__ = "0.1.0"
