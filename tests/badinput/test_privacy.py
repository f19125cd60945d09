"""Patient names, IDs and birth dates never reach logs, messages or side files.

A CT series carries known identifiers (name, ID, birth date, other IDs, an ID inside
OtherPatientIDsSequence); every command that reads DICOM runs on it, and on broken copies that make
it fail, with debug logging on (and once with ``--debug``, so tracebacks are searched too). Stdout,
stderr, every log record and every file written except the DICOM images themselves (JSON, CSV,
PNG, NIfTI headers, decompressed) are searched for each identifier. File paths and UIDs may appear.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import traceback
from pathlib import Path
from typing import Dict, List

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from tests.badinput.corpus import write_slices
from tests.badinput.runner import run_cli

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PHI = {
    "PatientName": "Doe^Jane^Secret",
    "PatientID": "PHI-123456",
    "PatientBirthDate": "19450704",
    "OtherPatientIDs": "PHI-OTHER-777",
}
SEQUENCE_ID = "PHI-SEQ-8888"
#: What must never appear (case-sensitive): the values and the forms a formatter could give them.
FORBIDDEN = ("Doe^Jane", "Jane^Secret", "Doe Jane", "Secret", "PHI-123456", "123456", "19450704", "1945-07-04",
             "PHI-OTHER-777", "PHI-SEQ-8888")


def _phi_patient() -> Dict[str, object]:
    item = Dataset()
    item.PatientID = SEQUENCE_ID
    item.TypeOfPatientID = "TEXT"
    return {**PHI, "OtherPatientIDsSequence": DicomSequence([item]), "PatientSex": "F"}


@pytest.fixture(scope="module")
def phi_data(tmp_path_factory) -> Dict[str, Path]:
    """A PHI-bearing CT series (``good``), broken copies (``gap``, ``truncated``), a NIfTI on its grid and one
    shifted by 5 mm."""
    from medgan.datasets.phantom import make_head_phantom
    from medgan.io import load_volume
    from medgan.io.nifti import write_nifti

    root = tmp_path_factory.mktemp("privacy")
    hu = np.asarray(make_head_phantom((40, 40, 8), (4.0, 4.0, 4.0), noise_std_hu=2.0, seed=1)).astype(np.int16)
    good = root / "archive" / "series_a"
    files = write_slices(good, hu, (4.0, 4.0, 4.0), sop_class=CT_IMAGE_STORAGE, modality="CT",
                         patient=_phi_patient())
    assert str(pydicom.dcmread(files[0]).PatientName) == PHI["PatientName"]
    gap = root / "broken" / "gap"
    shutil.copytree(good, gap)
    (gap / files[3].name).unlink()
    truncated = root / "broken" / "truncated"
    shutil.copytree(good, truncated)
    cut = truncated / files[2].name
    cut.write_bytes(cut.read_bytes()[:-500])
    volume = load_volume(good)
    nifti = write_nifti(volume, root / "volume.nii.gz")
    shifted = np.asarray(volume.affine, dtype=np.float64).copy()
    shifted[:3, 3] += (4.0, -3.0, 0.0)  # a fixed image registration has to move onto
    moved = write_nifti(volume, root / "volume_shifted.nii.gz", affine=shifted)
    return {"root": root, "good": good, "gap": gap, "truncated": truncated, "nifti": nifti, "shifted": moved,
            "archive": good.parent}


def _manifest(data: Dict[str, Path], out: Path) -> str:
    """A one-row manifest (data root: the fixture root) naming the PHI series, written below ``out``."""
    out.mkdir(parents=True)
    path = out / "manifest.csv"
    source = data["good"].relative_to(data["root"]).as_posix()
    path.write_text(f"case_id,patient_id,source,split\ncase1,p1,{source},test\n", encoding="utf-8")
    return str(path)


# Each entry: (id, argv builder (data, out) -> argv). Outputs go below ``out``.
COMMANDS = [
    ("manifest-validate", lambda d, o: ["manifest", "validate", _manifest(d, o), "--data-root", str(d["root"])]),
    ("register", lambda d, o: ["register", "--fixed", str(d["shifted"]), "--moving", str(d["good"]), "-o",
                               str(o / "reg"), "--min-dice", "0.5"]),
    ("series", lambda d, o: ["series", str(d["archive"]), "--show-skipped"]),
    ("series-json", lambda d, o: ["series", str(d["good"]), "--json", "--show-skipped"]),
    ("convert", lambda d, o: ["convert", str(d["good"]), str(o / "ct.nii.gz")]),
    ("convert-all", lambda d, o: ["convert", str(d["archive"]), str(o / "all"), "--all"]),
    ("export-dicom", lambda d, o: ["export-dicom", str(d["nifti"]), str(o / "derived"), "--reference", str(d["good"])]),
    ("manifest-scan", lambda d, o: ["manifest", "scan", str(d["archive"]), "-o", str(o / "manifest.csv")]),
    ("simulate-thick-slice", lambda d, o: ["simulate", "thick-slice", str(d["good"]), str(o / "thick.nii.gz"),
                                           "--thickness-mm", "8"]),
    ("evaluate", lambda d, o: ["evaluate", "--profile", "raw", "--pred", str(d["good"]), "--target", str(d["nifti"]),
                               "--json", str(o / "metrics.json")]),
    ("convert-gap", lambda d, o: ["convert", str(d["gap"]), str(o / "gap.nii.gz")]),
    ("convert-truncated", lambda d, o: ["convert", str(d["truncated"]), str(o / "cut.nii.gz")]),
    ("series-broken", lambda d, o: ["series", str(d["root"] / "broken"), "--show-skipped"]),
    ("simulate-low-dose-broken", lambda d, o: ["simulate", "low-dose", str(d["gap"]), str(o / "low.nii.gz"),
                                               "--dose-fraction", "0.25", "--fast"]),
]


def _readable_outputs(out: Path) -> List[Path]:
    """Every file written below ``out`` except the DICOM images (which carry the patient by design)."""
    written = [p for p in sorted(out.rglob("*")) if p.is_file()]
    return [p for p in written if not _is_dicom(p)]


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(132)[128:132] == b"DICM"


def _leaks(text: str) -> List[str]:
    return [value for value in FORBIDDEN if value in text]


def _file_text(path: Path) -> str:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("latin-1")


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize("name, argv", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_no_patient_identifier_in_output_logs_or_side_files(phi_data, tmp_path, caplog, name, argv, debug):
    out = tmp_path / "out"
    before = {p: p.read_bytes() for p in phi_data["root"].rglob("*") if p.is_file()}
    caplog.set_level(logging.DEBUG)
    arguments = (["--debug"] if debug else []) + argv(phi_data, out)
    try:
        code, text = run_cli(arguments, log_level=logging.DEBUG)
    except Exception:  # --debug lets a refusal propagate: what the user sees is the traceback
        assert debug, "an exception escaped without --debug"
        code, text = 2, traceback.format_exc()
    searched = {"stdout/stderr/logs": text, "caplog": caplog.text}
    searched.update({str(p): _file_text(p) for p in (_readable_outputs(out) if out.exists() else [])})
    leaks = {where: _leaks(content) for where, content in searched.items() if _leaks(content)}
    assert not leaks, f"{name}: patient identifiers found: {leaks}\n{text}"
    if name.endswith("-broken") or name in ("convert-gap", "convert-truncated"):
        assert code != 0, text  # the broken variants really exercised an error path
    else:
        assert code == 0, text
    assert {p: p.read_bytes() for p in phi_data["root"].rglob("*") if p.is_file()} == before


def test_exported_series_keeps_the_patient_but_only_in_the_dicom(phi_data, tmp_path):
    """The derived series must carry the reference's patient (a planning system needs it): the check above
    is about logs and side files, not about removing the patient from the DICOM output."""
    code, text = run_cli(["export-dicom", str(phi_data["nifti"]), str(tmp_path / "derived"),
                          "--reference", str(phi_data["good"])])
    assert code == 0, text
    first = pydicom.dcmread(sorted((tmp_path / "derived").iterdir())[0])
    assert (str(first.PatientName), first.PatientID, first.PatientBirthDate) == (
        PHI["PatientName"], PHI["PatientID"], PHI["PatientBirthDate"])
    assert not _leaks(text)


def test_the_search_finds_an_identifier_that_reaches_the_output(tmp_path):
    """Sensitivity check: a SeriesDescription holding the patient ID (some scanners do this) is printed by
    ``medgan series``, and the search above would report it."""
    from medgan.datasets.phantom import make_head_phantom

    hu = np.asarray(make_head_phantom((16, 16, 4), (4.0, 4.0, 4.0), noise_std_hu=0.0)).astype(np.int16)
    files = write_slices(tmp_path / "s", hu, (4.0, 4.0, 4.0), sop_class=CT_IMAGE_STORAGE, modality="CT",
                         patient=_phi_patient())
    for path in files:
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = f"head {PHI['PatientID']}"
        ds.save_as(path, enforce_file_format=True)
    code, text = run_cli(["series", str(tmp_path / "s")])
    assert code == 0 and _leaks(text) == ["PHI-123456", "123456"]
