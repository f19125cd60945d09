"""Paired (pix2pix) and unpaired (CycleGAN) 3D translation trainers as MONAI engines."""

from medgan.engines.cyclegan import CycleGANTrainer
from medgan.engines.image_pool import ImagePool
from medgan.engines.keys import CycleKeys, TranslationKeys
from medgan.engines.paired import PairedGANTrainer
from medgan.engines.patches import IterationSampler, PairedPatchDataset, UnpairedPatchDataset, paired_patch_transform
from medgan.engines.train import train_cyclegan, train_paired

__all__ = [
    "CycleGANTrainer",
    "CycleKeys",
    "ImagePool",
    "IterationSampler",
    "PairedGANTrainer",
    "PairedPatchDataset",
    "TranslationKeys",
    "UnpairedPatchDataset",
    "paired_patch_transform",
    "train_cyclegan",
    "train_paired",
]
