"""Bad DICOM input through the CLI: every refusal names the file or folder, the problem and the fix.

Each case builds a small generated folder, runs ``medgan series`` and ``medgan convert`` in process,
and checks: a non-zero exit, a message on stderr that names the offending path and carries a
``Fix:``, no traceback, no output file (nor a temporary one) left behind, and the input folder
byte-identical afterwards. Also here: files a DICOMDIR lists but that are missing, identical
duplicate files, and symbolic link loops.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Dict, Tuple

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medgan.cli import main
from medgan.errors import DicomSeriesError
from medgan.io.dicom import discovery, read_dicom_volume, scan_series
from tests.conftest import tree_digest
from tests.io.test_dicom_synthetic import SECONDARY_CAPTURE, _base_dataset, assert_matches_world, write_series

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def _gap(folder: Path) -> Path:
    write_series(folder, n=6, offsets_mm=[0, 2.5, 5, 10, 12.5, 15])
    return folder


def _duplicate_positions(folder: Path) -> Path:
    write_series(folder, n=4, series_uid="1.2.3.9.1")
    write_series(folder, n=1, series_uid="1.2.3.9.1", origin=(-9.0, -11.0, -14.0), intercept=-1000.0, seed=5)
    return folder


def _mixed_orientation(folder: Path) -> Path:
    write_series(folder, n=4, series_uid="1.2.3.9.2")
    write_series(folder, n=2, series_uid="1.2.3.9.2", orientation=(1, 0, 0, 0, 0, -1), origin=(0, 30, 0), seed=9)
    return folder


def _mixed_spacing(folder: Path) -> Path:
    write_series(folder, n=4, series_uid="1.2.3.9.3")
    write_series(folder, n=2, series_uid="1.2.3.9.3", pixel_spacing=(0.9, 0.9), origin=(-9.0, -11.0, 0.0), seed=4)
    return folder


def _truncated_pixels(folder: Path) -> Path:
    paths = write_series(folder, n=5)
    paths[2].write_bytes(paths[2].read_bytes()[:-300])
    return paths[2]


def _truncated_header(folder: Path) -> Path:
    paths = write_series(folder, n=5)
    paths[3].write_bytes(paths[3].read_bytes()[:200])
    return paths[3]


def _no_pixel_data(folder: Path) -> Path:
    paths = write_series(folder, n=5)
    ds = pydicom.dcmread(paths[1])
    del ds.PixelData
    ds.save_as(paths[1], enforce_file_format=True)
    return paths[1]


def _non_image_only(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for number in range(2):
        ds = _base_dataset(BASIC_TEXT_SR, generate_uid(), 900 + number, "SR", str(ExplicitVRLittleEndian))
        ds.save_as(folder / f"report{number}", enforce_file_format=True)
    return folder


def _rgb_secondary_capture(folder: Path) -> Path:
    folder.mkdir(parents=True)
    ds = _base_dataset(SECONDARY_CAPTURE, generate_uid(), 998, "OT", str(ExplicitVRLittleEndian))
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 8, 8, 7, 0
    ds.PixelData = bytes(8 * 8 * 3)
    ds.save_as(folder / "screenshot", enforce_file_format=True)
    return folder


def _single_slice(folder: Path) -> Path:
    write_series(folder, n=1)
    return folder


def _empty(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


def _symlink_loop(folder: Path) -> Path:
    folder.mkdir(parents=True)
    os.symlink(".", folder / "loop")
    return folder


def _missing_dicomdir_file(folder: Path) -> Path:
    return write_dicomdir_set(folder, second_series=False)[1][0]


# case -> (builder returning the path the message must name, words the message must hold)
CASES: Dict[str, Tuple[Callable[[Path], Path], Tuple[str, ...]]] = {
    "gap": (_gap, ("missing slice", "--resample-uneven")),
    "duplicate_positions": (_duplicate_positions, ("share a position",)),
    "mixed_orientation": (_mixed_orientation, ("orientation",)),
    "mixed_pixel_spacing": (_mixed_spacing, ("PixelSpacing",)),
    "truncated_pixel_data": (_truncated_pixels, ("cut short",)),
    "truncated_header": (_truncated_header, ("cannot be read", "truncated")),
    "no_pixel_data": (_no_pixel_data, ("no pixel data",)),
    "non_image_sop_classes_only": (_non_image_only, ("no usable image volume", "Basic Text SR")),
    "rgb_secondary_capture_only": (_rgb_secondary_capture, ("no usable image volume", "Secondary Capture")),
    "single_2d_slice": (_single_slice, ("single 2D image",)),
    "empty_folder": (_empty, ("no DICOM series found",)),
    "symlink_loop_only": (_symlink_loop, ("no DICOM series found", "symbolic link")),
    "dicomdir_missing_file": (_missing_dicomdir_file, ("are missing", "DICOMDIR")),
}


def _run(argv, capsys) -> Tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_refuses_bad_input_clearly(case, tmp_path, capsys):
    build, words = CASES[case]
    src = tmp_path / "in"
    named = build(src)
    before = tree_digest(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for argv in (["series", str(src)], ["convert", str(src), str(out_dir / "volume.nii.gz")],
                 ["convert", str(src), str(out_dir / "all"), "--all"]):
        code, err = _run(argv, capsys)
        assert code != 0, (argv, err)
        assert "Traceback" not in err and "internal error" not in err, err
        if argv[0] == "convert":  # `series` names problems, convert must also say how to fix them
            assert str(named) in err, f"{case}: {named} not named in:\n{err}"
            assert "Fix:" in err, err
            for word in words:
                assert word in err, f"{case}: {word!r} missing from:\n{err}"
    assert sorted(os.listdir(out_dir)) == [], "an output (or a temporary file) was left behind"
    assert tree_digest(src) == before, "the input was modified"


def test_unreadable_file_is_named(tmp_path, capsys, monkeypatch):
    """A file that cannot be opened may be a slice: the series in its folder is refused, the file named."""
    paths = write_series(tmp_path / "in", n=5)
    victim = paths[2]
    if os.geteuid() != 0:
        victim.chmod(0)
    else:  # root reads everything: make the header reader fail for that file as an EACCES would
        real = discovery.read_header

        def denied(path):
            if Path(path) == victim:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(discovery, "read_header", denied)
    try:
        code, err = _run(["convert", str(tmp_path / "in"), str(tmp_path / "x.nii.gz")], capsys)
        assert code == 2 and str(victim) in err and "Permission denied" in err and "Fix:" in err, err
        assert "Traceback" not in err
        assert not (tmp_path / "x.nii.gz").exists()
        code, err = _run(["series", str(tmp_path / "in")], capsys)
        assert code != 0 and str(victim) in err
    finally:
        victim.chmod(0o644)


def write_dicomdir_set(folder: Path, drop: int = 2, second_series: bool = True) -> Tuple[Path, list]:
    """A DICOMDIR file set of series #3 (and #4) in pydicom's FileSet layout; ``drop`` files of #3 deleted."""
    from pydicom.fileset import FileSet

    staging = folder.parent / f"{folder.name}-staging"
    write_series(staging / "a", n=6, series_uid="1.2.3.7.1", series_number=3)
    if second_series:
        write_series(staging / "b", n=5, series_uid="1.2.3.7.2", series_number=4, step_mm=3.0, seed=2)
    file_set = FileSet()
    for path in sorted(staging.rglob("*")):
        if path.is_file():
            ds = pydicom.dcmread(path)
            ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101500", "1", ""
            file_set.add(ds)
    file_set.write(folder)
    shutil.rmtree(staging)
    in_series = sorted(Path(i.path) for i in file_set if i.SeriesInstanceUID == "1.2.3.7.1")
    for path in in_series[1:1 + drop]:  # middle slices gone
        path.unlink()
    return folder / "DICOMDIR", in_series[1:1 + drop]


def test_dicomdir_missing_files_warned_in_series_and_refused_for_their_series(tmp_path, capsys, caplog):
    dicomdir, lost = write_dicomdir_set(tmp_path / "cd")
    caplog.set_level(logging.WARNING)
    series, _ = scan_series(tmp_path / "cd")
    by_uid = {s.series_instance_uid: s for s in series}
    assert not by_uid["1.2.3.7.1"].usable and "2 file(s) listed in" in by_uid["1.2.3.7.1"].reason
    assert by_uid["1.2.3.7.2"].usable
    assert any(str(lost[0]) in record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)
    code, err = _run(["series", str(tmp_path / "cd")], capsys)
    assert code == 1 and str(lost[0]) in err
    with pytest.raises(DicomSeriesError) as refused:
        read_dicom_volume(tmp_path / "cd", series=3)
    assert str(lost[0]) in str(refused.value) and str(dicomdir) in str(refused.value)
    assert_matches_world(read_dicom_volume(tmp_path / "cd", series=4))  # the complete series still converts


def test_dicomdir_whose_series_is_entirely_missing_is_listed(tmp_path):
    write_dicomdir_set(tmp_path / "cd", drop=6)  # every file of series #3 but the first
    first = next(s for s in scan_series(tmp_path / "cd")[0] if s.series_instance_uid == "1.2.3.7.1")
    first_file = first.records[0].path
    os.unlink(first_file)
    series, _ = scan_series(tmp_path / "cd")
    lost = next(s for s in series if s.series_instance_uid == "1.2.3.7.1")
    assert not lost.usable and "6 file(s) listed in" in lost.reason and lost.series_number == 3


@pytest.mark.realdata
def test_philips_dirfile_missing_image_refuses_that_series(real_file, tmp_path):
    """A Philips DIRFILE (file IDs relative to the folder above the study) with one image deleted."""
    source = real_file("dicom/dcm_qa_ct/In/Philips/S21610")
    shutil.copytree(source, tmp_path / "S21610")
    (tmp_path / "S21610" / "S3010" / "I100").unlink()
    series, _ = scan_series(tmp_path / "S21610")
    by_number = {(s.series_number, s.usable) for s in series}
    refused = [s for s in series if s.series_number == 301]
    assert len(refused) == 1 and not refused[0].usable, by_number
    assert str(tmp_path / "S21610" / "S3010" / "I100") in refused[0].reason
    assert all(s.usable for s in series if s.series_number == 201)


def test_identical_duplicate_files_are_dropped_with_a_warning(tmp_path, caplog):
    paths = write_series(tmp_path / "in", n=6)
    copy = tmp_path / "in" / "copy_of_one"
    shutil.copyfile(paths[2], copy)
    caplog.set_level(logging.WARNING)
    volume = read_dicom_volume(tmp_path / "in")
    assert volume.array.shape[2] == 6
    assert_matches_world(volume)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("identical copy" in m and (str(copy) in m or str(paths[2]) in m) for m in warned), warned


def test_same_uid_with_different_pixels_is_refused(tmp_path):
    paths = write_series(tmp_path / "in", n=6)
    ds = pydicom.dcmread(paths[2])
    pixels = ds.pixel_array.copy()
    pixels[0, 0] += 1
    ds.PixelData = pixels.tobytes()
    ds.save_as(tmp_path / "in" / "altered", enforce_file_format=True)
    with pytest.raises(DicomSeriesError, match="share a position"):
        read_dicom_volume(tmp_path / "in")


def test_symlink_loop_beside_a_series_is_not_followed(tmp_path):
    write_series(tmp_path / "in" / "ct", n=5)
    os.symlink("..", tmp_path / "in" / "ct" / "up")
    series, skipped = scan_series(tmp_path / "in")
    assert len(series) == 1 and series[0].n_slices == 5 and series[0].usable
    assert any("symbolic link" in s.reason for s in skipped)
    assert read_dicom_volume(tmp_path / "in").array.shape[2] == 5

