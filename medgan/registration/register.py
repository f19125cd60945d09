"""Intensity-based registration with quality control: rigid -> affine -> optional B-spline.

SimpleITK's ``ImageRegistrationMethod`` does all stages (see ``docs/registration.md`` for why):
Mattes mutual information for MR <-> CT (or correlation / mean squares for one modality),
a multi-resolution pyramid on isotropic working copies of both images, random metric sampling
restricted to a dilated body mask of the fixed image, and a centred initialisation from the moments
of the two body masks (modality independent). Every result passes through quality control; a
registration that fails it raises :class:`medgan.errors.RegistrationError` and returns nothing.

The transform maps points of the fixed image's physical space (LPS mm) to the moving image's, which
is what resampling the moving image onto the fixed grid needs (ITK convention).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk

from medgan.errors import RegistrationError
from medgan.keys import StrEnum
from medgan.registration._masks import body_mask, dice
from medgan.registration._sitk import resample_isotropic

logger = logging.getLogger(__name__)


class RegistrationMode(StrEnum):
    """How far the transform model goes; each mode runs the stages before it."""

    RIGID = "rigid"
    AFFINE = "affine"
    DEFORMABLE = "deformable"


class SimilarityMetric(StrEnum):
    """Similarity metric optimised; Mattes mutual information works across modalities."""

    MATTES = "mattes"
    CORRELATION = "correlation"
    MEAN_SQUARES = "mean_squares"


class Initialization(StrEnum):
    """Centred initialisation of the rigid stage."""

    MOMENTS = "moments"  # centres of mass of the two body masks (works across modalities)
    GEOMETRY = "geometry"  # centres of the two image grids
    NONE = "none"  # identity, rotation centre at the fixed body-mask centroid


@dataclasses.dataclass
class StageReport:
    """What one optimisation stage did."""

    name: str
    iterations: int
    metric_value: float
    stop_condition: str
    seconds: float


@dataclasses.dataclass
class RegistrationQC:
    """Quality-control figures of one registration (all measured on the working copies).

    ``metric_before`` is the metric at the identity transform (``None`` when the images do not
    overlap there); lower is better for every metric (SimpleITK negates mutual information and
    correlation). Dice values compare the fixed body mask with the moving body mask mapped onto it.
    """

    mode: str
    metric: str
    metric_before: float | None
    metric_after: float
    mask_dice_before: float
    mask_dice_after: float
    jacobian_min: float | None
    jacobian_max: float | None
    stages: list[StageReport]
    fixed_mask_method: str
    moving_mask_method: str
    working_spacing_mm: float
    runtime_s: float
    passed: bool
    failures: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class RegistrationResult:
    """A registration that passed QC.

    Attributes:
        transform: fixed -> moving point mapping (LPS mm), usable by ``sitk.Resample``.
        registered: the moving image resampled onto the fixed image's grid (float32).
        qc: the quality-control record.
    """

    transform: sitk.Transform
    registered: sitk.Image
    qc: RegistrationQC


class ImageRegistration:
    """Register a moving image onto a fixed image, with quality control.

    Args:
        mode: ``rigid`` (6 parameters), ``affine`` (rigid then 12 parameters) or ``deformable``
            (affine then a cubic B-spline).
        metric: ``mattes`` (mutual information; MR <-> CT), ``correlation`` or ``mean_squares``
            (same modality and contrast).
        histogram_bins: Mattes histogram bins.
        sampling_fraction: fraction of the working-grid voxels (inside the sampling mask) drawn at
            random for each metric evaluation.
        working_spacing_mm: isotropic spacing of the working copies the optimiser sees, in mm; the
            output is always resampled from the original moving image.
        shrink_factors: pyramid shrink factor of each level relative to the working grid.
        smoothing_sigmas_mm: Gaussian smoothing of each pyramid level, in mm.
        iterations: maximum optimiser iterations per level (rigid and affine stages).
        initialization: ``moments``, ``geometry`` or ``none``.
        bspline_grid_spacing_mm: control-point spacing of the finest B-spline grid, in mm.
        bspline_iterations: maximum iterations per level of the B-spline stage.
        bspline_samples: metric samples drawn (at the finest level) in the B-spline stage.
        sampling_mask_margin_mm: the fixed body mask is dilated by this much to make the region
            where the metric is sampled (it keeps the body outline inside).
        min_mask_dice: QC fails when the body-mask Dice after registration is below this.
        min_similarity: QC fails when the similarity at the result is below this: mutual information
            in nats for ``mattes`` (aligned MR/CT of one body: 0.4-0.5 at 3 mm; unrelated images: 0.04),
            squared correlation for ``correlation``; not used for ``mean_squares``.
        max_mask_dice_drop: QC fails when the Dice after is lower than before by more than this.
        min_jacobian: QC fails when the deformable transform's Jacobian determinant goes at or below
            this anywhere on the fixed working grid (folding).
        seed: seed of the random metric sampling (results are reproducible for a given seed).
    """

    def __init__(
        self,
        mode: str = RegistrationMode.RIGID,
        metric: str = SimilarityMetric.MATTES,
        histogram_bins: int = 48,
        sampling_fraction: float = 0.2,
        working_spacing_mm: float = 2.0,
        shrink_factors: Sequence[int] = (4, 2, 1),
        smoothing_sigmas_mm: Sequence[float] = (4.0, 2.0, 0.0),
        iterations: int = 200,
        initialization: str = Initialization.MOMENTS,
        bspline_grid_spacing_mm: float = 40.0,
        bspline_iterations: int = 50,
        bspline_samples: int = 20000,
        sampling_mask_margin_mm: float = 10.0,
        min_mask_dice: float = 0.8,
        min_similarity: float = 0.1,
        max_mask_dice_drop: float = 0.02,
        min_jacobian: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.mode = RegistrationMode(mode)
        self.metric = SimilarityMetric(metric)
        self.initialization = Initialization(initialization)
        if len(shrink_factors) != len(smoothing_sigmas_mm) or not shrink_factors:
            raise ValueError("shrink_factors and smoothing_sigmas_mm need one entry per pyramid level")
        if not 0.0 < sampling_fraction <= 1.0:
            raise ValueError(f"sampling_fraction must be in (0, 1], got {sampling_fraction}")
        if working_spacing_mm <= 0 or bspline_grid_spacing_mm <= 0:
            raise ValueError("working_spacing_mm and bspline_grid_spacing_mm must be positive")
        self.histogram_bins = int(histogram_bins)
        self.sampling_fraction = float(sampling_fraction)
        self.working_spacing_mm = float(working_spacing_mm)
        self.shrink_factors = [int(s) for s in shrink_factors]
        self.smoothing_sigmas_mm = [float(s) for s in smoothing_sigmas_mm]
        self.iterations = int(iterations)
        self.bspline_grid_spacing_mm = float(bspline_grid_spacing_mm)
        self.bspline_iterations = int(bspline_iterations)
        self.bspline_samples = int(bspline_samples)
        self.sampling_mask_margin_mm = float(sampling_mask_margin_mm)
        self.min_mask_dice = float(min_mask_dice)
        self.min_similarity = float(min_similarity)
        self.max_mask_dice_drop = float(max_mask_dice_drop)
        self.min_jacobian = float(min_jacobian)
        self.seed = int(seed)

    # ------------------------------------------------------------------ public
    def __call__(self, fixed: sitk.Image, moving: sitk.Image, name: str = "moving image") -> RegistrationResult:
        """Register ``moving`` onto ``fixed``.

        Args:
            fixed: the reference image (3D, any pixel type); its grid is the output grid.
            moving: the image to align (3D).
            name: how error messages call the moving image (e.g. its file name).

        Returns:
            the transform, the moving image resampled on the fixed grid (float32) and the QC record.

        Raises:
            RegistrationError: an input is empty or constant, the optimiser failed, or QC failed;
                the message carries the QC figures.
        """
        start = time.perf_counter()
        fixed = _as_float(fixed, "fixed image")
        moving = _as_float(moving, name)
        fixed_w = resample_isotropic(fixed, self.working_spacing_mm, _background(fixed))
        moving_w = resample_isotropic(moving, self.working_spacing_mm, _background(moving))
        fixed_mask, fixed_method = body_mask(fixed_w)
        moving_mask, moving_method = body_mask(moving_w)
        for mask, label in ((fixed_mask, "fixed image"), (moving_mask, name)):
            if _count(mask) < 100:
                raise RegistrationError(f"the {label} has no body to register (body mask of {_count(mask)} voxels "
                                        f"at {self.working_spacing_mm:g} mm)",
                                        fix="check that the image is not empty and holds the anatomy")
        sampling_mask = self._sampling_mask(fixed_mask)

        stages: list[StageReport] = []
        transform: sitk.Transform = self._initial_rigid(fixed_w, moving_w, fixed_mask, moving_mask)
        try:
            transform = self._run_stage("rigid", fixed_w, moving_w, sampling_mask, transform, stages)
            if self.mode in (RegistrationMode.AFFINE, RegistrationMode.DEFORMABLE):
                affine = sitk.AffineTransform(3)
                affine.SetMatrix(transform.GetMatrix())
                affine.SetCenter(transform.GetCenter())
                affine.SetTranslation(transform.GetTranslation())
                transform = self._run_stage("affine", fixed_w, moving_w, sampling_mask, affine, stages)
            if self.mode is RegistrationMode.DEFORMABLE:
                transform = self._run_bspline(fixed_w, moving_w, sampling_mask, transform, stages)
        except RuntimeError as err:
            raise RegistrationError(f"the optimiser failed for {name}: {_itk_message(err)}",
                                    fix="check that the images overlap after centring and show the same anatomy"
                                    ) from None

        qc = self._quality_control(fixed_w, moving_w, fixed_mask, moving_mask, sampling_mask, transform, stages,
                                   fixed_method, moving_method, start)
        if not qc.passed:
            raise RegistrationError(f"registration of {name} failed quality control: {'; '.join(qc.failures)} "
                                    f"({_figures(qc)})",
                                    fix="check that both images show the same anatomy and overlap (try mode "
                                    "'rigid' or initialization 'geometry'); for a brain-only image against a whole "
                                    "head lower min_mask_dice (--min-dice). The moving image was NOT aligned")
        registered = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, _background(moving), sitk.sitkFloat32)
        qc.runtime_s = round(time.perf_counter() - start, 3)
        logger.info("registered %s: %s", name, _figures(qc))
        return RegistrationResult(transform=transform, registered=registered, qc=qc)

    def metric_value(self, fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> float | None:
        """The configured metric (lower is better) of ``moving`` mapped through ``transform`` onto ``fixed``.

        Evaluated as QC does: on the working copies, inside the dilated fixed body mask. ``None`` when
        the images do not overlap under ``transform``.
        """
        fixed_w = resample_isotropic(_as_float(fixed, "fixed image"), self.working_spacing_mm, _background(fixed))
        moving_w = resample_isotropic(_as_float(moving, "moving image"), self.working_spacing_mm, _background(moving))
        return self._metric_value(fixed_w, moving_w, self._sampling_mask(body_mask(fixed_w)[0]), transform)

    def _sampling_mask(self, fixed_mask: sitk.Image) -> sitk.Image:
        radius = max(1, round(self.sampling_mask_margin_mm / self.working_spacing_mm))
        return sitk.BinaryDilate(fixed_mask, [radius] * 3)

    # ----------------------------------------------------------------- stages
    def _initial_rigid(self, fixed_w: sitk.Image, moving_w: sitk.Image, fixed_mask: sitk.Image,
                       moving_mask: sitk.Image) -> sitk.Euler3DTransform:
        if self.initialization is Initialization.MOMENTS:
            return sitk.Euler3DTransform(sitk.CenteredTransformInitializer(
                sitk.Cast(fixed_mask, sitk.sitkFloat32), sitk.Cast(moving_mask, sitk.sitkFloat32),
                sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS))
        if self.initialization is Initialization.GEOMETRY:
            return sitk.Euler3DTransform(sitk.CenteredTransformInitializer(
                fixed_w, moving_w, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY))
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(fixed_mask)
        euler = sitk.Euler3DTransform()
        euler.SetCenter(stats.GetCentroid(1))
        return euler

    def _method(self, sampling_mask: sitk.Image, shrink_factors: Sequence[int],
                smoothing_sigmas_mm: Sequence[float]) -> sitk.ImageRegistrationMethod:
        method = sitk.ImageRegistrationMethod()
        if self.metric is SimilarityMetric.MATTES:
            method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=self.histogram_bins)
        elif self.metric is SimilarityMetric.CORRELATION:
            method.SetMetricAsCorrelation()
        else:
            method.SetMetricAsMeanSquares()
        method.SetMetricFixedMask(sampling_mask)
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(self.sampling_fraction, self.seed)
        method.SetInterpolator(sitk.sitkLinear)
        method.SetShrinkFactorsPerLevel(list(shrink_factors))
        method.SetSmoothingSigmasPerLevel(list(smoothing_sigmas_mm))
        method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        return method

    def _run_stage(self, stage: str, fixed_w: sitk.Image, moving_w: sitk.Image, sampling_mask: sitk.Image,
                   initial: sitk.Transform, stages: list[StageReport]) -> sitk.Transform:
        tic = time.perf_counter()
        method = self._method(sampling_mask, self.shrink_factors, self.smoothing_sigmas_mm)
        # A slow step relaxation (0.8) keeps noisy sampled-MI gradients from shrinking the step before
        # the optimum is reached (0.5 stopped 1-2 mm short on MR <-> CT).
        method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4,
                                                        numberOfIterations=self.iterations,
                                                        relaxationFactor=0.8, gradientMagnitudeTolerance=1e-8)
        method.SetOptimizerScalesFromPhysicalShift()
        method.SetInitialTransform(initial, inPlace=True)
        iterations = [0]
        method.AddCommand(sitk.sitkIterationEvent, lambda: iterations.__setitem__(0, iterations[0] + 1))
        result = method.Execute(fixed_w, moving_w)
        stages.append(_report(stage, method, iterations[0], tic))
        return _unwrap(result)

    def _run_bspline(self, fixed_w: sitk.Image, moving_w: sitk.Image, sampling_mask: sitk.Image,
                     bulk: sitk.Transform, stages: list[StageReport]) -> sitk.Transform:
        tic = time.perf_counter()
        levels = min(2, len(self.shrink_factors))
        extent = np.asarray(fixed_w.GetSize()) * np.asarray(fixed_w.GetSpacing())
        mesh = [max(1, round(e / self.bspline_grid_spacing_mm)) for e in extent]
        bspline = sitk.BSplineTransformInitializer(fixed_w, mesh, order=3)
        method = self._method(sampling_mask, self.shrink_factors[-levels:], self.smoothing_sigmas_mm[-levels:])
        # A fixed number of samples: the cost of a B-spline gradient grows with samples x control points.
        fraction = min(self.sampling_fraction, self.bspline_samples / max(_count(sampling_mask), 1))
        method.SetMetricSamplingPercentage(fraction, self.seed)
        # One control grid for all levels: L-BFGS-B keeps its parameter scales valid (no grid refinement).
        method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=self.bspline_iterations,
                                    maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=2 * self.bspline_iterations,
                                    costFunctionConvergenceFactor=1e7)
        method.SetMovingInitialTransform(bulk)
        method.SetInitialTransform(bspline, inPlace=True)
        iterations = [0]
        method.AddCommand(sitk.sitkIterationEvent, lambda: iterations.__setitem__(0, iterations[0] + 1))
        method.Execute(fixed_w, moving_w)
        stages.append(_report("bspline", method, iterations[0], tic))
        # The B-spline acts on fixed points first, then the bulk transform (ITK's order: last added first).
        return sitk.CompositeTransform([bulk, bspline])

    # -------------------------------------------------------------------- QC
    def _metric_value(self, fixed_w: sitk.Image, moving_w: sitk.Image, sampling_mask: sitk.Image,
                      transform: sitk.Transform) -> float | None:
        method = self._method(sampling_mask, [1], [0.0])
        method.SetMetricSamplingStrategy(method.REGULAR)
        method.SetMetricSamplingPercentage(min(1.0, 2 * self.sampling_fraction), self.seed)
        method.SetInitialTransform(transform, inPlace=False)
        try:
            value = float(method.MetricEvaluate(fixed_w, moving_w))
        except RuntimeError as err:
            logger.debug("metric not evaluable: %s", _itk_message(err))
            return None
        return value if math.isfinite(value) else None

    def _quality_control(self, fixed_w: sitk.Image, moving_w: sitk.Image, fixed_mask: sitk.Image,
                         moving_mask: sitk.Image, sampling_mask: sitk.Image, transform: sitk.Transform,
                         stages: list[StageReport], fixed_method: str, moving_method: str,
                         start: float) -> RegistrationQC:
        identity = sitk.Transform(3, sitk.sitkIdentity)
        before = self._metric_value(fixed_w, moving_w, sampling_mask, identity)
        after = self._metric_value(fixed_w, moving_w, sampling_mask, transform)
        dice_before = _mask_dice(fixed_mask, moving_mask, identity)
        dice_after = _mask_dice(fixed_mask, moving_mask, transform)
        jac_min = jac_max = None
        if self.mode is RegistrationMode.DEFORMABLE:
            jac_min, jac_max = jacobian_range(transform, fixed_w)

        failures: list[str] = []
        if after is None:
            failures.append("the metric cannot be evaluated at the result (images do not overlap)")
        elif before is not None and not after < before:
            failures.append(f"the metric did not improve ({before:.4f} -> {after:.4f})")
        elif self.metric is not SimilarityMetric.MEAN_SQUARES and -after < self.min_similarity:
            failures.append(f"too little shared information at the result ({self.metric} similarity {-after:.3f} < "
                            f"{self.min_similarity:g})")
        if dice_after < self.min_mask_dice:
            failures.append(f"body-mask Dice {dice_after:.3f} < {self.min_mask_dice:g}")
        if dice_after < dice_before - self.max_mask_dice_drop:
            failures.append(f"body-mask Dice fell from {dice_before:.3f} to {dice_after:.3f}")
        if jac_min is not None and jac_min <= self.min_jacobian:
            failures.append(f"the deformation folds (Jacobian determinant min {jac_min:.3f} <= {self.min_jacobian:g})")
        return RegistrationQC(
            mode=str(self.mode), metric=str(self.metric),
            metric_before=_round(before), metric_after=_round(after) if after is not None else float("nan"),
            mask_dice_before=round(dice_before, 4), mask_dice_after=round(dice_after, 4),
            jacobian_min=_round(jac_min), jacobian_max=_round(jac_max), stages=stages,
            fixed_mask_method=fixed_method, moving_mask_method=moving_method,
            working_spacing_mm=self.working_spacing_mm, runtime_s=round(time.perf_counter() - start, 3),
            passed=not failures, failures=failures,
        )


def jacobian_range(transform: sitk.Transform, reference: sitk.Image) -> tuple[float, float]:
    """Minimum and maximum Jacobian determinant of ``transform`` sampled on ``reference``'s grid."""
    to_field = sitk.TransformToDisplacementFieldFilter()
    to_field.SetReferenceImage(reference)
    to_field.SetOutputPixelType(sitk.sitkVectorFloat64)
    determinant = sitk.DisplacementFieldJacobianDeterminant(to_field.Execute(transform))
    array = sitk.GetArrayViewFromImage(determinant)
    return float(array.min()), float(array.max())


# ------------------------------------------------------------------- helpers
def _mask_dice(fixed_mask: sitk.Image, moving_mask: sitk.Image, transform: sitk.Transform) -> float:
    """Body-mask Dice inside the region both images cover (parts outside a field of view do not count)."""
    mapped = sitk.Resample(moving_mask, fixed_mask, transform, sitk.sitkNearestNeighbor, 0)
    field = sitk.Image(moving_mask.GetSize(), sitk.sitkUInt8) + 1
    field.CopyInformation(moving_mask)
    covered = sitk.Resample(field, fixed_mask, transform, sitk.sitkNearestNeighbor, 0)
    return dice(sitk.And(fixed_mask, covered), sitk.And(mapped, covered))


def _as_float(image: sitk.Image, label: str) -> sitk.Image:
    if image.GetDimension() != 3:
        raise RegistrationError(f"the {label} is not 3D ({image.GetDimension()} dimensions)", fix="pass 3D volumes")
    image = sitk.Cast(image, sitk.sitkFloat32)
    array = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(array).all():
        raise RegistrationError(f"the {label} holds NaN or infinite values", fix="repair or mask the image first")
    if float(array.max()) == float(array.min()):
        raise RegistrationError(f"the {label} is constant ({float(array.min()):g} everywhere): there is nothing to "
                                "register", fix="check that the right file was given")
    return image


def _background(image: sitk.Image) -> float:
    """Value used outside the image: its 0.5th percentile (air on CT and MR)."""
    return float(np.percentile(sitk.GetArrayViewFromImage(image), 0.5))


def _count(mask: sitk.Image) -> int:
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))


def _unwrap(transform: sitk.Transform) -> sitk.Transform:
    """Registration returns a composite holding one transform; give back that transform, typed."""
    if isinstance(transform, sitk.CompositeTransform) and transform.GetNumberOfTransforms() == 1:
        transform = transform.GetNthTransform(0)
    return transform.Downcast()


def _report(stage: str, method: sitk.ImageRegistrationMethod, iterations: int, tic: float) -> StageReport:
    return StageReport(name=stage, iterations=iterations, metric_value=round(float(method.GetMetricValue()), 6),
                       stop_condition=method.GetOptimizerStopConditionDescription(),
                       seconds=round(time.perf_counter() - tic, 3))


def _itk_message(err: RuntimeError) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def _figures(qc: RegistrationQC) -> str:
    parts = [f"metric {qc.metric} {qc.metric_before} -> {qc.metric_after}",
             f"body-mask Dice {qc.mask_dice_before:.3f} -> {qc.mask_dice_after:.3f}"]
    if qc.jacobian_min is not None:
        parts.append(f"Jacobian determinant {qc.jacobian_min:.3f}..{qc.jacobian_max:.3f}")
    parts.append(f"{qc.runtime_s:.1f} s")
    return ", ".join(parts)


def transform_to_dict(transform: sitk.Transform) -> dict[str, Any]:
    """A JSON-ready description of a (possibly composite) transform; :func:`transform_from_dict` rebuilds it."""
    transform = transform.Downcast()
    if isinstance(transform, sitk.CompositeTransform):
        parts = [transform.GetNthTransform(i).Downcast() for i in range(transform.GetNumberOfTransforms())]
    else:
        parts = [transform]
    return {"convention": "fixed -> moving physical points, LPS mm (ITK)",
            "transforms": [{"type": p.GetName(), "parameters": list(p.GetParameters()),
                            "fixed_parameters": list(p.GetFixedParameters())} for p in parts]}


_TRANSFORM_TYPES = {"Euler3DTransform": sitk.Euler3DTransform, "AffineTransform": lambda: sitk.AffineTransform(3),
                    "BSplineTransform": lambda: sitk.BSplineTransform(3, 3)}


def transform_from_dict(description: dict[str, Any]) -> sitk.Transform:
    """Rebuild a transform written by :func:`transform_to_dict`."""
    parts = []
    for item in description["transforms"]:
        factory = _TRANSFORM_TYPES.get(item["type"])
        if factory is None:
            raise ValueError(f"unsupported transform type {item['type']!r}")
        part = factory()
        part.SetFixedParameters(item["fixed_parameters"])
        part.SetParameters(item["parameters"])
        parts.append(part)
    return parts[0] if len(parts) == 1 else sitk.CompositeTransform(parts)
