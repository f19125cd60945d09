"""Lesion-insertion harness: are small low-contrast lesions kept, and is nothing invented?

A model that removes noise can remove a faint lesion with it, and a GAN can paint structure that was
never there. The harness measures both on real volumes:

1. :func:`place_lesions` picks centres in homogeneous soft tissue (local mean and SD of the real
   image), away from each other and from edges.
2. :func:`insert_lesions` adds spheres of a chosen diameter (mm) and contrast (HU) to the real
   (normal-dose) image *before* degradation, with partial volume: each voxel gets the contrast times
   the fraction of its volume inside the sphere (``supersample`` ^ 3 sub-voxel samples).
3. The caller degrades both volumes (with and without lesions) with the *same* noise realisation and
   runs the model (or a baseline) on both; :func:`measure_lesions` then reads each lesion from the
   paired difference ``output_with - output_without``, which holds the lesion as the model rendered
   it and no anatomy or noise: **contrast retained** = mean of that difference over the lesion core
   (voxels at least half inside the sphere) / the mean inserted contrast there; **CNR** = the measured
   contrast / the SD of ``output_without`` in a shell around the lesion (the local noise a reader sees).
4. :func:`spurious_structure` looks for invented structure in lesion-free regions: the error
   ``output - reference`` averaged over lesion-sized balls, inside soft tissue; it reports the 99th
   percentile of its magnitude and the fraction of positions exceeding a contrast threshold. Compare
   the value for the model with that of the input and the baselines: residual noise also makes blobs.

All volumes are ``(X, Y, Z)`` in HU with voxel spacing ``(dx, dy, dz)`` in mm; inputs are never modified.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from medgan.metrics.masks import as_numpy

__all__ = ["Lesion", "lesion_fraction", "insert_lesions", "place_lesions", "measure_lesions", "spurious_structure"]

logger = logging.getLogger(__name__)

#: Local-mean range (HU) of the tissue lesions are placed in.
SOFT_TISSUE_HU: Tuple[float, float] = (0.0, 150.0)
#: A voxel belongs to a lesion's core when at least this fraction of it lies inside the sphere.
CORE_FRACTION = 0.5


@dataclass(frozen=True)
class Lesion:
    """One spherical lesion.

    Attributes:
        centre_vox: centre ``(i, j, k)`` in voxel coordinates (may be fractional).
        diameter_mm: sphere diameter.
        contrast_hu: HU added inside the sphere (negative: hypodense).
    """

    centre_vox: Tuple[float, float, float]
    diameter_mm: float
    contrast_hu: float

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


def _spacing3(spacing_mm: Sequence[float]) -> np.ndarray:
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if spacing.shape != (3,) or np.any(spacing <= 0):
        raise ValueError(f"spacing_mm must be three positive numbers (dx, dy, dz), got {spacing_mm}")
    return spacing


def _volume(volume) -> np.ndarray:
    image = np.asarray(as_numpy(volume), dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"expected a (X, Y, Z) volume, got shape {image.shape}")
    return image


def _bounding_box(lesion: Lesion, spacing: np.ndarray, shape: Sequence[int], margin_vox: int = 1) -> Tuple[slice, ...]:
    radius_vox = 0.5 * lesion.diameter_mm / spacing
    centre = np.asarray(lesion.centre_vox, dtype=np.float64)
    low = np.maximum(np.floor(centre - radius_vox).astype(int) - margin_vox, 0)
    high = np.minimum(np.ceil(centre + radius_vox).astype(int) + margin_vox + 1, np.asarray(shape))
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def lesion_fraction(lesion: Lesion, spacing_mm: Sequence[float], shape: Sequence[int],
                    supersample: int = 5) -> Tuple[Tuple[slice, ...], np.ndarray]:
    """Fraction of each voxel's volume inside the sphere, on the lesion's bounding box.

    Args:
        lesion: the sphere.
        spacing_mm: ``(dx, dy, dz)``.
        shape: the volume's shape ``(X, Y, Z)``.
        supersample: sub-voxel samples per axis (``supersample ** 3`` per voxel).

    Returns:
        ``(box, fraction)``: the slices of the bounding box and float32 fractions in [0, 1] on it.
    """
    spacing = _spacing3(spacing_mm)
    box = _bounding_box(lesion, spacing, shape)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    radius2 = (0.5 * lesion.diameter_mm) ** 2
    axes = []
    for axis in range(3):
        voxels = np.arange(box[axis].start, box[axis].stop, dtype=np.float64)
        # mm distance of every sub-sample from the centre along this axis: (voxels, supersample)
        axes.append(((voxels[:, None] + offsets[None, :]) - lesion.centre_vox[axis]) * spacing[axis])
    dx2, dy2, dz2 = (a ** 2 for a in axes)
    inside = (dx2[:, None, None, :, None, None] + dy2[None, :, None, None, :, None]
              + dz2[None, None, :, None, None, :]) <= radius2
    return box, inside.mean(axis=(3, 4, 5)).astype(np.float32)


def insert_lesions(volume, spacing_mm: Sequence[float], lesions: Sequence[Lesion], supersample: int = 5) -> np.ndarray:
    """Add spherical lesions with partial volume to a copy of ``volume``.

    Args:
        volume: CT in HU ``(X, Y, Z)`` (not modified).
        spacing_mm: ``(dx, dy, dz)``.
        lesions: the spheres; overlapping spheres add.
        supersample: sub-voxel samples per axis for the partial-volume fractions.

    Returns:
        float32 ``(X, Y, Z)``: ``volume + sum(contrast * fraction)``.
    """
    out = np.array(_volume(volume), dtype=np.float32, copy=True)
    for lesion in lesions:
        box, fraction = lesion_fraction(lesion, spacing_mm, out.shape, supersample)
        out[box] += np.float32(lesion.contrast_hu) * fraction
    return out


def _local_stats(image: np.ndarray, size_vox: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    centre = np.float32(image.mean(dtype=np.float64))
    shifted = image - centre
    mean = ndimage.uniform_filter(shifted, size=size_vox, mode="reflect")
    var = ndimage.uniform_filter(shifted * shifted, size=size_vox, mode="reflect") - mean * mean
    return mean + centre, np.sqrt(np.clip(var, 0.0, None))


def place_lesions(volume, spacing_mm: Sequence[float], diameters_mm: Sequence[float], contrasts_hu: Sequence[float],
                  mask=None, copies: int = 1, seed: int = 0, tissue_hu: Tuple[float, float] = SOFT_TISSUE_HU,
                  max_sd_factor: float = 1.5, separation_factor: float = 2.0,
                  border_mm: Optional[float] = None) -> List[Lesion]:
    """``copies`` lesions per (diameter, contrast) combination, centred in homogeneous soft tissue.

    A candidate centre has its local mean (a cube of twice the largest diameter) in ``tissue_hu``,
    its local SD at most ``max_sd_factor`` x the median local SD of such voxels (no edges or vessels
    nearby), lies inside ``mask`` (when given) and is further than ``separation_factor`` x the sum of
    the two radii (and at least 3 voxels) from every lesion placed before. Larger lesions are placed first.

    Args:
        volume: the real (normal-dose) CT in HU ``(X, Y, Z)``.
        spacing_mm: ``(dx, dy, dz)``.
        diameters_mm: lesion diameters.
        contrasts_hu: lesion contrasts (every diameter gets every contrast).
        mask: optional region ``(X, Y, Z)`` lesions must lie in.
        copies: lesions per combination (their measurements can be averaged).
        seed: seed of the random choice among candidates.
        tissue_hu: local-mean range of acceptable tissue.
        max_sd_factor: homogeneity limit.
        separation_factor: spacing between lesions, in units of the sum of their radii.
        border_mm: least distance of a centre from the volume's faces (plus one voxel); None: the
            largest diameter. A thin slab (20 slices of 1 mm) needs less, e.g. the largest radius.

    Returns:
        the lesions, ``copies * len(diameters_mm) * len(contrasts_hu)`` of them.

    Raises:
        ValueError: not enough homogeneous soft tissue for all lesions.
    """
    image = _volume(volume)
    spacing = _spacing3(spacing_mm)
    largest = max(float(d) for d in diameters_mm)
    size = [max(3, int(round(2 * largest / s)) | 1) for s in spacing]
    mean, sd = _local_stats(image, size)
    tissue = (mean >= tissue_hu[0]) & (mean < tissue_hu[1])
    if mask is not None:
        tissue &= as_numpy(mask) > 0
    border_distance = largest if border_mm is None else float(border_mm)
    margin = [int(np.ceil(border_distance / s)) + 1 for s in spacing]
    border = np.zeros_like(tissue)
    border[margin[0]:-margin[0] or None, margin[1]:-margin[1] or None, margin[2]:-margin[2] or None] = True
    tissue &= border
    if not tissue.any():
        raise ValueError(f"no voxel with a local mean in {tissue_hu} HU away from the border: cannot place lesions")
    limit = max_sd_factor * float(np.median(sd[tissue]))
    candidates = np.argwhere(tissue & (sd <= limit))
    rng = np.random.default_rng(seed)
    candidates = candidates[rng.permutation(len(candidates))]
    wanted = sorted(((float(d), float(c)) for d in diameters_mm for c in contrasts_hu for _ in range(copies)),
                    key=lambda t: -t[0])
    placed: List[Lesion] = []
    for diameter, contrast in wanted:
        for index, candidate in enumerate(candidates):
            position = candidate * spacing
            clear = all(
                np.linalg.norm(position - np.asarray(other.centre_vox) * spacing)
                > max(separation_factor * 0.5 * (diameter + other.diameter_mm), 3 * float(spacing.max()))
                for other in placed)
            if clear:
                placed.append(Lesion(tuple(float(v) for v in candidate), diameter, contrast))
                candidates = np.delete(candidates, index, axis=0)
                break
        else:
            raise ValueError(f"only {len(placed)} of {len(wanted)} lesions fit in the homogeneous soft tissue: "
                             "use fewer or smaller lesions, or a larger volume")
    logger.info("placed %d lesions (local SD limit %.1f HU)", len(placed), limit)
    return placed


def _shell(lesion: Lesion, spacing: np.ndarray, shape: Sequence[int], inner_factor: float = 1.5,
           outer_factor: float = 3.0) -> Tuple[Tuple[slice, ...], np.ndarray]:
    """Voxels between ``inner_factor`` and ``outer_factor`` radii (plus one voxel) around a lesion."""
    radius = 0.5 * lesion.diameter_mm
    outer = outer_factor * radius + float(spacing.max())
    inner = inner_factor * radius
    big = Lesion(lesion.centre_vox, 2 * outer, 0.0)
    box = _bounding_box(big, spacing, shape, margin_vox=0)
    grids = np.meshgrid(*[(np.arange(b.start, b.stop) - c) * s for b, c, s in zip(box, lesion.centre_vox, spacing)],
                        indexing="ij")
    distance = np.sqrt(sum(g ** 2 for g in grids))
    return box, (distance >= inner) & (distance <= outer)


def measure_lesions(output_with, output_without, lesions: Sequence[Lesion], spacing_mm: Sequence[float],
                    supersample: int = 5) -> List[Dict[str, float]]:
    """Contrast retained and CNR of each lesion from paired outputs (same noise, with and without lesions).

    Args:
        output_with: a model's (or the input's, or a baseline's) volume with the lesions, HU ``(X, Y, Z)``.
        output_without: the same made from the volume without lesions.
        lesions: the inserted lesions.
        spacing_mm: ``(dx, dy, dz)``.
        supersample: as for :func:`insert_lesions`.

    Returns:
        one dict per lesion: ``diameter_mm``, ``contrast_hu``, ``inserted_hu`` (mean inserted contrast
        over the core, partial volume included), ``measured_hu``, ``retained`` (measured / inserted),
        ``background_sd_hu`` and ``cnr`` (|measured| / background SD), ``core_voxels``.
    """
    with_ = _volume(output_with)
    without = _volume(output_without)
    if with_.shape != without.shape:
        raise ValueError(f"outputs with {with_.shape} and without {without.shape} lesions differ in shape")
    spacing = _spacing3(spacing_mm)
    difference = with_ - without
    rows = []
    for lesion in lesions:
        box, fraction = lesion_fraction(lesion, spacing, with_.shape, supersample)
        core = fraction >= CORE_FRACTION
        if not core.any():  # a lesion smaller than half a voxel: its most covered voxel
            core = fraction == fraction.max()
        inserted = float(lesion.contrast_hu * fraction[core].mean())
        measured = float(difference[box][core].mean())
        shell_box, shell = _shell(lesion, spacing, with_.shape)
        background = float(without[shell_box][shell].std()) if shell.any() else float("nan")
        rows.append({
            "diameter_mm": lesion.diameter_mm,
            "contrast_hu": lesion.contrast_hu,
            "inserted_hu": inserted,
            "measured_hu": measured,
            "retained": measured / inserted if inserted != 0 else float("nan"),
            "background_sd_hu": background,
            "cnr": abs(measured) / background if background > 0 else float("nan"),
            "core_voxels": float(core.sum()),
        })
    return rows


def spurious_structure(output, reference, spacing_mm: Sequence[float], diameter_mm: float = 5.0,
                       threshold_hu: float = 20.0, mask=None,
                       tissue_hu: Tuple[float, float] = SOFT_TISSUE_HU) -> Dict[str, float]:
    """Lesion-like structure in ``output`` that ``reference`` does not have.

    The error ``output - reference`` is averaged over balls of ``diameter_mm`` (what a lesion of that
    size would show) at every position whose reference local mean is soft tissue (and inside ``mask``).

    Args:
        output: lesion-free output, HU ``(X, Y, Z)``.
        reference: the lesion-free normal-dose image it should equal.
        spacing_mm: ``(dx, dy, dz)``.
        diameter_mm: ball diameter.
        threshold_hu: a ball mean beyond +-threshold counts as a spurious blob.
        mask: optional region.
        tissue_hu: local-mean range of the reference counted as soft tissue.

    Returns:
        ``{"p99_abs_hu", "max_abs_hu", "fraction_above_threshold", "n_positions"}``.
    """
    out = _volume(output)
    ref = _volume(reference)
    spacing = _spacing3(spacing_mm)
    ball = lesion_fraction(Lesion(tuple(float(int(np.ceil(0.5 * diameter_mm / s)) + 1) for s in spacing),
                                  diameter_mm, 1.0), spacing, [10 ** 6] * 3)[1]
    ball /= ball.sum()
    blob = ndimage.convolve(out - ref, ball, mode="reflect")
    mean, _ = _local_stats(ref, [max(3, int(round(2 * diameter_mm / s)) | 1) for s in spacing])
    region = (mean >= tissue_hu[0]) & (mean < tissue_hu[1])
    if mask is not None:
        region &= as_numpy(mask) > 0
    values = np.abs(blob[region])
    if values.size == 0:
        raise ValueError(f"no soft tissue (local mean in {tissue_hu} HU) to look for spurious structure in")
    return {"p99_abs_hu": float(np.percentile(values, 99)), "max_abs_hu": float(values.max()),
            "fraction_above_threshold": float(np.mean(values > threshold_hu)), "n_positions": float(values.size)}
