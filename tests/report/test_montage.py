"""Montage geometry: radiological orientation, physical aspect ratio, one physical point per row."""

from __future__ import annotations

import io

import numpy as np
import pytest

from medgan.report.display import NAMED_WINDOWS, display_for_task, parse_window
from medgan.report.montage import Panel, body_centre_mm, canonical_ras, extract_view, render_case_montage


def _marked(shape, affine):
    """A volume with value 1 at the voxel most to the patient's right, front and top, and 2 at the origin voxel."""
    volume = np.zeros(shape, np.float32)
    corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    world = (affine @ np.c_[corners, np.ones(len(corners))].T).T[:, :3]
    right_front_top = corners[np.argmax(world @ np.array([1.0, 1.0, 1.0]))]
    volume[tuple(right_front_top)] = 1
    return volume


@pytest.mark.parametrize("affine", [np.diag([1.0, 1.0, 2.0, 1.0]), np.diag([-1.0, -1.0, 2.0, 1.0])],
                         ids=["RAS", "LPS-stored"])
def test_radiological_orientation(affine):
    shape = (6, 5, 4)
    volume = _marked(shape, affine)
    array, ras_affine = canonical_ras(volume, affine)
    corner_mm = (ras_affine @ np.array([shape[0] - 1, shape[1] - 1, shape[2] - 1, 1.0]))[:3]
    axial, _ = extract_view(array, ras_affine, corner_mm, "axial")
    coronal, _ = extract_view(array, ras_affine, corner_mm, "coronal")
    sagittal, _ = extract_view(array, ras_affine, corner_mm, "sagittal")
    assert axial[0, 0] == 1  # patient right on the viewer's left, anterior at the top
    assert coronal[0, 0] == 1  # superior at the top, right on the left
    assert sagittal[0, 0] == 1  # superior at the top, anterior on the left


def test_thick_slices_look_thick():
    affine = np.diag([0.5, 0.5, 5.0, 1.0])
    volume = np.zeros((40, 40, 8), np.float32)
    image, aspect = extract_view(volume, affine, [10, 10, 20], "coronal")
    assert image.shape == (8, 40) and aspect == pytest.approx(10.0)
    _, axial_aspect = extract_view(volume, affine, [10, 10, 20], "axial")
    assert axial_aspect == pytest.approx(1.0)


def test_same_point_on_different_grids():
    thin_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    thick_affine = np.diag([1.0, 1.0, 5.0, 1.0])
    thin = np.zeros((20, 20, 50), np.float32)
    thin[:, :, 30:35] = 1
    thick = thin.reshape(20, 20, 10, 5).mean(axis=3)
    point = [10.0, 10.0, 32.0]
    assert extract_view(thin, thin_affine, point, "axial")[0].mean() == 1
    assert extract_view(thick, thick_affine, point, "axial")[0].mean() == 1


def test_body_centre_finds_the_object():
    volume = np.full((60, 60, 20), -1000.0, np.float32)
    volume[35:55, 10:30, 5:15] = 40.0
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    assert body_centre_mm(volume, affine) == pytest.approx([2 * 44.5, 2 * 19.5, 3 * 9.5], abs=2.5)


def test_montage_png_keeps_physical_proportions():
    import matplotlib.image

    volume = np.random.default_rng(0).normal(40, 20, (64, 64, 8)).astype(np.float32)
    window = NAMED_WINDOWS["soft_tissue"]
    heights = []
    for slice_mm in (1.0, 4.0):
        affine = np.diag([1.0, 1.0, slice_mm, 1.0])
        panels = [Panel("output", volume, affine, "ct", window.limits, label=window.label()),
                  Panel("difference", volume - 40, affine, "difference", (-100, 100), cmap="RdBu_r")]
        png = render_case_montage(panels, [32, 32, 16], views=("coronal",), title="test")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        heights.append(matplotlib.image.imread(io.BytesIO(png)).shape[0])
    # the coronal row is 8 mm tall with 1 mm slices and 32 mm with 4 mm slices (columns are 3 in = 300 px wide)
    assert heights[1] - heights[0] == pytest.approx(300 * (32 - 8) / 64, abs=12)
    with pytest.raises(ValueError, match="kind"):
        Panel("x", volume, affine, "rainbow", (0, 1))


def test_windows_and_task_defaults():
    assert parse_window("W80/L40").limits == (0.0, 80.0)
    assert parse_window("brain").label() == "brain W80/L40"
    assert parse_window("1500/-600").level_hu == -600
    assert display_for_task("ct_kernel_conversion").window.name == "bone"
    assert display_for_task("ct_lowdose_denoising", window="lung").window.name == "lung"
    from medgan.errors import MedganError

    with pytest.raises(MedganError, match="window"):
        parse_window("W-3/L2")
    with pytest.raises(MedganError, match="task"):
        display_for_task("denoise")
