"""Spatial preprocessing: MONAI's invertible Orientationd/Spacingd composed for medgan volumes."""

from medgan.transforms.spatial.compose import DEFAULT_AXCODES, preprocessing

__all__ = ["DEFAULT_AXCODES", "preprocessing"]
