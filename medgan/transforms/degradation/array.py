"""Degradation simulators as MONAI array transforms: low dose, reconstruction kernel, thick slices.

Input and output are volumes ``(X, Y, Z)`` (a ``MetaTensor`` with its affine, or a numpy array /
tensor with an explicit ``pixel_mm`` / ``affine``); a leading channel of size 1 is accepted and
kept. The deterministic transforms take every parameter explicitly (the noise ``seed`` included)
and record them in ``meta["medgan"]["<transform name>"]``; the ``Rand*`` versions sample the
parameters, record the draw under their own name and call the deterministic transform, so any
pair can be rebuilt from its metadata (TorchIO ``RandomNoise`` -> ``Noise`` style).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import RandomizableTransform, Transform

from medgan.errors import SimulationError
from medgan.transforms.degradation.kernel import KernelParameters, simulate_kernel
from medgan.transforms.degradation.lowdose import (
    DEFAULT_ELECTRONIC_NOISE_SD,
    DEFAULT_I0_PHOTONS,
    DEFAULT_I0_REFERENCE_PIXEL_MM,
    MU_WATER_PER_MM,
    LowDoseParameters,
    check_ct_hu,
    check_dose_fraction,
    in_plane_pixel_mm,
    simulate_low_dose,
    simulate_low_dose_fast,
)
from medgan.transforms.degradation.projector import FILTER_NAMES
from medgan.transforms.degradation.thick_slice import PROFILES, ThickSliceParameters, simulate_thick_slices


META_KEY = "medgan"
_MAX_SEED = 2**31 - 1


def record_parameters(image: MetaTensor, name: str, parameters: Dict[str, Any]) -> None:
    """Store ``parameters`` under ``image.meta["medgan"][name]`` (a fresh dict, never shared)."""
    record = dict(image.meta.get(META_KEY, {}))
    record[name] = dict(parameters)
    image.meta[META_KEY] = record


def _as_volume(img: Any, affine: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray, bool, Dict[str, Any]]:
    """``(X, Y, Z)`` float32 array, its affine, whether a channel was dropped, and a copy of its meta."""
    channel = False
    if isinstance(img, MetaTensor):
        array = img.detach().cpu().numpy()
        img_affine = img.affine.detach().cpu().numpy().astype(np.float64)
        meta = copy.deepcopy(dict(img.meta))
    else:
        array = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        img_affine, meta = None, {}
    if array.ndim == 4 and array.shape[0] == 1:
        array, channel = array[0], True
    if array.ndim != 3:
        raise SimulationError(f"expected a volume (X, Y, Z) or (1, X, Y, Z), got shape {tuple(array.shape)}",
                              fix="give one 3D volume without extra channels")
    if affine is not None:
        img_affine = np.asarray(affine, dtype=np.float64)
    if img_affine is None:
        raise SimulationError("the volume has no affine (plain array) and none was given",
                              fix="pass a MetaTensor, or give affine= (or pixel_mm= where accepted)")
    return array.astype(np.float32, copy=False), img_affine, channel, meta


def _to_output(array: np.ndarray, affine: np.ndarray, channel: bool, meta: Dict[str, Any]) -> MetaTensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array[None] if channel else array))
    meta = {k: v for k, v in meta.items() if k != "affine"}
    return MetaTensor(tensor, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def _source_name(meta: Dict[str, Any]) -> str:
    """The file a volume came from, for error messages."""
    return str(meta.get("filename_or_obj") or "the input volume")


def _spacing(affine: np.ndarray) -> Tuple[float, float, float]:
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    return float(norms[0]), float(norms[1]), float(norms[2])


def _pixel_affine(pixel_mm: Optional[float]) -> Optional[np.ndarray]:
    return None if pixel_mm is None else np.diag([pixel_mm, pixel_mm, 1.0, 1.0])


class SimulateLowDose(Transform):
    """Low-dose CT by projection-domain Poisson + electronic noise (see :mod:`.lowdose`).

    Args:
        dose_fraction: simulated dose / real dose, in (0, 1].
        seed: seed of the noise draw (the same seed gives the same noise).
        i0_photons: effective incident photons per detector bin per 180-degree rotation at full
            dose, quoted for bins of ``i0_reference_pixel_mm``.
        electronic_noise_sd: electronic noise SD, counts per bin per view.
        n_views: projection angles; ``None``: from the slice size (180 to 360).
        filter_name: FBP filter of the noise reconstruction (match the reference reconstruction).
        cutoff: filter cut-off, fraction of Nyquist.
        mu_water_per_mm: attenuation of water, 1/mm.
        i0_reference_pixel_mm: pixel size ``i0_photons`` is quoted for (photons per bin scale as
            ``1/pixel^2``: the same dose gives the same noise on any grid); ``None``: per bin of the
            image's own pixels.
        fast: use the validated image-domain approximation instead of the projection path.
        pixel_mm: in-plane pixel size (mm) for inputs without an affine; overrides the affine's.
        num_threads: threads over slices (``None``: all CPUs this process may use).
    """

    def __init__(
        self,
        dose_fraction: float,
        seed: int = 0,
        i0_photons: float = DEFAULT_I0_PHOTONS,
        electronic_noise_sd: float = DEFAULT_ELECTRONIC_NOISE_SD,
        n_views: Optional[int] = None,
        filter_name: str = "ram-lak",
        cutoff: float = 1.0,
        mu_water_per_mm: float = MU_WATER_PER_MM,
        i0_reference_pixel_mm: Optional[float] = DEFAULT_I0_REFERENCE_PIXEL_MM,
        fast: bool = False,
        pixel_mm: Optional[float] = None,
        num_threads: Optional[int] = None,
    ) -> None:
        self.params = LowDoseParameters(dose_fraction, int(seed), i0_photons, electronic_noise_sd, n_views,
                                        filter_name, cutoff, mu_water_per_mm,
                                        i0_reference_pixel_mm=i0_reference_pixel_mm)
        self.fast = fast
        self.pixel_mm = pixel_mm
        self.num_threads = num_threads

    def __call__(self, img: Any) -> MetaTensor:
        """Args: img: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` CT in HU. Returns the low-dose CT (float32 HU)."""
        given_affine = None if isinstance(img, MetaTensor) else _pixel_affine(self.pixel_mm)
        array, affine, channel, meta = _as_volume(img, given_affine)
        spacing = _spacing(affine) if self.pixel_mm is None else (self.pixel_mm, self.pixel_mm)
        pixel_mm = in_plane_pixel_mm(spacing, _source_name(meta))
        check_ct_hu(array, _source_name(meta))
        params = self.params.for_shape(array.shape[0], array.shape[1])
        simulate = simulate_low_dose_fast if self.fast else simulate_low_dose
        out = _to_output(simulate(array, pixel_mm, params, num_threads=self.num_threads), affine, channel, meta)
        record_parameters(out, type(self).__name__, {**params.as_dict(), "fast": self.fast, "pixel_mm": pixel_mm})
        return out


class SimulateKernel(Transform):
    """Re-reconstruct a CT with another FBP filter (see :mod:`.kernel`).

    Args:
        filter_name: target filter, one of ``ram-lak``, ``shepp-logan``, ``cosine``, ``hamming``, ``hann``.
        cutoff: target cut-off, fraction of Nyquist.
        reference_filter: filter the input is taken to be reconstructed with.
        reference_cutoff: its cut-off.
        max_gain: cap of the gain when the target is sharper than the reference.
        n_views: projection angles; ``None``: from the slice size (180 to 720).
        num_threads: threads over slices.
    """

    def __init__(
        self,
        filter_name: str = "hann",
        cutoff: float = 1.0,
        reference_filter: str = "ram-lak",
        reference_cutoff: float = 1.0,
        max_gain: float = 3.0,
        n_views: Optional[int] = None,
        num_threads: Optional[int] = None,
    ) -> None:
        self.params = KernelParameters(filter_name, cutoff, reference_filter, reference_cutoff, max_gain, n_views)
        self.num_threads = num_threads

    def __call__(self, img: Any) -> MetaTensor:
        """Args: img: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` CT in HU (an affine is not needed)."""
        array, affine, channel, meta = _as_volume(img, None if isinstance(img, MetaTensor) else np.eye(4))
        check_ct_hu(array, _source_name(meta))
        params = self.params.for_shape(array.shape[0], array.shape[1])
        out = _to_output(simulate_kernel(array, params, self.num_threads), affine, channel, meta)
        record_parameters(out, type(self).__name__, params.as_dict())
        return out


class SimulateThickSlices(Transform):
    """Slab-average thin slices into thick ones with a slice sensitivity profile (see :mod:`.thick_slice`).

    The output has fewer slices and its own affine (each thick slice centred on its thin slices).
    It is not invertible: keep the thin volume as the target.

    Args:
        thickness_mm: nominal thickness (FWHM of the profile), mm.
        interval_mm: distance between thick slices, mm; ``None``: = thickness.
        profile: ``rectangular``, ``triangular`` or ``gaussian``.
        affine: affine for inputs that are not MetaTensors.
    """

    def __init__(self, thickness_mm: float, interval_mm: Optional[float] = None, profile: str = "triangular",
                 affine: Optional[np.ndarray] = None) -> None:
        self.params = ThickSliceParameters(thickness_mm, interval_mm, profile)
        self.affine = affine

    def __call__(self, img: Any) -> MetaTensor:
        """Args: img: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` volume. Returns ``(X, Y, Z')`` with the thick affine."""
        array, affine, channel, meta = _as_volume(img, self.affine)
        thick, thick_affine = simulate_thick_slices(array, affine, self.params)
        out = _to_output(thick, thick_affine, channel, meta)
        record_parameters(out, type(self).__name__, {**self.params.as_dict(),
                                                     "input_spacing_mm": list(_spacing(affine)),
                                                     "input_shape": list(array.shape)})
        return out


class _RandSimulation(RandomizableTransform):
    """Shared logic of the ``Rand*`` simulators: sample, record the draw, call the deterministic one."""

    def __init__(self, prob: float) -> None:
        RandomizableTransform.__init__(self, prob)
        self._sampled: Dict[str, Any] = {}

    def _sample(self) -> Dict[str, Any]:
        raise NotImplementedError

    def _transform(self, sampled: Dict[str, Any]) -> Transform:
        raise NotImplementedError

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._sampled = self._sample() if self._do_transform else {}

    def __call__(self, img: Any, randomize: bool = True) -> Any:
        """Args: img: the volume; randomize: draw new parameters (False: reuse the last draw)."""
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        out = self._transform(self._sampled)(img)
        record_parameters(out, type(self).__name__, self._sampled)
        return out


def _check_range(name: str, value_range: Sequence[float], low: float, high: float) -> Tuple[float, float]:
    lo, hi = (float(v) for v in value_range)
    if not (low <= lo <= hi <= high):
        raise SimulationError(f"{name} range {value_range} must satisfy {low} <= min <= max <= {high}",
                              fix=f"give a {name} range inside [{low}, {high}]")
    return lo, hi


class RandSimulateLowDose(_RandSimulation):
    """Random low dose: dose fraction uniform in ``dose_fraction_range`` (log-uniform if ``log_uniform``), random seed.

    Args:
        prob: probability of simulating (otherwise the input is returned unchanged).
        dose_fraction_range: ``(min, max)`` inside (0, 1].
        log_uniform: sample the dose uniformly in log (equal weight to 0.1-0.2 and 0.2-0.4).
        kwargs: the fixed parameters of :class:`SimulateLowDose` (all but ``dose_fraction``, ``seed``).
    """

    def __init__(self, prob: float = 1.0, dose_fraction_range: Sequence[float] = (0.1, 0.5), log_uniform: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(prob)
        self.dose_fraction_range = _check_range("dose fraction", dose_fraction_range, 1e-6, 1.0)
        check_dose_fraction(self.dose_fraction_range[0])
        self.log_uniform = log_uniform
        self.kwargs = kwargs
        SimulateLowDose(dose_fraction=1.0, **kwargs)  # validate the fixed parameters now

    def _sample(self) -> Dict[str, Any]:
        lo, hi = self.dose_fraction_range
        if self.log_uniform:
            dose = float(np.exp(self.R.uniform(np.log(lo), np.log(hi))))
        else:
            dose = float(self.R.uniform(lo, hi))
        return {"dose_fraction": min(dose, 1.0), "seed": int(self.R.randint(_MAX_SEED))}

    def _transform(self, sampled: Dict[str, Any]) -> Transform:
        return SimulateLowDose(**sampled, **self.kwargs)


class RandSimulateKernel(_RandSimulation):
    """Random kernel: a filter drawn from ``filter_names`` and a cut-off uniform in ``cutoff_range``.

    Args:
        prob: probability of simulating.
        filter_names: candidate target filters.
        cutoff_range: ``(min, max)`` inside (0, 1].
        kwargs: the fixed parameters of :class:`SimulateKernel`.
    """

    def __init__(self, prob: float = 1.0, filter_names: Sequence[str] = ("hann", "hamming", "cosine"),
                 cutoff_range: Sequence[float] = (0.6, 1.0), **kwargs: Any) -> None:
        super().__init__(prob)
        unknown = [f for f in filter_names if f not in FILTER_NAMES]
        if not filter_names or unknown:
            raise SimulationError(f"unknown or no FBP filters {list(filter_names)}", fix=f"use {FILTER_NAMES}")
        self.filter_names = tuple(filter_names)
        self.cutoff_range = _check_range("cut-off", cutoff_range, 1e-3, 1.0)
        self.kwargs = kwargs

    def _sample(self) -> Dict[str, Any]:
        return {"filter_name": str(self.R.choice(self.filter_names)),
                "cutoff": float(self.R.uniform(*self.cutoff_range))}

    def _transform(self, sampled: Dict[str, Any]) -> Transform:
        return SimulateKernel(**sampled, **self.kwargs)


class RandSimulateThickSlices(_RandSimulation):
    """Random thick slices: thickness uniform in ``thickness_range_mm``, profile drawn from ``profiles``.

    Args:
        prob: probability of simulating.
        thickness_range_mm: ``(min, max)`` thickness, mm.
        profiles: candidate slice sensitivity profiles.
        interval_ratio: interval = ``interval_ratio x thickness`` (1: contiguous slices).
    """

    def __init__(self, prob: float = 1.0, thickness_range_mm: Sequence[float] = (3.0, 5.0),
                 profiles: Sequence[str] = ("triangular",), interval_ratio: float = 1.0) -> None:
        super().__init__(prob)
        self.thickness_range_mm = _check_range("thickness (mm)", thickness_range_mm, 1e-3, 1e3)
        if not profiles or any(p not in PROFILES for p in profiles):
            raise SimulationError(f"unknown or no profiles {list(profiles)}", fix=f"use {PROFILES}")
        if interval_ratio <= 0:
            raise SimulationError(f"interval_ratio={interval_ratio} must be positive", fix="use 1.0")
        self.profiles = tuple(profiles)
        self.interval_ratio = interval_ratio

    def _sample(self) -> Dict[str, Any]:
        thickness = float(self.R.uniform(*self.thickness_range_mm))
        return {"thickness_mm": thickness, "interval_mm": thickness * self.interval_ratio,
                "profile": str(self.R.choice(self.profiles))}

    def _transform(self, sampled: Dict[str, Any]) -> Transform:
        return SimulateThickSlices(**sampled)


__all__ = [
    "SimulateLowDose", "RandSimulateLowDose", "SimulateKernel", "RandSimulateKernel",
    "SimulateThickSlices", "RandSimulateThickSlices", "record_parameters", "META_KEY",
]
