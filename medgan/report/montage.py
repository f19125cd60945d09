"""PNG montages of volumes: columns input / output / reference / difference / uncertainty, rows views or cases.

Every volume is first turned to the RAS orientation closest to its affine (no resampling: axes are
permuted and flipped). Slices are shown the radiological way: axial and coronal with the patient's
right on the viewer's left, axial with anterior up, coronal and sagittal with superior up, sagittal
with anterior on the left. Pixels keep their physical aspect ratio (``imshow(aspect=row/column
spacing)``, nearest-neighbour), so a 5 mm slice looks five times as tall as a 1 mm one in the coronal
and sagittal views. All panels of a row cut through one physical point (RAS mm), so volumes on
different grids (a thick input beside a thin output) show the same anatomy.

Drawing uses matplotlib's Agg back end only (no display needed).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["VIEWS", "Panel", "body_centre_mm", "canonical_ras", "extract_view", "render_case_montage",
           "render_cases_montage"]

logger = logging.getLogger(__name__)

VIEWS = ("axial", "coronal", "sagittal")
#: Panel kinds: how values are mapped to colour.
KINDS = ("ct", "mr", "difference", "uncertainty")
#: Voxels above this HU (CT) are body candidates for the default centre.
BODY_THRESHOLD_HU = -500.0
#: For a non-CT volume, voxels above this fraction of the 99th percentile are body candidates.
BODY_FRACTION_OF_P99 = 0.1
#: Width of one montage column (inches) and the resolution of the PNG (dots per inch).
COLUMN_WIDTH_IN = 3.0
DPI = 100


@dataclass
class Panel:
    """One column of a montage: a volume and how to colour it.

    Args:
        title: column title (the window or range is appended).
        volume: ``(X, Y, Z)`` array.
        affine: ``(4, 4)`` voxel -> RAS mm.
        kind: ``ct`` (CT window), ``mr`` (own percentiles), ``difference`` (diverging, symmetric) or
            ``uncertainty`` (sequential from 0).
        limits: ``(low, high)`` values mapped to the ends of the colour map.
        cmap: matplotlib colour map name.
        label: text appended to the title (``W400/L40``, ``+-100 HU``).
    """

    title: str
    volume: np.ndarray
    affine: np.ndarray
    kind: str
    limits: Tuple[float, float]
    cmap: str = "gray"
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown panel kind {self.kind!r}; use one of {KINDS}")
        self.volume, self.affine = canonical_ras(np.asarray(self.volume), np.asarray(self.affine, dtype=np.float64))


def canonical_ras(volume: np.ndarray, affine: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Permute and flip ``(X, Y, Z)`` axes to the closest RAS orientation; returns ``(array, affine)``."""
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    if volume.ndim != 3:
        raise ValueError(f"expected a (X, Y, Z) volume, got shape {volume.shape}")
    ornt = io_orientation(affine)
    array = apply_orientation(volume, ornt)
    return array, affine @ inv_ornt_aff(ornt, volume.shape)


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(affine[:3, :3], axis=0)


def _voxel_of(point_mm: np.ndarray, affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    index = np.linalg.solve(affine, np.append(point_mm, 1.0))[:3]
    return np.clip(np.round(index), 0, np.asarray(shape) - 1).astype(int)


def extract_view(volume: np.ndarray, affine: np.ndarray, centre_mm: Sequence[float],
                 view: str) -> Tuple[np.ndarray, float]:
    """The 2D slice of a RAS-oriented volume through a point, in display orientation.

    Args:
        volume: ``(X, Y, Z)`` in RAS orientation (see :func:`canonical_ras`).
        affine: its voxel -> RAS mm affine.
        centre_mm: the RAS point the slice passes through (clamped to the volume).
        view: ``axial``, ``coronal`` or ``sagittal``.

    Returns:
        ``(image (rows, columns), aspect)`` with aspect = row spacing / column spacing (mm/mm).
    """
    i, j, k = _voxel_of(np.asarray(centre_mm, dtype=np.float64), affine, volume.shape)
    sx, sy, sz = _spacing(affine)
    if view == "axial":  # rows anterior -> posterior, columns patient right -> left
        return volume[::-1, ::-1, k].T, sy / sx
    if view == "coronal":  # rows superior -> inferior, columns patient right -> left
        return volume[::-1, j, ::-1].T, sz / sx
    if view == "sagittal":  # rows superior -> inferior, columns anterior -> posterior
        return volume[i, ::-1, ::-1].T, sz / sy
    raise ValueError(f"unknown view {view!r}; use one of {VIEWS}")


def body_centre_mm(volume: np.ndarray, affine: np.ndarray, is_ct: bool = True) -> np.ndarray:
    """RAS centre (mm) of the largest foreground component of a volume (the body or phantom).

    The mask is computed on a grid strided to at most about 128 voxels per axis.

    Args:
        volume: ``(X, Y, Z)``.
        affine: voxel -> RAS mm.
        is_ct: threshold at :data:`BODY_THRESHOLD_HU` (else at a fraction of the 99th percentile).
    """
    from scipy import ndimage

    steps = [max(1, n // 128) for n in volume.shape]
    sample = np.asarray(volume[::steps[0], ::steps[1], ::steps[2]], dtype=np.float32)
    threshold = BODY_THRESHOLD_HU if is_ct else BODY_FRACTION_OF_P99 * float(np.percentile(sample, 99))
    labels, count = ndimage.label(sample > threshold)
    if count == 0:
        logger.warning("no foreground found for the montage centre; using the volume centre")
        centre = (np.asarray(volume.shape) - 1) / 2
    else:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        centre = np.asarray(ndimage.center_of_mass(labels == int(np.argmax(sizes)))) * steps
    return (affine @ np.append(centre, 1.0))[:3]


def _draw(rows: List[List[Optional[Tuple[np.ndarray, float, Panel]]]], row_labels: Sequence[str],
          titles: Sequence[str], suptitle: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    n_rows, n_cols = len(rows), len(titles)
    ratios = []
    for row in rows:
        first = next(cell for cell in row if cell is not None)
        image, aspect = first[0], first[1]
        ratios.append(image.shape[0] * aspect / image.shape[1])
    bar_in = 0.45
    height = sum(COLUMN_WIDTH_IN * r for r in ratios) + bar_in + 0.9
    fig = Figure(figsize=(COLUMN_WIDTH_IN * n_cols + 0.4, height), dpi=DPI)
    grid = fig.add_gridspec(n_rows + 1, n_cols, height_ratios=[COLUMN_WIDTH_IN * r for r in ratios] + [bar_in],
                            left=0.4 / (COLUMN_WIDTH_IN * n_cols + 0.4), right=0.995, top=1 - 0.8 / height,
                            bottom=0.02, wspace=0.03, hspace=0.08)
    shown = [None] * n_cols
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            ax = fig.add_subplot(grid[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            if cell is None:
                ax.set_axis_off()
                continue
            image, aspect, panel = cell
            shown[c] = ax.imshow(image, cmap=panel.cmap, vmin=panel.limits[0], vmax=panel.limits[1],
                                 aspect=aspect, interpolation="nearest")
            ax.set_facecolor("black")
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=9)
    for c, mappable in enumerate(shown):
        if mappable is not None:
            bar_ax = fig.add_subplot(grid[n_rows, c])
            bar = fig.colorbar(mappable, cax=bar_ax, orientation="horizontal")
            low, high = mappable.get_clim()
            bar.set_ticks([low, (low + high) / 2, high])
            ends = bar.ax.get_xticklabels()
            ends[0].set_horizontalalignment("left")  # keep end labels inside their own bar
            ends[-1].set_horizontalalignment("right")
            bar.ax.tick_params(labelsize=7)
            bar_ax.set_box_aspect(0.06)
    fig.suptitle(suptitle, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def _title(panel: Panel) -> str:
    return f"{panel.title}\n{panel.label}" if panel.label else panel.title


def render_case_montage(panels: Sequence[Panel], centre_mm: Sequence[float], views: Sequence[str] = VIEWS,
                        title: str = "") -> bytes:
    """One case: a row per view, a column per panel, all through ``centre_mm``.

    Args:
        panels: the columns (input, output, reference, difference, uncertainty; any subset).
        centre_mm: RAS point (mm) every view passes through, e.g. :func:`body_centre_mm`.
        views: rows, from :data:`VIEWS`.
        title: figure title (case id, what the output is).

    Returns:
        PNG bytes.
    """
    if not panels:
        raise ValueError("a montage needs at least one panel")
    rows = [[(*extract_view(p.volume, p.affine, centre_mm, view), p) for p in panels] for view in views]
    centre = ", ".join(f"{v:.1f}" for v in centre_mm)
    return _draw(rows, list(views), [_title(p) for p in panels], f"{title}   (centre RAS {centre} mm)".strip())


def render_cases_montage(cases: Sequence[Tuple[str, Sequence[Optional[Panel]], Sequence[float]]],
                         column_titles: Sequence[str], view: str = "axial", title: str = "") -> bytes:
    """Several cases in one picture: a row per case (one view), a column per panel kind.

    Args:
        cases: ``(case_id, panels, centre_mm)``; ``panels`` lines up with ``column_titles`` (None
            leaves a cell empty).
        column_titles: the columns.
        view: one of :data:`VIEWS`.
        title: figure title.

    Returns:
        PNG bytes.
    """
    rows = [[None if p is None else (*extract_view(p.volume, p.affine, centre, view), p) for p in panels]
            for _, panels, centre in cases]
    return _draw(rows, [case_id for case_id, _, _ in cases], list(column_titles), title)
