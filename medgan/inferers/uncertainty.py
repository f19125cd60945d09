"""Per-voxel uncertainty of a translation network: test-time flips and checkpoint ensembles.

Every network of an ensemble predicts the volume once per flip; each prediction is flipped back onto
the input grid, and the predictions are reduced voxel by voxel to a mean (the output) and a standard
deviation (the uncertainty). The reduction is Welford's running mean and variance, so memory holds a
fixed number of volumes (mean, sum of squared deviations, the current prediction and one scratch
volume) whatever the number of predictions.

Flip axes are the spatial axes of an ``(X, Y, Z)`` volume: 0 (X, left-right in RAS), 1 (Y,
posterior-anterior), 2 (Z, inferior-superior). The default uses the in-plane flips
``(), (0,), (1,), (0, 1)``: a CT reconstruction kernel, the noise and the in-plane sampling are the
same in every in-plane direction, so a flipped slice is a valid input with the flipped answer. A Z
flip is equally valid for translation networks whose patches see both directions alike (the
kernel-conversion and denoising networks: the slice profile is symmetric), so
:data:`ALL_FLIPS` adds it; it is left out of the default because a super-resolution network's
correction need not be symmetric in Z on an anisotropic grid.

The per-case score (:func:`uncertainty_score`) summarises the SD inside a body mask by its mean and
95th percentile; :func:`uncertainty_sidecar` shapes it as the ``uncertainty`` section of a case's
sidecar (``docs/results_layout.md``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer

from medgan.errors import GeometryMismatchError, MedganError
from medgan.inferers.precision import Precision
from medgan.inferers.sliding_window import predict_volume

__all__ = ["ALL_FLIPS", "IN_PLANE_FLIPS", "RunningMoments", "describe_uncertainty_method", "predict_with_uncertainty",
           "propagate_sd", "uncertainty_score", "uncertainty_sidecar"]

logger = logging.getLogger(__name__)

Flip = Tuple[int, ...]

#: No flip, X, Y and both: the four in-plane flips (the default).
IN_PLANE_FLIPS: Tuple[Flip, ...] = ((), (0,), (1,), (0, 1))
#: All eight combinations of X, Y and Z flips.
ALL_FLIPS: Tuple[Flip, ...] = ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2))

_AXIS_NAMES = "XYZ"


class RunningMoments:
    """Welford's running mean and variance of equally shaped tensors, one tensor at a time.

    Holds two tensors of the input's shape (mean and sum of squared deviations); each :meth:`update`
    needs one more scratch tensor. The update uses ``M2 += delta**2 * (n - 1) / n`` with
    ``delta = x - mean_before``, which equals Welford's ``delta * (x - mean_after)``.

    Args:
        dtype: accumulation dtype (float32 keeps a 512x512x300 volume at 0.3 GB per tensor; the update
            is stable in float32 because it never subtracts large sums).
    """

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        self.dtype = dtype
        self.count = 0
        self._mean: Optional[torch.Tensor] = None
        self._m2: Optional[torch.Tensor] = None

    def update(self, value: torch.Tensor) -> None:
        """Add one sample (not modified); every sample must have the first one's shape and device."""
        value = value.detach()
        if self._mean is None:
            self._mean = value.to(self.dtype, copy=True)
            self._m2 = torch.zeros_like(self._mean)
            self.count = 1
            return
        if value.shape != self._mean.shape or value.device != self._mean.device:
            raise ValueError(f"sample of shape {tuple(value.shape)} on {value.device} does not match the running "
                             f"shape {tuple(self._mean.shape)} on {self._mean.device}")
        self.count += 1
        delta = value.to(self.dtype) - self._mean
        self._mean.add_(delta, alpha=1.0 / self.count)
        self._m2.addcmul_(delta, delta, value=(self.count - 1) / self.count)

    @property
    def mean(self) -> torch.Tensor:
        """The mean of the samples so far."""
        if self._mean is None:
            raise ValueError("no sample was added")
        return self._mean

    def variance(self, ddof: int = 0) -> torch.Tensor:
        """The variance: ``M2 / (count - ddof)`` (``ddof=0``: population, as numpy's default)."""
        if self._m2 is None or self.count - ddof < 1:
            raise ValueError(f"the variance with ddof={ddof} needs more than {ddof} samples, got {self.count}")
        return self._m2 / (self.count - ddof)

    def sd(self, ddof: int = 0) -> torch.Tensor:
        """The standard deviation (square root of :meth:`variance`)."""
        return self.variance(ddof).clamp_min_(0.0).sqrt_()


def _check_flips(flips: Sequence[Sequence[int]]) -> Tuple[Flip, ...]:
    checked = []
    for flip in flips:
        axes = tuple(int(a) for a in flip)
        if any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"a flip is a set of distinct spatial axes 0 (X), 1 (Y), 2 (Z), got {tuple(flip)}")
        checked.append(tuple(sorted(axes)))
    if len(set(checked)) != len(checked):
        raise ValueError(f"flips repeat: {checked}")
    return tuple(checked)


def _flip(volume: torch.Tensor, axes: Flip) -> torch.Tensor:
    """Flip the spatial axes ``axes`` (0..2 = X, Y, Z) of a ``(..., X, Y, Z)`` tensor (a copy; none: as is)."""
    if not axes:
        return volume
    return torch.flip(volume, dims=[volume.ndim - 3 + a for a in axes])


def predict_with_uncertainty(
    networks: Sequence[torch.nn.Module],
    image: torch.Tensor,
    inferer: SlidingWindowInferer,
    flips: Sequence[Sequence[int]] = IN_PLANE_FLIPS,
    precision: Precision | str = Precision.FP32,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and per-voxel standard deviation of ``len(networks) * len(flips)`` predictions.

    Each network predicts each flipped copy of ``image`` with :func:`~medgan.inferers.predict_volume`;
    the prediction is flipped back before it is accumulated, so an output voxel always describes the
    same input voxel. The SD is the population SD of the predictions (``ddof=0``): 0 when they all
    agree, half the spread for two.

    Args:
        networks: one network (test-time augmentation only) or several checkpoints of one model (an
            ensemble, e.g. the EMA and the raw generator, or several iterations), each on the
            inferer's window device.
        image: ``(C, X, Y, Z)`` or ``(B, C, X, Y, Z)`` in network units, on the CPU.
        inferer: from :func:`~medgan.inferers.make_sliding_window_inferer`.
        flips: spatial axes to flip per prediction (0 = X, 1 = Y, 2 = Z); ``()`` is the unflipped
            input. Default :data:`IN_PLANE_FLIPS`; :data:`ALL_FLIPS` adds Z; ``((),)`` with several
            networks is a plain ensemble.
        precision: autocast precision of the windows (fp16 needs CUDA).

    Returns:
        ``(mean, sd)``: float32 CPU tensors of the prediction's shape, in network units (multiply the
        SD by the bundle's value scale, or use :func:`propagate_sd`, for physical units).

    Raises:
        ValueError: no network, bad flips, or fewer than two predictions (one prediction has no spread).
    """
    networks = list(networks)
    checked = _check_flips(flips)
    if not networks:
        raise ValueError("predict_with_uncertainty needs at least one network")
    if len(networks) * len(checked) < 2:
        raise ValueError("an uncertainty needs at least two predictions: give several flips or several networks")
    if image.ndim not in (4, 5):
        raise ValueError(f"image must be (C, X, Y, Z) or (B, C, X, Y, Z), got shape {tuple(image.shape)}")
    plain = image.as_tensor() if hasattr(image, "as_tensor") else image
    moments = RunningMoments()
    for index, network in enumerate(networks):
        for axes in checked:
            pred = predict_volume(network, _flip(plain, axes), inferer, precision)
            moments.update(_flip(pred, axes))
            logger.debug("network %d, flip %s done", index, axes or "none")
    return moments.mean, moments.sd(ddof=0)


def propagate_sd(to_output: Callable[[torch.Tensor], torch.Tensor], mean: torch.Tensor,
                 sd: torch.Tensor) -> torch.Tensor:
    """Carry a network-unit SD through the output mapping: ``|to_output(mean + sd) - to_output(mean)|``.

    Exact when ``to_output`` is linear in the voxel values up to an offset: an affine intensity map
    (network units -> HU), a reorientation, a resampling with linear interpolation (MONAI ``Invertd``
    of ``Orientationd``/``Spacingd`` and an intensity normalisation). It is not valid through
    clipping, rounding or other non-linear steps: apply those to the prediction only.

    Args:
        to_output: maps a network-unit volume (``mean``'s shape) to the output volume.
        mean: the mean prediction.
        sd: its SD, same shape.

    Returns:
        the SD in output units on the output grid.
    """
    if mean.shape != sd.shape:
        raise ValueError(f"mean {tuple(mean.shape)} and sd {tuple(sd.shape)} differ in shape")
    shifted = to_output(mean + sd)
    base = to_output(mean)
    return (shifted - base).abs()


def _numpy(volume: Any) -> np.ndarray:
    if hasattr(volume, "detach"):
        return volume.detach().cpu().numpy()
    return np.asarray(volume)


def uncertainty_score(sd: Any, mask: Any = None, percentile: float = 95.0) -> Dict[str, float]:
    """Summarise a per-voxel SD volume for one case.

    Args:
        sd: SD volume, e.g. ``(X, Y, Z)`` or ``(1, X, Y, Z)`` (numpy, torch or MetaTensor), any unit.
        mask: bool volume of the same voxels (e.g. the body mask; leading singleton axes may differ);
            None uses every voxel.
        percentile: the upper percentile reported beside the mean.

    Returns:
        ``{"mean": ..., "p<percentile>": ..., "voxels": n}`` over the masked voxels (``p95`` by default).

    Raises:
        GeometryMismatchError: the mask does not have the SD's voxels.
        MedganError: the mask is empty, or the SD holds non-finite values inside it.
    """
    values = _numpy(sd)
    if mask is not None:
        keep = _numpy(mask).astype(bool)
        if keep.shape != values.shape:
            if keep.size != values.size or tuple(s for s in keep.shape if s != 1) != tuple(
                    s for s in values.shape if s != 1):
                raise GeometryMismatchError(f"mask {keep.shape} and SD volume {values.shape} have different voxels",
                                            fix="compute the mask on the output grid")
            keep = keep.reshape(values.shape)
        values = values[keep]
    else:
        values = values.reshape(-1)
    if values.size == 0:
        raise MedganError("the uncertainty mask holds no voxel", fix="check the body mask (threshold, grid)")
    if not np.all(np.isfinite(values)):
        raise MedganError("the SD volume holds NaN or infinite values inside the mask",
                          fix="check the network's output (a diverged checkpoint or an fp16 overflow)")
    return {"mean": float(values.mean(dtype=np.float64)),
            f"p{percentile:g}": float(np.percentile(values, percentile)),
            "voxels": int(values.size)}


def describe_uncertainty_method(num_networks: int, flips: Sequence[Sequence[int]] = IN_PLANE_FLIPS) -> str:
    """A one-line description for reports, e.g. ``"SD over 2 networks x 4 flips (none, X, Y, XY)"``."""
    names = ["".join(_AXIS_NAMES[a] for a in axes) or "none" for axes in _check_flips(flips)]
    return f"SD over {num_networks} network{'s' if num_networks != 1 else ''} x {len(names)} flips ({', '.join(names)})"


def uncertainty_sidecar(sd: Any, mask: Any = None, num_networks: int = 1,
                        flips: Sequence[Sequence[int]] = IN_PLANE_FLIPS, unit: str = "HU",
                        percentile: float = 95.0) -> Dict[str, Any]:
    """The ``uncertainty`` section of a case's sidecar (``docs/results_layout.md``).

    Args:
        sd: SD volume in ``unit`` on the output grid.
        mask: body mask on the same grid (None: every voxel).
        num_networks: networks (checkpoints) in the ensemble.
        flips: the flips used.
        unit: the SD's unit.
        percentile: see :func:`uncertainty_score`.

    Returns:
        ``{"method", "score" (the mean SD in the mask), "unit", "p95", "voxels", "networks", "flips",
        "region"}``.
    """
    summary = uncertainty_score(sd, mask, percentile)
    upper = f"p{percentile:g}"
    return {"method": describe_uncertainty_method(num_networks, flips), "score": summary["mean"], "unit": unit,
            upper: summary[upper], "voxels": summary["voxels"], "networks": int(num_networks),
            "flips": [list(f) for f in _check_flips(flips)], "region": "body mask" if mask is not None else "volume"}
