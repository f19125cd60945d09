"""Losses for 3D image translation; every weight is an explicit argument, nothing downloads weights."""

from medgan.losses.adversarial import AdversarialLoss, AdversarialMode, GradientPenalty
from medgan.losses.cycle import CycleConsistencyLoss
from medgan.losses.image import GradientDifferenceLoss, TranslationLoss

__all__ = [
    "AdversarialLoss",
    "AdversarialMode",
    "CycleConsistencyLoss",
    "GradientDifferenceLoss",
    "GradientPenalty",
    "TranslationLoss",
]
