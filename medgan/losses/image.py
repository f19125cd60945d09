"""Image-similarity losses for paired translation: weighted L1 + SSIM + gradient difference."""

from __future__ import annotations

import torch
from monai.losses import SSIMLoss
from torch import nn


class GradientDifferenceLoss(nn.Module):
    """Gradient-difference loss (Mathieu et al. 2016): mean ``| |d pred| - |d target| |`` over the
    three axes, with forward differences. Penalises blur that L1 alone tolerates.

    Inputs ``(B, C, X, Y, Z)``; returns a scalar.
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = pred.new_zeros(())
        for dim in (2, 3, 4):
            total = total + (pred.diff(dim=dim).abs() - target.diff(dim=dim).abs()).abs().mean()
        return total / 3.0


class TranslationLoss(nn.Module):
    """The non-adversarial part of the paired generator loss:
    ``l1_weight * L1 + ssim_weight * (1 - SSIM) + gdl_weight * GDL``.

    A weight of 0 skips that term (no computation). Intensities are expected in a fixed range (e.g.
    HU scaled to about [-1, 1]); ``data_range`` is that range's width for SSIM.

    Args:
        l1_weight: weight of the mean absolute error (pix2pix uses 100 with the adversarial term at 1).
        ssim_weight: weight of ``1 - SSIM`` (3D, Gaussian window ``ssim_window_vox`` wide).
        gdl_weight: weight of the gradient-difference loss.
        data_range: intensity range width for SSIM's constants.
        ssim_window_vox: SSIM window edge in voxels (odd; must not exceed the patch).
    """

    def __init__(self, l1_weight: float = 100.0, ssim_weight: float = 0.0, gdl_weight: float = 0.0,
                 data_range: float = 2.0, ssim_window_vox: int = 7) -> None:
        super().__init__()
        self.l1_weight = l1_weight
        self.ssim_weight = ssim_weight
        self.gdl_weight = gdl_weight
        self.ssim = SSIMLoss(spatial_dims=3, data_range=data_range, win_size=ssim_window_vox)
        self.gdl = GradientDifferenceLoss()

    def terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted terms by name (``l1``, ``ssim``, ``gdl``; only the non-zero ones)."""
        pred, target = pred.float(), target.float()
        out: dict[str, torch.Tensor] = {}
        if self.l1_weight:
            out["l1"] = self.l1_weight * (pred - target).abs().mean()
        if self.ssim_weight:
            out["ssim"] = self.ssim_weight * self.ssim(pred, target)
        if self.gdl_weight:
            out["gdl"] = self.gdl_weight * self.gdl(pred, target)
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = self.terms(pred, target)
        return sum(terms.values(), pred.new_zeros((), dtype=torch.float32))
