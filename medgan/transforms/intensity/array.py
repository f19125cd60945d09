"""Intensity normalisation: CT HU windows with an exact inverse, MR percentile scaling.

``NormalizeHU`` maps a HU window linearly onto ``[-1, 1]`` (or ``[0, 1]``) and is a MONAI
``InvertibleTransform``: ``Invertd`` (or ``NormalizeHU.inverse``) maps a network output back to HU
with :class:`DenormalizeHU`. Inside the window the round trip is exact up to float32 rounding
(``|error| <= (hi - lo) * 2**-23`` HU); values outside the window are clipped when ``clip`` is set,
and how many were clipped is recorded in ``meta["medgan"]["NormalizeHU"]``, because those values
cannot come back.

``NormalizeMRPercentile`` scales MR intensities (which have no absolute unit) between two
percentiles of the foreground. It is deliberately not invertible in the MONAI sense: in MR -> CT
translation ``Invertd`` replays the MR preprocessing on the synthetic CT, which must be turned into
HU with :class:`DenormalizeHU` instead; the percentile values used are recorded in the metadata.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from monai.config import DtypeLike, NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import InvertibleTransform, Transform
from monai.utils import TraceKeys, TransformBackends, convert_data_type, convert_to_tensor

#: Default CT window (HU): the full 12-bit CT range above air padding.
DEFAULT_WINDOW_HU: Tuple[float, float] = (-1024.0, 3071.0)
#: Default output range of the normalisations.
DEFAULT_OUTPUT_RANGE: Tuple[float, float] = (-1.0, 1.0)
#: Namespace of medgan entries in ``MetaTensor.meta``.
MEDGAN_META_KEY = "medgan"


def record_meta(img: Any, name: str, values: Mapping[str, Any]) -> None:
    """Store ``values`` under ``img.meta["medgan"][name]`` (no-op for non-MetaTensors)."""
    if not isinstance(img, MetaTensor):
        return
    medgan = dict(img.meta.get(MEDGAN_META_KEY, {}))
    medgan[name] = dict(values)
    img.meta[MEDGAN_META_KEY] = medgan


def _check_range(name: str, pair: Sequence[float]) -> Tuple[float, float]:
    low, high = (float(v) for v in pair)
    if not high > low:
        raise ValueError(f"{name} must be (low, high) with high > low, got {tuple(pair)}")
    return low, high


def _affine_map(img: torch.Tensor, src: Tuple[float, float], dst: Tuple[float, float]) -> torch.Tensor:
    """Map ``src`` linearly onto ``dst``, computed in float64 so float32 rounding happens once."""
    scale = (dst[1] - dst[0]) / (src[1] - src[0])
    return (img.to(torch.float64) - src[0]) * scale + dst[0]


class DenormalizeHU(Transform):
    """Map normalised values back to HU: the inverse of :class:`NormalizeHU` with the same arguments.

    Args:
        window_hu: the ``(low, high)`` HU window the data were normalised with.
        output_range: the range the window was mapped onto.
        clip_hu: clip the result to the window (network outputs may overshoot it); default False.
        dtype: output dtype.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, window_hu: Sequence[float] = DEFAULT_WINDOW_HU,
                 output_range: Sequence[float] = DEFAULT_OUTPUT_RANGE, clip_hu: bool = False,
                 dtype: DtypeLike = np.float32) -> None:
        self.window_hu = _check_range("window_hu", window_hu)
        self.output_range = _check_range("output_range", output_range)
        self.clip_hu = clip_hu
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """``img`` of any shape, normalised values -> HU, same shape."""
        tensor = convert_to_tensor(img, track_meta=get_track_meta())
        out = _affine_map(tensor, self.output_range, self.window_hu)
        if self.clip_hu:
            out = out.clamp(*self.window_hu)
        return convert_data_type(out, dtype=self.dtype)[0]


class NormalizeHU(InvertibleTransform):
    """Map a CT window in HU linearly onto ``output_range``; invertible, clipping recorded.

    Args:
        window_hu: ``(low, high)`` HU mapped to ``output_range`` (e.g. ``(-1024, 3071)``; a soft-tissue
            window ``(-160, 240)`` gives finer steps but clips bone).
        output_range: ``(-1, 1)`` for tanh generators or ``(0, 1)``.
        clip: clip to ``output_range`` (values outside the window are then lost; the count is recorded).
        dtype: output dtype.

    The input is a CT in HU of any shape (``(X, Y, Z)`` or ``(C, X, Y, Z)``); the output has the
    same shape and metadata, with ``meta["medgan"]["NormalizeHU"]`` = window, range and
    ``clipped_below``/``clipped_above`` voxel counts.
    """

    backend = DenormalizeHU.backend

    def __init__(self, window_hu: Sequence[float] = DEFAULT_WINDOW_HU,
                 output_range: Sequence[float] = DEFAULT_OUTPUT_RANGE, clip: bool = True,
                 dtype: DtypeLike = np.float32) -> None:
        self.window_hu = _check_range("window_hu", window_hu)
        self.output_range = _check_range("output_range", output_range)
        self.clip = clip
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        tensor = convert_to_tensor(img, track_meta=get_track_meta())
        below = int((tensor < self.window_hu[0]).sum())
        above = int((tensor > self.window_hu[1]).sum())
        out = _affine_map(tensor, self.window_hu, self.output_range)
        if self.clip:
            out = out.clamp(*self.output_range)
        out = convert_data_type(out, dtype=self.dtype)[0]
        info: Dict[str, Any] = {"window_hu": list(self.window_hu), "output_range": list(self.output_range),
                                "clip": self.clip, "clipped_below": below, "clipped_above": above}
        record_meta(out, type(self).__name__, info)
        self.push_transform(out, extra_info=info)
        return out

    def inverse(self, data: NdarrayOrTensor) -> NdarrayOrTensor:
        """Back to HU with the window recorded when the transform was applied."""
        info = self.pop_transform(data)[TraceKeys.EXTRA_INFO]
        return DenormalizeHU(info["window_hu"], info["output_range"], dtype=self.dtype)(data)


class NormalizeMRPercentile(Transform):
    """Scale MR intensities so two foreground percentiles map onto ``output_range``.

    Args:
        lower_percentile: percentile (0-100) of the foreground mapped to ``output_range[0]``.
        upper_percentile: percentile mapped to ``output_range[1]``.
        output_range: target range.
        clip: clip the result to ``output_range``.
        foreground_threshold: voxels above this value form the foreground the percentiles are taken
            over (MR background is about 0); ignored when a ``mask`` is given to ``__call__``.
        dtype: output dtype.

    ``meta["medgan"]["NormalizeMRPercentile"]`` records the percentile values used.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, lower_percentile: float = 0.5, upper_percentile: float = 99.5,
                 output_range: Sequence[float] = DEFAULT_OUTPUT_RANGE, clip: bool = True,
                 foreground_threshold: float = 0.0, dtype: DtypeLike = np.float32) -> None:
        if not 0.0 <= lower_percentile < upper_percentile <= 100.0:
            raise ValueError(f"need 0 <= lower_percentile < upper_percentile <= 100, got "
                             f"{lower_percentile}, {upper_percentile}")
        self.lower_percentile = lower_percentile
        self.upper_percentile = upper_percentile
        self.output_range = _check_range("output_range", output_range)
        self.clip = clip
        self.foreground_threshold = foreground_threshold
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor, mask: Optional[NdarrayOrTensor] = None) -> NdarrayOrTensor:
        """``img`` MR of any shape; ``mask`` (same shape, optional) selects the voxels the percentiles use."""
        tensor = convert_to_tensor(img, track_meta=get_track_meta())
        values = tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor
        if mask is not None:
            selected = values[torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask,
                                              device=values.device).bool()]
        else:
            selected = values[values > self.foreground_threshold]
        if selected.numel() == 0:
            raise ValueError("no foreground voxels to take percentiles from (empty mask or an all-background image)")
        low, high = np.percentile(selected.detach().cpu().double().numpy(),
                                  [self.lower_percentile, self.upper_percentile])
        if not high > low:
            raise ValueError(f"percentiles {self.lower_percentile} and {self.upper_percentile} are equal ({low}); "
                             "the image is constant")
        out = _affine_map(tensor, (float(low), float(high)), self.output_range)
        if self.clip:
            out = out.clamp(*self.output_range)
        out = convert_data_type(out, dtype=self.dtype)[0]
        record_meta(out, type(self).__name__, {"percentiles": [self.lower_percentile, self.upper_percentile],
                                               "values": [float(low), float(high)],
                                               "output_range": list(self.output_range)})
        return out


class BlendWithSource(Transform):
    """Give back part of what a denoiser removed, by frequency band.

    ``out = img + weight * G_sigma(d) + highpass_weight * HP_cutoff(d)`` with ``d = source - img``, what the
    network took out of its input: mostly noise, but also some of the contrast of small faint structures
    (a 5 mm lesion of 20 HU is hardly above the noise of a low-dose scan).

    - ``G_sigma``: a Gaussian low-pass of ``sigma_vox`` voxels along every spatial axis. CT noise is
      fine-grained (its power spectrum peaks near a third of the grid's sampling frequency), while a
      lesion spans several voxels, so the low-pass gives back lesion-scale contrast with little of the
      noise. With ``sigma_vox`` 0 the whole difference comes back in the fraction ``weight``: a plain
      blend ``(1 - weight) * img + weight * source``, like the blending levels of clinical iterative
      reconstruction.
    - ``HP_cutoff``: an in-plane high-pass (the first two spatial axes, slice by slice through the FFT)
      with the smooth response ``1 - exp(-(f / cutoff)^4)`` of the radial frequency ``f`` in cycles per
      voxel. A denoiser leaves coarse noise (what it cannot tell from anatomy) and removes fine noise,
      so its output noise looks blotchy; giving back a fraction of the fine band returns the input's
      noise texture (the peak of its noise power spectrum) at a lower level.

    The denoising bundle's docs tabulate both trade-offs. ``img`` keeps its metadata (``Invertd`` still
    inverts it); ``source`` must be on the same grid and in the same units (both normalised, before
    ``Invertd``). The low-pass replicates the edge voxels at the volume's border; the high-pass treats
    each slice as periodic.

    Args:
        weight: fraction in ``[0, 1]`` of the (low-passed) difference given back; 0: none.
        sigma_vox: standard deviation of the Gaussian low-pass in voxels (>= 0); 0: no low-pass.
        highpass_weight: fraction in ``[0, 1]`` of the difference's fine in-plane band given back; 0: none.
        highpass_cutoff: the high-pass's cutoff in cycles per voxel, in ``(0, 0.5]``.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, weight: float = 0.0, sigma_vox: float = 0.0, highpass_weight: float = 0.0,
                 highpass_cutoff: float = 0.25) -> None:
        weight, sigma_vox = float(weight), float(sigma_vox)
        highpass_weight, highpass_cutoff = float(highpass_weight), float(highpass_cutoff)
        for name, value in (("blend weight", weight), ("highpass_weight", highpass_weight)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1] (the fraction given back), got {value}")
        if not sigma_vox >= 0.0:
            raise ValueError(f"sigma_vox is a Gaussian standard deviation in voxels and must be >= 0, got {sigma_vox}")
        if not 0.0 < highpass_cutoff <= 0.5:
            raise ValueError(f"highpass_cutoff is a frequency in cycles per voxel and must lie in (0, 0.5], "
                             f"got {highpass_cutoff}")
        self.weight = weight
        self.sigma_vox = sigma_vox
        self.highpass_weight = highpass_weight
        self.highpass_cutoff = highpass_cutoff

    def __call__(self, img: NdarrayOrTensor, source: NdarrayOrTensor) -> NdarrayOrTensor:
        """``img`` and ``source`` of one shape ``(C, spatial...)``; returns ``img``'s type and metadata."""
        tensor = convert_to_tensor(img, track_meta=get_track_meta())
        if tuple(source.shape) != tuple(tensor.shape):
            raise ValueError(f"cannot blend: the output has shape {tuple(tensor.shape)} and the source "
                             f"{tuple(source.shape)}; blend before any transform that changes the grid")
        if self.weight == 0.0 and self.highpass_weight == 0.0:
            return tensor
        values = source.as_tensor() if isinstance(source, MetaTensor) else convert_to_tensor(source)
        values = values.to(device=tensor.device, dtype=tensor.dtype)
        plain = tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor
        if self.highpass_weight == 0.0 and self.sigma_vox == 0.0:
            out = torch.lerp(tensor, values, self.weight)
        else:
            difference = values - plain
            restored = torch.zeros_like(plain)
            if self.weight > 0.0:
                low = difference if self.sigma_vox == 0.0 else gaussian_lowpass(difference, self.sigma_vox)
                restored.add_(low, alpha=self.weight)
                del low
            if self.highpass_weight > 0.0:
                restored.add_(inplane_highpass(difference, self.highpass_cutoff), alpha=self.highpass_weight)
            del difference
            out = tensor + restored
        record_meta(out, type(self).__name__, {"weight": self.weight, "sigma_vox": self.sigma_vox,
                                               "highpass_weight": self.highpass_weight,
                                               "highpass_cutoff": self.highpass_cutoff})
        return out


def inplane_highpass(values: torch.Tensor, cutoff: float, order: int = 4) -> torch.Tensor:
    """``values`` ``(C, X, Y, ...)`` high-passed in the ``(X, Y)`` plane: response ``1 - exp(-(f / cutoff)^order)``.

    ``f`` is the radial in-plane frequency in cycles per voxel; the filter is applied through a real FFT
    over the two in-plane axes (each slice periodic), so it is exact and costs two FFTs of the volume.
    """
    size_x, size_y = values.shape[1], values.shape[2]
    fx = torch.fft.fftfreq(size_x, device=values.device, dtype=torch.float64)
    fy = torch.fft.rfftfreq(size_y, device=values.device, dtype=torch.float64)
    radial = torch.sqrt(fx[:, None] ** 2 + fy[None, :] ** 2)
    response = (1.0 - torch.exp(-((radial / cutoff) ** order))).to(values.dtype)
    response = response.reshape(1, size_x, fy.numel(), *([1] * (values.ndim - 3)))
    spectrum = torch.fft.rfft2(values, dim=(1, 2))
    spectrum.mul_(response)
    return torch.fft.irfft2(spectrum, s=(size_x, size_y), dim=(1, 2))


def gaussian_lowpass(values: torch.Tensor, sigma_vox: float, truncated: float = 4.0) -> torch.Tensor:
    """``values`` ``(C, spatial...)`` smoothed by a Gaussian of ``sigma_vox`` voxels on every spatial axis.

    scipy's separable filter on the CPU, channel by channel, with the edge voxels replicated (zero
    padding would pull the border towards 0) and the kernel cut at ``truncated`` sigmas. It needs about
    two extra copies of the volume; a convolution (MONAI's ``separable_filtering``) raised the denoising
    bundle's peak memory on a 512 x 512 x 100 CT from 1.4 to 3.1 GB. The result comes back on ``values``' device.
    """
    from scipy.ndimage import gaussian_filter

    array = values.detach().cpu().numpy()
    out = np.empty_like(array)
    for channel in range(array.shape[0]):
        gaussian_filter(array[channel], float(sigma_vox), output=out[channel], mode="nearest", truncate=truncated)
    return torch.from_numpy(out).to(values.device)
