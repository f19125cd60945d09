"""Registration as a MONAI array transform: moving volume in, volume on the fixed grid out."""

from __future__ import annotations

import copy

import torch
from monai.transforms import Transform

from medgan.registration._sitk import metatensor_to_sitk, sitk_to_metatensor
from medgan.registration.register import ImageRegistration, transform_to_dict


class RegisterToFixed(Transform):
    """Register a moving volume onto a fixed volume and return it resampled on the fixed grid.

    The output is a float32 ``MetaTensor`` of the fixed image's shape ``(X, Y, Z)`` and affine; its
    ``meta["medgan"]["RegisterToFixed"]`` holds ``qc`` (the QC record) and ``transform`` (see
    :func:`medgan.registration.register.transform_to_dict`). A registration that fails QC raises
    :class:`medgan.errors.RegistrationError`; the unregistered image is never returned.

    Args:
        registration: the configured registration; ``ImageRegistration()`` (rigid, Mattes MI) if None.
    """

    def __init__(self, registration: ImageRegistration | None = None) -> None:
        self.registration = registration or ImageRegistration()

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """Args: moving, fixed: ``MetaTensor`` volumes ``(X, Y, Z)`` with RAS affines."""
        name = str(getattr(moving, "meta", {}).get("filename_or_obj", "moving image"))
        result = self.registration(metatensor_to_sitk(fixed), metatensor_to_sitk(moving), name=name)
        meta = copy.deepcopy(dict(getattr(moving, "meta", {})))
        for key in ("affine", "original_affine", "spatial_shape"):
            meta.pop(key, None)
        medgan_meta = dict(meta.get("medgan", {}))
        medgan_meta[type(self).__name__] = {"qc": result.qc.to_dict(), "transform": transform_to_dict(result.transform),
                                            "fixed": str(getattr(fixed, "meta", {}).get("filename_or_obj", ""))}
        meta["medgan"] = medgan_meta
        output = sitk_to_metatensor(result.registered, meta=meta)
        output.meta["spatial_shape"] = tuple(output.shape)
        return output
