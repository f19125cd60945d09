"""Body masks for CT (HU threshold, table removed) and MR (Otsu/percentile), array and dict forms."""

from medgan.transforms.mask.array import CTBodyMask, MRBodyMask, clean_body_mask, fill_holes, largest_component
from medgan.transforms.mask.dictionary import CTBodyMaskd, MRBodyMaskd

__all__ = ["CTBodyMask", "CTBodyMaskd", "MRBodyMask", "MRBodyMaskd", "clean_body_mask", "fill_holes",
           "largest_component"]
