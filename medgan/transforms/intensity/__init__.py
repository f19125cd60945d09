"""Intensity transforms: HU windows with an exact inverse, MR percentile normalisation."""

from medgan.transforms.intensity.array import DenormalizeHU, NormalizeHU, NormalizeMRPercentile
from medgan.transforms.intensity.dictionary import DenormalizeHUd, NormalizeHUd, NormalizeMRPercentiled

__all__ = ["DenormalizeHU", "DenormalizeHUd", "NormalizeHU", "NormalizeHUd", "NormalizeMRPercentile",
           "NormalizeMRPercentiled"]
