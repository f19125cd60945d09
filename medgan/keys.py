"""Dictionary keys and task names used throughout medgan."""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """A ``str`` enum whose members compare and format as their value."""

    def __str__(self) -> str:
        return str(self.value)


class Keys(StrEnum):
    """Keys of the data dictionaries flowing through transforms, engines and inferers."""

    SOURCE = "source"
    TARGET = "target"
    PRED = "pred"
    BODY_MASK = "body_mask"
    CASE_ID = "case_id"


class Task(StrEnum):
    """The four medgan tasks."""

    LOW_DOSE_DENOISING = "ct_lowdose_denoising"
    SUPER_RESOLUTION = "ct_super_resolution"
    KERNEL_CONVERSION = "ct_kernel_conversion"
    MR_SYNTHETIC_CT = "mr_synthetic_ct"


class Modality(StrEnum):
    CT = "CT"
    MR = "MR"
