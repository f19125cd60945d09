"""HU-aware metrics: community metric profiles, physics image quality, classical baselines.

``evaluate_pair(pred, target, profile, mask)`` is the entry point for paired metrics; see
:mod:`medgan.metrics.profiles` for the conventions and :mod:`medgan.metrics.image_quality` for
reference-free physics measurements.
"""

from medgan.metrics.masks import body_mask_from_ct, check_same_grid
from medgan.metrics.profiles import PROFILES, MetricProfile, evaluate_pair

__all__ = ["PROFILES", "MetricProfile", "body_mask_from_ct", "check_same_grid", "evaluate_pair"]
