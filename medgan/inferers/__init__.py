"""Whole-volume sliding-window inference."""

from medgan.inferers.openvino_backend import CPU_BACKENDS, OpenVINONetwork, with_cpu_backend
from medgan.inferers.sliding_window import (
    BackgroundSkippingInferer,
    SkipBackgroundWindows,
    make_sliding_window_inferer,
    predict_volume,
)
from medgan.inferers.uncertainty import (
    ALL_FLIPS,
    IN_PLANE_FLIPS,
    RunningMoments,
    predict_with_uncertainty,
    propagate_sd,
    uncertainty_score,
    uncertainty_sidecar,
)

__all__ = ["ALL_FLIPS", "CPU_BACKENDS", "OpenVINONetwork", "with_cpu_backend", "BackgroundSkippingInferer", "SkipBackgroundWindows", "IN_PLANE_FLIPS", "RunningMoments", "make_sliding_window_inferer", "predict_volume",
           "predict_with_uncertainty", "propagate_sd", "uncertainty_score", "uncertainty_sidecar"]
