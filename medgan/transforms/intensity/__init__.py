"""Intensity transforms: HU windows with an exact inverse, MR percentile normalisation, blending with the input."""

from medgan.transforms.intensity.array import BlendWithSource, DenormalizeHU, NormalizeHU, NormalizeMRPercentile
from medgan.transforms.intensity.dictionary import (BlendWithSourced, DenormalizeHUd, NormalizeHUd,
                                                    NormalizeMRPercentiled)

__all__ = ["BlendWithSource", "BlendWithSourced", "DenormalizeHU", "DenormalizeHUd", "NormalizeHU", "NormalizeHUd",
           "NormalizeMRPercentile", "NormalizeMRPercentiled"]
