"""Spatial preprocessing: MONAI's invertible Orientationd/Spacingd composed for medgan volumes, and
``SlabSpacing(d)``, the same resampling in slabs (bounded memory) where an axis keeps its spacing."""

from medgan.transforms.spatial.array import SlabSpacing
from medgan.transforms.spatial.compose import DEFAULT_AXCODES, preprocessing
from medgan.transforms.spatial.dictionary import SlabSpacingd

__all__ = ["DEFAULT_AXCODES", "SlabSpacing", "SlabSpacingd", "preprocessing"]
