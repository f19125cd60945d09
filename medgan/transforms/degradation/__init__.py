"""Degradation simulators that make training pairs from real scans: low dose, kernels, thick slices.

See ``docs/simulation.md`` for the physics, the parameters and the measured validation.
"""

from medgan.transforms.degradation.array import (
    RandSimulateKernel,
    RandSimulateLowDose,
    RandSimulateThickSlices,
    SimulateKernel,
    SimulateLowDose,
    SimulateThickSlices,
)
from medgan.transforms.degradation.dictionary import (
    RandSimulateKerneld,
    RandSimulateLowDosed,
    RandSimulateThickSlicesd,
    SimulateKerneld,
    SimulateLowDosed,
    SimulateThickSlicesd,
)
from medgan.transforms.degradation.kernel import KernelParameters, simulate_kernel
from medgan.transforms.degradation.lowdose import LowDoseParameters, simulate_low_dose, simulate_low_dose_fast
from medgan.transforms.degradation.thick_slice import ThickSliceParameters, simulate_thick_slices

__all__ = [
    "SimulateLowDose", "RandSimulateLowDose", "SimulateKernel", "RandSimulateKernel", "SimulateThickSlices",
    "RandSimulateThickSlices", "SimulateLowDosed", "RandSimulateLowDosed", "SimulateKerneld",
    "RandSimulateKerneld", "SimulateThickSlicesd", "RandSimulateThickSlicesd", "LowDoseParameters",
    "KernelParameters", "ThickSliceParameters", "simulate_low_dose", "simulate_low_dose_fast",
    "simulate_kernel", "simulate_thick_slices",
]
