"""Put a moving image on a fixed image's grid: rigid -> affine -> optional B-spline, with QC.

A registration that fails quality control raises :class:`medgan.errors.RegistrationError`; it never
returns the unregistered image. See ``docs/registration.md``.
"""

from medgan.registration.array import RegisterToFixed
from medgan.registration.dictionary import RegisterToFixedd
from medgan.registration.outputs import register_files
from medgan.registration.register import (
    ImageRegistration,
    Initialization,
    RegistrationMode,
    RegistrationQC,
    RegistrationResult,
    SimilarityMetric,
    transform_from_dict,
    transform_to_dict,
)
from medgan.registration.units import cormack_to_hu, hu_to_cormack

__all__ = [
    "ImageRegistration",
    "Initialization",
    "RegisterToFixed",
    "RegisterToFixedd",
    "RegistrationMode",
    "RegistrationQC",
    "RegistrationResult",
    "SimilarityMetric",
    "cormack_to_hu",
    "hu_to_cormack",
    "register_files",
    "transform_from_dict",
    "transform_to_dict",
]
