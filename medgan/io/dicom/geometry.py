"""Slice geometry: order along the slice normal, spacing, gaps, duplicates, gantry tilt, affines.

All coordinates here are DICOM patient coordinates (LPS, mm). A slice ``k`` with position ``p_k``
(ImagePositionPatient), row direction ``r`` and column direction ``c`` (ImageOrientationPatient)
puts pixel ``(column i, row j)`` at ``p_k + i * dx * r + j * dy * c``, where ``dx`` is the spacing
between columns (PixelSpacing[1]) and ``dy`` between rows (PixelSpacing[0]). Slices are sorted by
``p_k . n`` with ``n = r x c``; file names and InstanceNumber play no part.

Gantry tilt shows as positions that move within the slice plane from one slice to the next: the
voxel grid is then sheared. Uneven spacing (gaps, mixed spacing) makes the grid irregular. Both can
be resampled onto an orthogonal, evenly spaced grid with axes ``(r, c, n)`` (what dcm2niix writes as
its ``_Tilt_``/``_Eq_`` files), see :func:`resample_to_orthogonal`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from medgan.errors import DicomSeriesError
from medgan.io.dicom.discovery import ORIENTATION_TOLERANCE, PIXEL_SPACING_RTOL, SeriesInfo, SliceRecord

# Two slices closer than this along the normal are at the same position (mm).
DUPLICATE_POSITION_MM = 0.01
# A step larger than this multiple of the typical (median) spacing is a missing slice.
GAP_FACTOR = 1.5
# Steps within this fraction of the typical spacing (or DUPLICATE_POSITION_MM) count as even.
EVEN_SPACING_RTOL = 0.01
# In-plane drift of the stack (as a fraction of the smallest pixel spacing) above which it is sheared.
SHEAR_PIXEL_FRACTION = 0.05

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class StackGeometry:
    """The geometry of a stack of parallel slices, sorted along the slice normal.

    Attributes:
        order: indices into the input records, sorted by position along ``normal``.
        row_dir, col_dir, normal: unit vectors ``r``, ``c``, ``n = r x c`` (LPS).
        spacing_xy_mm: ``(dx, dy)``: between columns, between rows.
        positions_mm: ``(N, 3)`` sorted ImagePositionPatient.
        normal_mm: ``(N,)`` sorted positions along ``normal``.
        steps_mm: ``(N - 1,)`` steps between neighbours along ``normal``.
        slice_spacing_mm: the typical step (median of ``steps_mm``).
        even: all steps equal within tolerance.
        gaps: ``(index, step_mm)`` for steps above ``GAP_FACTOR`` times the typical step.
        tilt_deg: angle between the stacking direction and the normal (0 without tilt).
        sheared: the in-plane drift of the positions is measurable (gantry tilt or per-slice shift).
    """

    order: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray
    spacing_xy_mm: Tuple[float, float]
    shape_xy: Tuple[int, int]
    positions_mm: np.ndarray
    normal_mm: np.ndarray
    steps_mm: np.ndarray
    slice_spacing_mm: float
    even: bool
    gaps: Tuple[Tuple[int, float], ...]
    tilt_deg: float
    sheared: bool

    @property
    def n_slices(self) -> int:
        return int(self.order.size)

    def in_plane_offsets(self) -> np.ndarray:
        """``(N, 2)`` offset of each sorted slice from the first, in pixels along ``(r, c)``."""
        delta = self.positions_mm - self.positions_mm[0]
        return np.stack([delta @ self.row_dir / self.spacing_xy_mm[0], delta @ self.col_dir / self.spacing_xy_mm[1]], 1)

    def spacing_problem(self) -> Optional[str]:
        """A sentence describing uneven spacing (gaps first), or None when spacing is even."""
        if self.even:
            return None
        if self.gaps:
            where = ", ".join(f"{step:.3g} mm after slice {index + 1}" for index, step in self.gaps[:5])
            more = "" if len(self.gaps) <= 5 else f" and {len(self.gaps) - 5} more"
            return (f"missing slice(s): {len(self.gaps)} gap(s) larger than {GAP_FACTOR}x the typical "
                    f"spacing of {self.slice_spacing_mm:.4g} mm ({where}{more})")
        return (f"uneven slice spacing: steps from {self.steps_mm.min():.4g} to {self.steps_mm.max():.4g} mm "
                f"(typical {self.slice_spacing_mm:.4g} mm)")


def _check_consistent(records: Sequence[SliceRecord], path: str) -> None:
    first = records[0]
    sizes = np.array([(r.rows, r.columns) for r in records])
    odd = np.flatnonzero(np.any(sizes != sizes[0], axis=1))
    if odd.size:
        record = records[odd[0]]
        raise DicomSeriesError(
            f"slices differ in size ({first.columns}x{first.rows} in {first.path}, "
            f"{record.columns}x{record.rows} in {record.path})", path,
            "the selection mixes different images; select a single series or remove the odd files")
    orientations = np.array([r.orientation for r in records], dtype=np.float64)
    odd = np.flatnonzero(np.abs(orientations - orientations[0]).max(axis=1) > ORIENTATION_TOLERANCE)
    if odd.size:
        raise DicomSeriesError(
            f"slices differ in orientation (ImageOrientationPatient of {first.path} and {records[odd[0]].path})", path,
            "the series mixes planes (e.g. a 3-plane localizer); select a series with one orientation")
    spacings = np.array([r.pixel_spacing for r in records], dtype=np.float64)
    odd = np.flatnonzero(np.any(np.abs(spacings - spacings[0]) > PIXEL_SPACING_RTOL * np.abs(spacings[0]), axis=1))
    if odd.size:
        record = records[odd[0]]
        raise DicomSeriesError(
            f"slices differ in PixelSpacing ({list(first.pixel_spacing)} in {first.path}, "
            f"{list(record.pixel_spacing)} in {record.path})", path,
            "the selection mixes differently reconstructed images; select a single series")


def analyze_stack(records: Sequence[SliceRecord], path: str) -> StackGeometry:
    """Sort ``records`` along the slice normal and measure spacing, gaps and tilt.

    Args:
        records: the slices of one series (any order).
        path: the folder named in errors.

    Raises:
        DicomSeriesError: fewer than two slices; slices differ in size, orientation or pixel
            spacing; two slices share a position.
    """
    if len(records) < 2:
        raise DicomSeriesError("a single 2D image is not a volume", path,
                               "select a series with at least two slices")
    _check_consistent(records, path)
    orientation = np.array(records[0].orientation, dtype=np.float64)
    row_dir, col_dir = orientation[:3], orientation[3:]
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir - (col_dir @ row_dir) * row_dir
    col_dir = col_dir / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    positions = np.array([r.position for r in records], dtype=np.float64)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    positions, along = positions[order], along[order]
    steps = np.diff(along)
    duplicates = np.flatnonzero(steps < DUPLICATE_POSITION_MM)
    if duplicates.size:
        first, second = records[order[duplicates[0]]], records[order[duplicates[0] + 1]]
        same_object = first.sop_instance_uid == second.sop_instance_uid and first.frame == second.frame
        raise DicomSeriesError(
            f"{duplicates.size} pair(s) of slices share a position, e.g. {first.path} and {second.path} at "
            f"{along[duplicates[0]]:.3f} mm along the slice normal"
            + (" (the same SOPInstanceUID: a duplicated file)" if same_object else ""), path,
            "remove duplicated files, or separate the acquisitions (different AcquisitionNumber/time) into folders")
    spacing_xy = (float(records[0].pixel_spacing[1]), float(records[0].pixel_spacing[0]))
    typical = float(np.median(steps))
    tolerance = max(EVEN_SPACING_RTOL * typical, DUPLICATE_POSITION_MM)
    even = bool(np.all(np.abs(steps - typical) <= tolerance))
    gaps = tuple((int(i), float(steps[i])) for i in np.flatnonzero(steps > GAP_FACTOR * typical))
    delta = positions - positions[0]
    drift = delta - np.outer(delta @ normal, normal)
    drift_mm = float(np.linalg.norm(drift, axis=1).max())
    sheared = drift_mm > SHEAR_PIXEL_FRACTION * min(spacing_xy)
    span = positions[-1] - positions[0]
    tilt_deg = float(np.degrees(np.arccos(np.clip(abs(span @ normal) / np.linalg.norm(span), 0.0, 1.0))))
    return StackGeometry(order=order, row_dir=row_dir, col_dir=col_dir, normal=normal, spacing_xy_mm=spacing_xy,
                         shape_xy=(records[0].columns, records[0].rows), positions_mm=positions, normal_mm=along,
                         steps_mm=steps, slice_spacing_mm=typical, even=even, gaps=gaps,
                         tilt_deg=tilt_deg if sheared else 0.0, sheared=sheared)


def judge_series(info: SeriesInfo) -> Tuple[bool, str]:
    """Whether an image series can become a volume (from headers), and what reading it involves.

    Fills ``pixel_spacing_mm``, ``slice_spacing_mm`` and ``tilt_deg`` of ``info`` when it can.

    Returns:
        ``(usable, reason)``: reason is empty for a plain regular volume, says what must be
        resampled for a tilted or unevenly spaced one, or why it is not a volume.
    """
    try:
        geometry = analyze_stack(info.records, info.folder)
    except DicomSeriesError as err:
        info.fix = err.fix or ""
        return False, err.problem
    info.pixel_spacing_mm = geometry.spacing_xy_mm
    info.slice_spacing_mm = round(geometry.slice_spacing_mm, 4)
    info.tilt_deg = round(geometry.tilt_deg, 3)
    notes = []
    if geometry.sheared:
        notes.append(f"gantry tilt {geometry.tilt_deg:.2f} deg: resampled onto an orthogonal grid")
    problem = geometry.spacing_problem()
    if problem:
        notes.append(problem + ": needs resample_uneven (--resample-uneven)")
        info.fix = ("convert with --resample-uneven (resample_uneven=True) to resample onto even spacing, "
                    "or find the missing files")
    return True, "; ".join(notes)


def sheared_affine_lps(geometry: StackGeometry) -> np.ndarray:
    """The exact voxel -> LPS affine of an evenly spaced stack, shear from gantry tilt included.

    The third column is the mean step between slice positions, so a tilted stack keeps every
    voxel where the scanner put it (the affine is then not orthogonal).

    Raises:
        DicomSeriesError: the spacing is uneven (no affine can describe it).
    """
    if not geometry.even:
        raise DicomSeriesError(f"{geometry.spacing_problem()}; an affine cannot describe it",
                               fix="resample it (resample_uneven=True, --resample-uneven)")
    affine = np.eye(4)
    affine[:3, 0] = geometry.row_dir * geometry.spacing_xy_mm[0]
    affine[:3, 1] = geometry.col_dir * geometry.spacing_xy_mm[1]
    affine[:3, 2] = (geometry.positions_mm[-1] - geometry.positions_mm[0]) / (geometry.n_slices - 1)
    affine[:3, 3] = geometry.positions_mm[0]
    return affine


def orthogonal_grid(geometry: StackGeometry, slice_spacing_mm: Optional[float] = None,
                    ) -> Tuple[np.ndarray, Tuple[int, int, int], np.ndarray]:
    """The orthogonal, evenly spaced grid that covers every slice of a sheared/uneven stack.

    Returns:
        ``(affine_lps, shape_xyz, offsets)``: the grid's voxel -> LPS affine, its shape, and each
        sorted slice's ``(x, y)`` offset on that grid in voxels.
    """
    spacing = float(slice_spacing_mm or geometry.slice_spacing_mm)
    offsets = geometry.in_plane_offsets()
    low = np.floor(offsets.min(0) + 1e-6)
    high = np.ceil(offsets.max(0) - 1e-6)
    shape_xy = (int(geometry.shape_xy[0] + high[0] - low[0]), int(geometry.shape_xy[1] + high[1] - low[1]))
    extent = geometry.normal_mm[-1] - geometry.normal_mm[0]
    n_out = int(np.floor(extent / spacing + 1e-3)) + 1
    affine = np.eye(4)
    affine[:3, 0] = geometry.row_dir * geometry.spacing_xy_mm[0]
    affine[:3, 1] = geometry.col_dir * geometry.spacing_xy_mm[1]
    affine[:3, 2] = geometry.normal * spacing
    origin = geometry.positions_mm[0] + low[0] * affine[:3, 0] + low[1] * affine[:3, 1]
    affine[:3, 3] = origin
    return affine, (shape_xy[0], shape_xy[1], n_out), offsets - low


def resample_to_orthogonal(stack_zyx: np.ndarray, geometry: StackGeometry, fill_value: float,
                           slice_spacing_mm: Optional[float] = None, dtype: Union[np.dtype, type] = np.float32,
                           ) -> Tuple[np.ndarray, np.ndarray]:
    """Resample a sorted stack onto the orthogonal, evenly spaced grid of :func:`orthogonal_grid`.

    Linear interpolation, separable: gantry tilt shears the stack, so each input slice only moves
    within its plane, by a sub-pixel offset; it is placed on the output grid by bilinear weights on
    its four integer neighbours (two when the offset is a whole pixel along one axis, the usual case
    of a tilt), and output slices are blended from the two input slices around them along the normal.
    For a constant gantry tilt this is trilinear interpolation in the scanner's sheared grid.
    Outside the input slices the value is ``fill_value`` (also the neighbour beyond a slice's edge).
    Work buffers are reused from slice to slice, so memory stays at the output plus a few slices.

    Args:
        stack_zyx: ``(Z, Y, X)`` slices sorted along the normal (any numeric dtype).
        geometry: the stack's geometry from :func:`analyze_stack`.
        fill_value: value of output voxels outside every input slice.
        slice_spacing_mm: output spacing along the normal; default the typical input step.
        dtype: output dtype; an integer dtype gets the interpolated values rounded to the nearest.

    Returns:
        ``(volume_zyx, affine_lps)``: ``(Z', Y', X')`` in ``dtype`` and its voxel(x, y, z) -> LPS affine.
    """
    affine, (nx, ny, nz), offsets = orthogonal_grid(geometry, slice_spacing_mm)
    spacing = float(np.linalg.norm(affine[:3, 2]))
    out = np.empty((nz, ny, nx), dtype=dtype)
    rounding = out.dtype.kind in "iu"
    placer = _SlicePlacer(stack_zyx.shape[1:], (ny, nx), np.float32(fill_value))
    canvases = {}  # input slice index -> its placed canvas; output slices move monotonically
    spare = [np.empty((ny, nx), np.float32) for _ in range(3)]

    def placed(k: int) -> np.ndarray:
        if k not in canvases:
            for old in [i for i in canvases if i < k - 1]:
                spare.append(canvases.pop(old))
            canvases[k] = placer.place(spare.pop(), stack_zyx[k], offsets[k])
        return canvases[k]

    relative = geometry.normal_mm - geometry.normal_mm[0]
    last = geometry.n_slices - 1
    blend = np.empty((ny, nx), np.float32)
    for m in range(nz):
        w = min(m * spacing, relative[-1])
        k = int(np.clip(np.searchsorted(relative, w, side="right") - 1, 0, last - 1))
        t = (w - relative[k]) / (relative[k + 1] - relative[k])
        if t <= 1e-6:
            value = placed(k)
        elif t >= 1 - 1e-6:
            value = placed(k + 1)
        else:
            value = _lerp_into(blend, placed(k), placed(k + 1), np.float32(t))
        if rounding:
            np.rint(value, out=blend)  # in place when ``value`` is ``blend``
            out[m] = blend
        else:
            out[m] = value
    return out, affine


def _lerp_into(buffer: np.ndarray, a: np.ndarray, b: np.ndarray, t: np.float32) -> np.ndarray:
    """``(1 - t) * a + t * b`` written into ``buffer``."""
    np.subtract(b, a, out=buffer)
    buffer *= t
    buffer += a
    return buffer


class _SlicePlacer:
    """Puts input slices on the output canvas, shifted by sub-pixel offsets, with reused buffers."""

    def __init__(self, shape_yx: Tuple[int, int], canvas_yx: Tuple[int, int], fill: np.float32) -> None:
        self.fill = fill
        self.centred = np.empty(shape_yx, np.float32)  # slice - fill
        self.weighted = np.empty(shape_yx, np.float32)
        self.canvas_yx = canvas_yx

    def place(self, canvas: np.ndarray, image: np.ndarray, offset_xy: np.ndarray) -> np.ndarray:
        """``canvas`` filled with ``fill`` plus the bilinearly shifted ``image``; returns ``canvas``.

        With weights summing to one, ``fill + sum(w * (image - fill))`` over the shifted copies is the
        bilinear interpolation of ``image`` padded with ``fill``.
        """
        ox, oy = float(offset_xy[0]), float(offset_xy[1])
        ix, iy = int(np.floor(ox + 1e-6)), int(np.floor(oy + 1e-6))
        fx, fy = ox - ix, oy - iy
        canvas.fill(self.fill)
        np.subtract(image, self.fill, out=self.centred, casting="unsafe")
        height, width = image.shape
        weights_y = [(0, 1.0)] if abs(fy) <= _WHOLE_PIXEL else [(0, 1.0 - fy), (1, fy)]
        weights_x = [(0, 1.0)] if abs(fx) <= _WHOLE_PIXEL else [(0, 1.0 - fx), (1, fx)]
        for dy, wy in weights_y:
            for dx, wx in weights_x:
                window = canvas[iy + dy:iy + dy + height, ix + dx:ix + dx + width]
                rows, cols = window.shape
                if wy * wx == 1.0:
                    window += self.centred[:rows, :cols]
                else:
                    np.multiply(self.centred, np.float32(wy * wx), out=self.weighted)
                    window += self.weighted[:rows, :cols]
        return canvas


_WHOLE_PIXEL = 1e-4


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Convert a voxel -> LPS affine into voxel -> RAS."""
    return LPS_TO_RAS @ affine_lps
