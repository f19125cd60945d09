"""Conformance with dcm2niix on real DICOM (marker ``realdata``; ``-s`` prints the per-series table).

For every image series of ``dicom/dcm_qa_ct`` and ``dicom/ct_abdomen_j2k`` the pip ``dcm2niix`` is run
into a temporary folder; its tilt-/spacing-corrected file (``_Tilt_``, ``_Eq_``) is used where it
writes one. Our volume is resampled onto dcm2niix's grid in physical space (SimpleITK, linear) and
must agree to a median absolute difference <= 1 HU and a 99th percentile <= 50 HU inside the
common field of view, with the corner voxels of both grids at the same world positions (<= 0.5 mm).

``dicom/dcm_qa_ts`` (one Siemens mosaic in 9 transfer syntaxes) must decode exactly to the
reference arrays dcm2niix wrote.
"""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import nibabel as nib
import numpy as np
import pytest

from medgan.io.dicom import read_dicom_volume, scan_series
from tests.conftest import dcm2niix_executable
from medgan.io.dicom.discovery import read_header, slice_records, uid_name
from medgan.io.dicom.reader import DicomVolume, decode_frames

pytestmark = pytest.mark.realdata

CT_ROOTS = ("dicom/dcm_qa_ct/In", "dicom/ct_abdomen_j2k")
# dcm2niix suffixes, most corrected first.
CORRECTED_SUFFIXES = ("_Tilt_Eq_1", "_Tilt_1", "_Eq_1", "")
MEDIAN_HU, P99_HU, CORNER_MM = 1.0, 50.0, 0.5
# Series whose dcm2niix tilt-corrected file is misplaced (tilt tag and slice vector of opposite sign).
DCM2NIIX_MISPLACED_TILT = {"1.3.46.670589.33.1.21460354612772622918.29194547251885003033"}
_TABLE: List[str] = []


def run_dcm2niix(source: Path, out: Path) -> Dict[str, Dict[str, Path]]:
    """Convert ``source`` with dcm2niix, files named by SeriesInstanceUID; UID -> {suffix: NIfTI}."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([dcm2niix_executable(), "-f", "%j", "-z", "n", "-b", "n", "-o", str(out), str(source)],
                   check=True, capture_output=True, timeout=300)
    found: Dict[str, Dict[str, Path]] = {}
    for path in sorted(out.glob("*.nii")):
        uid, suffix = _split_suffix(path.stem)
        found.setdefault(uid, {})[suffix] = path
    return found


def _split_suffix(stem: str) -> Tuple[str, str]:
    for suffix in CORRECTED_SUFFIXES:
        if suffix and stem.endswith(suffix):
            return stem[: -len(suffix)], suffix
    return stem, ""


def _to_sitk(volume: DicomVolume):
    import SimpleITK as sitk

    affine_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array.transpose(2, 1, 0)).astype(np.float32))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in affine_lps[:3, 3]])
    image.SetDirection([float(v) for v in (affine_lps[:3, :3] / spacing).ravel()])
    return image


def _corners(image) -> np.ndarray:
    size = image.GetSize()
    return np.array([image.TransformIndexToPhysicalPoint([int(c) for c in corner])
                     for corner in itertools.product(*[(0, s - 1) for s in size])])


def compare_to_reference(volume: DicomVolume, reference: Path) -> Dict[str, float]:
    """Resample ``volume`` onto the reference grid; HU differences in the common FOV, corner distances."""
    import SimpleITK as sitk

    ref = sitk.Cast(sitk.ReadImage(str(reference)), sitk.sitkFloat32)
    ours = _to_sitk(volume)
    # Our fill (outside every scanned slice after tilt correction) is NaN so it never counts as data.
    if volume.meta["medgan"]["fill_value"] is not None:
        array = sitk.GetArrayFromImage(ours)
        array[array == volume.meta["medgan"]["fill_value"]] = np.nan
        nan_image = sitk.GetImageFromArray(array)
        nan_image.CopyInformation(ours)
        ours = nan_image
    resampled = sitk.Resample(ours, ref, sitk.Transform(), sitk.sitkLinear, float("nan"), sitk.sitkFloat32)
    ours_on_ref = sitk.GetArrayFromImage(resampled)
    ref_values = sitk.GetArrayFromImage(ref)
    common = np.isfinite(ours_on_ref) & (ref_values > ref_values.min())  # dcm2niix pads with its minimum
    diff = np.abs(ours_on_ref[common] - ref_values[common])
    ours_corners, ref_corners = _corners(_to_sitk(volume)), _corners(ref)
    distances = np.linalg.norm(ours_corners[:, None] - ref_corners[None], axis=2).min(axis=1)
    axes_ours = np.array(ours.GetDirection()).reshape(3, 3).T
    axes_ref = np.array(ref.GetDirection()).reshape(3, 3).T
    angle = np.degrees(np.arccos(np.clip(np.abs(axes_ours @ axes_ref.T).max(axis=1), 0, 1))).max()
    return {"median_hu": float(np.median(diff)), "p99_hu": float(np.percentile(diff, 99)),
            "corner_mm": float(distances.max()), "axis_deg": float(angle), "voxels": int(common.sum()),
            "fraction": float(common.mean())}


def _ct_cases(data_root: Path) -> List[Tuple[str, str]]:
    cases = []
    for relative in CT_ROOTS:
        root = data_root / relative
        if root.exists():
            cases += [(relative, s.key) for s in scan_series(root)[0] if s.usable]
    return cases


@pytest.fixture(scope="module")
def reference_files(data_root, tmp_path_factory) -> Dict[str, Dict[str, Dict[str, Path]]]:
    """Per CT root: SeriesInstanceUID -> {dcm2niix suffix: NIfTI}."""
    return {relative: run_dcm2niix(data_root / relative, tmp_path_factory.mktemp("dcm2niix"))
            for relative in CT_ROOTS if (data_root / relative).exists()}


def _outputs_for(files: Dict[str, Dict[str, Path]], uid: str) -> Dict[str, Path]:
    if not uid and len(files) == 1:  # an anonymised export with a blank UID: dcm2niix names it otherwise
        return next(iter(files.values()))
    assert uid in files, f"dcm2niix wrote nothing for {uid}"
    return files[uid]


def compare_to_exact(volume: DicomVolume, exact: DicomVolume) -> Dict[str, float]:
    """Sample the exact (sheared-affine, not interpolated) volume at our resampled grid's voxels."""
    from scipy import ndimage

    steps = (2, 2, 1)  # every other voxel in-plane keeps this quick
    grid = np.stack(np.meshgrid(*[np.arange(0, n, s) for n, s in zip(volume.array.shape, steps)], indexing="ij"),
                    -1).reshape(-1, 3)
    world = grid @ volume.affine[:3, :3].T + volume.affine[:3, 3]
    index = np.linalg.solve(exact.affine[:3, :3], (world - exact.affine[:3, 3]).T)
    inside = np.all((index >= 0) & (index <= np.array(exact.array.shape)[:, None] - 1), axis=0)
    expected = ndimage.map_coordinates(exact.array.astype(np.float32), index[:, inside], order=1)
    diff = np.abs(volume.array[tuple(grid[inside].T)] - expected)
    return {"median_hu": float(np.median(diff)), "p99_hu": float(np.percentile(diff, 99)), "fraction": float(inside.mean())}


def test_usable_series_found_and_others_skipped(real_file):
    series, skipped = scan_series(real_file("dicom/dcm_qa_ct/In"))
    usable = sorted((s.series_number, s.description) for s in series if s.usable)
    assert usable == [(2, ""), (201, "STD BRAIN 5MM"), (201, "STEREOTAXIS"), (301, "STEREOTAXIS")]
    reasons = {s.series_number: s.reason for s in series if not s.usable}
    assert "LOCALIZER" in reasons[100] and "Secondary Capture" in reasons[401]
    assert sum("DIRFILE" in f.reason for f in skipped) == 9
    tilted = {s.series_number: s.tilt_deg for s in series if s.usable}
    assert tilted[2] == pytest.approx(18.5, abs=0.05) and tilted[301] == pytest.approx(16.5, abs=0.05)


@pytest.fixture(scope="module")
def conformance_rows(data_root, reference_files):
    rows = []
    for relative, key in _ct_cases(data_root):
        root = data_root / relative
        uid = next(s for s in scan_series(root)[0] if s.key == key).series_instance_uid
        outputs = _outputs_for(reference_files[relative], uid)
        suffix = next(s for s in CORRECTED_SUFFIXES if s in outputs)
        # dcm2niix's _Eq_ file has its own even spacing: read at that spacing so both sample the same planes
        spacing = float(nib.load(outputs[suffix]).header.get_zooms()[2]) if "Eq" in suffix else None
        volume = read_dicom_volume(root, series=key, resample_uneven=True, slice_spacing_mm=spacing)
        rows.append((relative, volume, outputs, suffix, compare_to_reference(volume, outputs[suffix])))
    header = (f"{'series':<22} {'ours (X,Y,Z)':<16} {'dcm2niix':<11} {'tilt':<21} {'spacing':<15} "
              f"{'median':>7} {'p99':>8} {'corner':>7} {'axis':>6} {'FOV':>5}")
    _TABLE[:] = [header]
    for relative, volume, _, suffix, f in rows:
        name = f"{relative.split('/')[1]} #{volume.meta['SeriesNumber']}"
        _TABLE.append(f"{name:<22} {str(volume.array.shape):<16} {suffix or '(plain)':<11} "
                      f"{volume.meta['tilt_handling']:<21} {volume.meta['spacing_handling']:<15} {f['median_hu']:7.2f} "
                      f"{f['p99_hu']:8.2f} {f['corner_mm']:7.3f} {f['axis_deg']:6.3f} {f['fraction']:5.2f}")
    print("\nDICOM conformance vs dcm2niix (HU: |ours - dcm2niix| in the common FOV; corner: mm; axis: deg)")
    print("\n".join(_TABLE))
    return rows


def test_ct_series_agree_with_dcm2niix(conformance_rows):
    assert len(conformance_rows) == 5  # 4 in dcm_qa_ct, 1 in ct_abdomen_j2k
    for relative, volume, outputs, suffix, figures in conformance_rows:
        if volume.meta["SeriesInstanceUID"] in DCM2NIIX_MISPLACED_TILT:
            continue  # see test_dcm2niix_misplaced_tilt_series
        where = f"{relative} #{volume.meta['SeriesNumber']} vs dcm2niix{suffix}: {figures}"
        assert figures["median_hu"] <= MEDIAN_HU, where
        assert figures["p99_hu"] <= P99_HU, where
        assert figures["corner_mm"] <= CORNER_MM, where
        assert figures["axis_deg"] <= 0.01, where
        assert figures["fraction"] > 0.5, where


def test_dcm2niix_misplaced_tilt_series(conformance_rows, data_root):
    """Philips #301 (tag +16.5 deg, positions -16.5 deg): dcm2niix's _Tilt_1 lies ~80 mm off.

    Its corrected grid is displaced along the slice normal (by ~32 slices), which no tilt correction
    should do. Here we check instead that (1) our exact sheared read equals dcm2niix's uncorrected
    voxels and first-slice position, and (2) our tilt-corrected volume equals the exact sheared data
    resampled at its voxels (no dcm2niix involved).
    """
    import SimpleITK as sitk

    rows = [r for r in conformance_rows if r[1].meta["SeriesInstanceUID"] in DCM2NIIX_MISPLACED_TILT]
    assert len(rows) == 1
    relative, volume, outputs, _, vs_dcm2niix = rows[0]
    assert vs_dcm2niix["corner_mm"] > 50  # still broken in dcm2niix? then drop this special case
    exact = read_dicom_volume(data_root / relative, series=volume.meta["SeriesInstanceUID"], tilt="shear")
    plain = sitk.ReadImage(str(outputs[""]))
    plain_voxels = sitk.GetArrayFromImage(plain).transpose(2, 1, 0)[:, ::-1]  # dcm2niix stores rows bottom-up
    np.testing.assert_array_equal(exact.array, plain_voxels)
    first_row_ras = exact.affine @ np.array([0.0, 0.0, 0.0, 1.0])
    plain_lps = plain.TransformIndexToPhysicalPoint([0, plain.GetSize()[1] - 1, 0])
    np.testing.assert_allclose(first_row_ras[:3] * [-1, -1, 1], plain_lps, atol=CORNER_MM)
    figures = compare_to_exact(volume, exact)
    _TABLE.append(f"{relative.split('/')[1]} #{volume.meta['SeriesNumber']} vs our exact sheared read: "
                  f"median {figures['median_hu']:.2f} p99 {figures['p99_hu']:.2f} HU; voxels = dcm2niix plain")
    print("\n" + _TABLE[-1])
    assert figures["median_hu"] <= MEDIAN_HU and figures["p99_hu"] <= P99_HU, figures


def test_tilt_is_reported_and_handled(conformance_rows):
    handled = {(r, v.meta["SeriesNumber"], v.meta["SeriesDescription"]): (v.meta["tilt_handling"],
                                                                         v.meta["spacing_handling"])
               for r, v, _, _, _ in conformance_rows}
    assert handled[("dicom/dcm_qa_ct/In", 2, "")] == ("resampled_orthogonal", "resampled_even")
    assert handled[("dicom/dcm_qa_ct/In", 301, "STEREOTAXIS")] == ("resampled_orthogonal", "even")
    assert handled[("dicom/ct_abdomen_j2k", None, "CT Body 3.0")] == ("none", "even")


def test_uneven_ge_series_refused_without_resampling(real_file):
    from medgan.errors import DicomSeriesError

    with pytest.raises(DicomSeriesError, match="missing slice"):
        read_dicom_volume(real_file("dicom/dcm_qa_ct/In/GE"))


@pytest.mark.parametrize("number", range(1, 10))
def test_transfer_syntaxes_decode_to_reference(real_file, number):
    """Each transfer syntax (all lossless) decodes exactly to dcm2niix's reference mosaic tiles."""
    path = real_file(f"dicom/dcm_qa_ts/In/{number}.dcm")
    reference = np.asarray(nib.load(real_file(f"dicom/dcm_qa_ts/Ref/{number}.nii")).dataobj)
    header = read_header(path)
    record = slice_records(header, str(path))[0]
    mosaic = decode_frames(str(path), record)[0]
    tile_x, tile_y, n_tiles = reference.shape
    per_row = mosaic.shape[1] // tile_x
    tiles = [mosaic[(t // per_row) * tile_y:(t // per_row + 1) * tile_y, (t % per_row) * tile_x:(t % per_row + 1) * tile_x]
             for t in range(n_tiles)]
    # dcm2niix stores rows bottom-up (NIfTI y): tile (row, column) -> reference (x, flipped y)
    ours = np.stack(tiles, -1).transpose(1, 0, 2)[:, ::-1]
    np.testing.assert_array_equal(ours, reference)
    _TABLE.append(f"dcm_qa_ts {number}.dcm {uid_name(str(header.file_meta.get('TransferSyntaxUID')))}: exact")
