"""Display settings per task: CT windows, the difference range and the uncertainty range (HU).

A CT window ``W/L`` maps ``[L - W/2, L + W/2]`` HU linearly to black..white. The defaults follow common
radiology practice: soft tissue W400/L40 for low-dose denoising and super-resolution, bone W2000/L500
for kernel conversion (where the sharp kernel's edges live), a wide W1500/L250 for synthetic CT (air,
soft tissue and bone in one picture), brain W80/L40 for neuro reading. MR inputs are shown from their
own 1st to 99th percentile. Differences use a diverging colour map over ``+-difference_hu``; the
uncertainty (per-voxel standard deviation) a sequential one over ``[0, uncertainty_hu]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

from medgan.errors import MedganError
from medgan.keys import Task

__all__ = ["DisplaySettings", "NAMED_WINDOWS", "TASK_DISPLAY", "Window", "display_for_task", "parse_window"]


@dataclass(frozen=True)
class Window:
    """A CT display window in HU.

    Args:
        width_hu: window width W.
        level_hu: window centre L.
        name: shown in titles, e.g. ``soft tissue``.
    """

    width_hu: float
    level_hu: float
    name: str = ""

    @property
    def limits(self) -> Tuple[float, float]:
        """``(low, high)`` HU shown as black and white."""
        return self.level_hu - self.width_hu / 2, self.level_hu + self.width_hu / 2

    def label(self) -> str:
        text = f"W{self.width_hu:g}/L{self.level_hu:g}"
        return f"{self.name} {text}" if self.name else text


NAMED_WINDOWS: Dict[str, Window] = {
    "soft_tissue": Window(400, 40, "soft tissue"),
    "brain": Window(80, 40, "brain"),
    "bone": Window(2000, 500, "bone"),
    "lung": Window(1500, -600, "lung"),
    "wide": Window(1500, 250, "wide"),
}


@dataclass(frozen=True)
class DisplaySettings:
    """How a task's volumes are shown.

    Args:
        window: CT window of input (when CT), output and reference.
        difference_hu: the difference colour map spans ``[-difference_hu, +difference_hu]`` HU.
        uncertainty_hu: the uncertainty colour map spans ``[0, uncertainty_hu]`` HU.
        difference_cmap: diverging matplotlib colour map (blue = output below reference).
        uncertainty_cmap: sequential matplotlib colour map.
        mr_percentiles: percentiles (%) mapped to black and white for an MR input.
    """

    window: Window = NAMED_WINDOWS["soft_tissue"]
    difference_hu: float = 100.0
    uncertainty_hu: float = 50.0
    difference_cmap: str = "RdBu_r"
    uncertainty_cmap: str = "magma"
    mr_percentiles: Tuple[float, float] = (1.0, 99.0)


TASK_DISPLAY: Dict[str, DisplaySettings] = {
    Task.LOW_DOSE_DENOISING.value: DisplaySettings(NAMED_WINDOWS["soft_tissue"], 100.0, 50.0),
    Task.SUPER_RESOLUTION.value: DisplaySettings(NAMED_WINDOWS["soft_tissue"], 200.0, 100.0),
    Task.KERNEL_CONVERSION.value: DisplaySettings(NAMED_WINDOWS["bone"], 300.0, 100.0),
    Task.MR_SYNTHETIC_CT.value: DisplaySettings(NAMED_WINDOWS["wide"], 300.0, 200.0),
}

_WINDOW_TEXT = re.compile(r"^\s*W?\s*(?P<width>[0-9.]+)\s*/\s*L?\s*(?P<level>-?[0-9.]+)\s*$", re.IGNORECASE)


def parse_window(text: str) -> Window:
    """A window from a name of :data:`NAMED_WINDOWS` or ``"W400/L40"`` / ``"400/40"``.

    Raises:
        MedganError: the text is neither.
    """
    key = text.strip().lower().replace(" ", "_").replace("-", "_")
    if key in NAMED_WINDOWS:
        return NAMED_WINDOWS[key]
    match = _WINDOW_TEXT.match(text)
    if match is None or float(match["width"]) <= 0:
        raise MedganError(f"unknown CT window {text!r}",
                          fix=f"use one of {', '.join(NAMED_WINDOWS)} or W<width>/L<level>, e.g. W400/L40")
    return Window(float(match["width"]), float(match["level"]))


def display_for_task(task: Optional[str] = None, window: Optional[str] = None,
                     difference_hu: Optional[float] = None) -> DisplaySettings:
    """The display settings of a task (a :class:`medgan.keys.Task` value), with optional overrides.

    Args:
        task: the task; None or an unknown name gives the soft-tissue defaults.
        window: override of the CT window (see :func:`parse_window`).
        difference_hu: override of the difference range.

    Raises:
        MedganError: ``task`` is given but is not a medgan task.
    """
    if task is not None and task not in TASK_DISPLAY:
        raise MedganError(f"unknown task {task!r}", fix=f"use one of {', '.join(TASK_DISPLAY)}")
    settings = TASK_DISPLAY[task] if task is not None else DisplaySettings()
    if window is not None:
        settings = replace(settings, window=parse_window(window))
    if difference_hu is not None:
        settings = replace(settings, difference_hu=float(difference_hu))
    return settings
