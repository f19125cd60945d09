"""The out-of-distribution contract: is an input volume what a bundle was trained to take?

A bundle's ``configs/metadata.json`` declares, in its ``medgan`` block, what it accepts:
``source_modality`` (``CT`` or ``MR``), ``source_value_range`` (HU for CT, raw intensity for MR),
``spacing_mm_range`` and optionally ``field_of_view_mm_range`` (each ``[[min x, y, z], [max x, y, z]]``
along the RAS axes: x = right-left, y = anterior-posterior, z = superior-inferior).
:func:`check_input` compares an input with that block:

- **modality**: the DICOM ``Modality`` of the series; for NIfTI the ``Modality`` of a BIDS/dcm2niix
  JSON sidecar beside the file, else the intensity heuristic of
  :func:`medgan.manifest.images.detect_modality` (CT in HU has air near -1000 HU; magnitude MR has no
  values below -100). A CT stored in other units than HU (without its rescale, or in Cormack units
  like the MNI-space CT template: air at 0, nothing negative) cannot be told from MR by its
  intensities. A CT contract refuses it anyway (not HU). An MR contract therefore needs the modality
  confirmed by the file itself: the DICOM ``Modality`` or a JSON sidecar (``medgan convert`` and
  dcm2niix write one); MR-like intensities alone are flagged as unconfirmed.
- **value range**: the robust range (:data:`LOW_PERCENTILE` to :data:`HIGH_PERCENTILE` of a strided
  sample) must lie inside the declared range widened by :data:`RANGE_TOLERANCE_FRACTION` of its width.
  A constant padding value below the declared minimum (``-2048`` or ``-3024`` outside a CT's
  reconstruction circle) is left out first. For CT the robust range must also cover at least
  :data:`MIN_CT_SPAN_FRACTION` of the declared width (an image normalised to ``[0, 1]`` does not).
- **spacing** and **field of view** along each RAS axis, within :data:`GEOMETRY_TOLERANCE_FRACTION`.
- **synthetic input**: a volume whose NIfTI description says it is a medgan output.

Every finding is an :class:`InputFlag`. Without ``force`` any flag refuses the input with one
:class:`BundleError` listing all of them; with ``force`` they are logged as warnings and returned so
they can be written into the case's sidecar and report.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from medgan.errors import BundleError

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["InputFlag", "check_input", "input_modality", "ras_spacing_mm", "robust_value_range"]

logger = logging.getLogger(__name__)

#: Voxels sampled (by striding) for the intensity checks.
SAMPLE_VOXELS = 2_000_000
#: Robust range percentiles (%) of the value-range check.
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
#: The declared value range is widened by this fraction of its width on each side.
RANGE_TOLERANCE_FRACTION = 0.05
#: A CT's robust range must span at least this fraction of the declared range width.
MIN_CT_SPAN_FRACTION = 0.1
#: A constant minimum value holding at least this fraction of voxels is padding, not signal.
PADDING_MIN_FRACTION = 0.001
#: Spacing and field of view may exceed their declared bounds by this fraction.
GEOMETRY_TOLERANCE_FRACTION = 0.01
#: NIfTI descriptions starting with this mark medgan outputs (see :mod:`medgan.report.provenance`).
SYNTHETIC_MARK = "SYNTHETIC"
_AXES = ("x (R-L)", "y (A-P)", "z (S-I)")


@dataclass(frozen=True)
class InputFlag:
    """One way an input falls outside a bundle's contract.

    Args:
        check: ``modality``, ``value_range``, ``spacing``, ``field_of_view`` or ``synthetic_input``.
        found: what the input has.
        accepted: what the bundle accepts.
    """

    check: str
    found: str
    accepted: str

    def __str__(self) -> str:
        return f"{self.check}: input has {self.found}; the bundle accepts {self.accepted}"

    def to_dict(self) -> Dict[str, str]:
        return asdict(self)


def _array(image: Any) -> np.ndarray:
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim != 3:
        raise ValueError(f"expected a (X, Y, Z) volume, got shape {array.shape}")
    return array


def _meta(image: Any) -> Mapping[str, Any]:
    return getattr(image, "meta", None) or {}


def _affine(image: Any) -> np.ndarray:
    affine = getattr(image, "affine", None)
    if affine is None:
        raise ValueError("the image has no affine (a MetaTensor is needed)")
    if hasattr(affine, "detach"):
        affine = affine.detach().cpu().numpy()
    return np.asarray(affine, dtype=np.float64)


def _sample(array: np.ndarray) -> np.ndarray:
    step = max(1, math.ceil((array.size / SAMPLE_VOXELS) ** (1 / 3)))
    sample = np.asarray(array[::step, ::step, ::step], dtype=np.float64).ravel()
    return sample[np.isfinite(sample)]


def input_modality(image: Any, path: Optional[PathLike] = None) -> Tuple[Optional[str], str]:
    """The modality of an input and the evidence for it.

    Args:
        image: ``MetaTensor`` ``(X, Y, Z)``; a DICOM series carries ``meta["Modality"]``.
        path: the file it was read from (a NIfTI's JSON sidecar is looked for beside it).

    Returns:
        ``(modality or None, evidence)``; modality is ``CT``, ``MR``, ``SEG``, another DICOM value or None.
    """
    modality, evidence, _ = _modality_with_source(image, path)
    return modality, evidence


def _modality_with_source(image: Any, path: Optional[PathLike]) -> Tuple[Optional[str], str, bool]:
    """:func:`input_modality` plus whether the file stated it (DICOM or sidecar) rather than intensities."""
    from medgan.manifest.images import sidecar_modality, detect_modality

    dicom_modality = str(_meta(image).get("Modality") or "").strip().upper()
    if dicom_modality:
        return dicom_modality, f"DICOM Modality={dicom_modality}", True
    if path is not None and Path(path).is_file():
        modality, evidence = sidecar_modality(Path(path))
        if modality:
            return modality, evidence, True
    modality, evidence = detect_modality(_sample(_array(image)))
    return modality, evidence, False


def robust_value_range(image: Any, declared_low: Optional[float] = None) -> Tuple[float, float, Optional[float]]:
    """Robust value range of a volume, padding excluded.

    Args:
        image: ``(X, Y, Z)`` volume.
        declared_low: the lowest value a bundle accepts; a constant minimum below it that holds at
            least :data:`PADDING_MIN_FRACTION` of the voxels is padding and left out.

    Returns:
        ``(low, high, padding value or None)`` with low/high the :data:`LOW_PERCENTILE` and
        :data:`HIGH_PERCENTILE` percentiles of the sampled voxels.
    """
    sample = _sample(_array(image))
    if sample.size == 0:
        raise ValueError("the volume has no finite value")
    padding = None
    minimum = float(sample.min())
    if declared_low is not None and minimum < declared_low and np.mean(sample == minimum) >= PADDING_MIN_FRACTION:
        padding = minimum
        sample = sample[sample != minimum]
        if sample.size == 0:
            raise ValueError("the volume holds only its padding value")
    low, high = np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE])
    return float(low), float(high), padding


def ras_spacing_mm(image: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Voxel spacing and field of view along the RAS axes.

    Each voxel axis is assigned to the RAS axis its direction is closest to (oblique grids are
    approximated by their nearest orthogonal orientation).

    Returns:
        ``(spacing_mm, field_of_view_mm)``, each ``(3,)`` in x (R-L), y (A-P), z (S-I) order.
    """
    affine = _affine(image)
    shape = _array(image).shape
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    spacing_ras = np.zeros(3)
    fov_ras = np.zeros(3)
    for voxel_axis in range(3):
        ras_axis = int(np.argmax(np.abs(affine[:3, voxel_axis])))
        spacing_ras[ras_axis] = spacing[voxel_axis]
        fov_ras[ras_axis] = spacing[voxel_axis] * shape[voxel_axis]
    return spacing_ras, fov_ras


def _fmt(values: Sequence[float]) -> str:
    return " x ".join(f"{v:.3g}" for v in values)


def _geometry_flags(name: str, values: np.ndarray, bounds: Optional[Sequence[Sequence[float]]]) -> List[InputFlag]:
    if bounds is None:
        return []
    low, high = np.asarray(bounds[0], dtype=np.float64), np.asarray(bounds[1], dtype=np.float64)
    outside = [axis for axis in range(3)
               if values[axis] < low[axis] * (1 - GEOMETRY_TOLERANCE_FRACTION)
               or values[axis] > high[axis] * (1 + GEOMETRY_TOLERANCE_FRACTION)]
    if not outside:
        return []
    where = ", ".join(_AXES[a] for a in outside)
    return [InputFlag(name, f"{_fmt(values)} mm (outside along {where})",
                      f"{_fmt(low)} to {_fmt(high)} mm along x, y, z")]


def _value_flags(image: Any, modality: str, value_range: Optional[Sequence[float]]) -> List[InputFlag]:
    if value_range is None:
        return []
    declared_low, declared_high = float(value_range[0]), float(value_range[1])
    width = declared_high - declared_low
    low, high, padding = robust_value_range(image, declared_low)
    padded = "" if padding is None else f" (padding value {padding:g} left out)"
    tolerance = RANGE_TOLERANCE_FRACTION * width
    accepted = f"values in [{declared_low:g}, {declared_high:g}]"
    found = f"robust range [{low:.4g}, {high:.4g}]{padded}"
    if low < declared_low - tolerance or high > declared_high + tolerance:
        return [InputFlag("value_range", found, accepted)]
    if modality == "CT" and high - low < MIN_CT_SPAN_FRACTION * width:
        return [InputFlag("value_range", f"{found}, spanning under {MIN_CT_SPAN_FRACTION:.0%} of the accepted "
                          "width (normalised data, not HU?)", f"CT in HU, {accepted}")]
    return []


def _synthetic_flag(image: Any) -> List[InputFlag]:
    description = str(_meta(image).get("medgan", {}).get("nifti", {}).get("descrip", ""))
    if description.upper().startswith(SYNTHETIC_MARK):
        return [InputFlag("synthetic_input", f"a synthetic volume (NIfTI description {description!r})",
                          "acquired images, not another model's output")]
    return []


def check_input(image: Any, accepts: Mapping[str, Any], path: Optional[PathLike] = None, force: bool = False,
                bundle_name: str = "the bundle") -> List[InputFlag]:
    """Check an input volume against a bundle's contract; refuse it, or flag it when forced.

    Args:
        image: ``MetaTensor`` ``(X, Y, Z)`` with a voxel -> RAS affine, as :func:`medgan.io.load_volume` gives.
        accepts: the ``medgan`` block of the bundle's ``metadata.json`` (``source_modality``,
            ``source_value_range``, ``spacing_mm_range``, ``field_of_view_mm_range``; absent keys are not checked).
        path: the input file or DICOM folder (named in messages; a NIfTI's JSON sidecar is read for its modality).
        force: return the flags (logged as warnings) instead of raising.
        bundle_name: named in the messages.

    Returns:
        the flags (empty when the input is inside the contract).

    Raises:
        BundleError: the input is outside the contract and ``force`` is False; the message lists every
            problem, what the bundle accepts and that ``--force`` overrides.
    """
    flags: List[InputFlag] = []
    expected = accepts.get("source_modality")
    modality, evidence, stated = _modality_with_source(image, path)
    if expected is not None and modality != str(expected).upper():
        flags.append(InputFlag("modality", f"{modality or 'an unknown modality'} ({evidence})", f"{expected}"))
    elif str(expected).upper() == "MR" and not stated:
        flags.append(InputFlag("modality", f"MR not confirmed ({evidence}; a CT in other units than HU looks "
                               "the same), no DICOM Modality or JSON sidecar",
                               "MR stated by the file: a DICOM series, or a NIfTI with a JSON sidecar "
                               "holding \"Modality\": \"MR\" (medgan convert and dcm2niix write one)"))
    flags += _value_flags(image, str(expected or modality or "").upper(), accepts.get("source_value_range"))
    spacing, fov = ras_spacing_mm(image)
    flags += _geometry_flags("spacing", spacing, accepts.get("spacing_mm_range"))
    flags += _geometry_flags("field_of_view", fov, accepts.get("field_of_view_mm_range"))
    flags += _synthetic_flag(image)
    if not flags:
        return flags
    listed = "\n".join(f"  - {flag}" for flag in flags)
    if not force:
        raise BundleError(f"the input is outside what {bundle_name} accepts:\n{listed}", path,
                          f"give {bundle_name} an input it accepts ({expected or 'see its metadata.json'}), "
                          "or pass --force to run anyway (the outputs then carry these flags)")
    for flag in flags:
        logger.warning("%s: forced past the input contract of %s: %s", path or "input", bundle_name, flag)
    return flags
