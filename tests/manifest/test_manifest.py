"""Manifest schema, loader, validation and scan: every problem reported at once, with its line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medgan.cli import main
from medgan.errors import ManifestError
from medgan.manifest import (PAIRED, ImageRef, read_image_header, SINGLE, UNPAIRED, assign_split, detect_modality, hash_patient_id, load_manifest,
                             scan_folder, validate_manifest, write_manifest)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "data_manifests").glob("shared_*.csv"))


def _ct(shape=(20, 18, 8), offset_mm=(0.0, 0.0, 0.0), spacing_mm=2.0, seed=0) -> nib.Nifti1Image:
    """A small CT-like volume in HU: air around a soft-tissue body with a bone core."""
    rng = np.random.default_rng(seed)
    data = np.full(shape, -1000, dtype=np.int16)
    data[3:-3, 3:-3, :] = 40 + rng.integers(-20, 20, size=(shape[0] - 6, shape[1] - 6, shape[2]))
    data[8:12, 8:10, :] = 900
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = offset_mm
    return nib.Nifti1Image(data, affine)


def _mr(shape=(20, 18, 8), seed=1) -> nib.Nifti1Image:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 30, size=shape).astype(np.int16)
    data[3:-3, 3:-3, :] += 400
    return nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "ct").mkdir(parents=True)
    (data / "mr").mkdir()
    nib.save(_ct(), data / "ct" / "a_src.nii.gz")
    nib.save(_ct(seed=3), data / "ct" / "a_tgt.nii.gz")
    nib.save(_ct(seed=4), data / "ct" / "b_src.nii.gz")
    nib.save(_ct(offset_mm=(500.0, 0.0, 0.0)), data / "ct" / "far.nii.gz")
    nib.save(_mr(), data / "mr" / "m1.nii.gz")
    mask = nib.Nifti1Image(np.ones((20, 18, 8), np.uint8), np.diag([2.0, 2.0, 2.0, 1.0]))
    nib.save(mask, data / "ct" / "a_mask.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((10, 9, 4), np.uint8), np.diag([4.0, 4.0, 4.0, 1.0])), data / "ct" / "bad_mask.nii.gz")
    return data


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


GOOD = (
    "case_id,patient_id,source,target,mask,split,source_modality,target_modality,site\n"
    "c1,p1,ct/a_src.nii.gz,ct/a_tgt.nii.gz,ct/a_mask.nii.gz,train,CT,CT,here\n"
    "c2,p2,ct/b_src.nii.gz,ct/a_tgt.nii.gz,,val,CT,CT,\n"
)


def test_load_paired_manifest_gives_typed_records(root, tmp_path):
    manifest = load_manifest(_write(tmp_path / "m.csv", GOOD), data_root=root)
    assert manifest.kind == PAIRED
    assert [c.case_id for c in manifest.cases] == ["c1", "c2"]
    first = manifest.cases[0]
    assert first.source.path == root / "ct" / "a_src.nii.gz" and first.target.path == root / "ct" / "a_tgt.nii.gz"
    assert first.mask is not None and manifest.cases[1].mask is None
    assert first.metadata == {"site": "here"} and manifest.cases[1].metadata == {}
    assert first.line == 2 and manifest.cases[1].line == 3
    assert [c.case_id for c in manifest.split("val")] == ["c2"]
    dicts = manifest.to_dicts("train")
    assert dicts[0]["source"] == str(root / "ct" / "a_src.nii.gz") and dicts[0]["site"] == "here"
    frame = manifest.to_dataframe()
    assert list(frame["case_id"]) == ["c1", "c2"]
    report = validate_manifest(tmp_path / "m.csv", data_root=root)
    assert report.ok, report.format()
    assert {report.headers[text].modality for text in ("ct/a_src.nii.gz", "ct/b_src.nii.gz")} == {"CT"}


def test_default_data_root_is_manifest_folder(root):
    manifest = load_manifest(_write(root / "m.csv", GOOD))
    assert manifest.data_root == root.resolve()


def test_kinds_follow_columns(root, tmp_path):
    single = _write(tmp_path / "s.csv", "case_id,patient_id,source,split\nc1,p1,ct/a_src.nii.gz,test\n")
    assert load_manifest(single, root).kind == SINGLE
    unpaired = _write(tmp_path / "u.csv", "case_id,patient_id,source,domain,split\n"
                      "c1,p1,ct/a_src.nii.gz,ct,train\nm1,p2,mr/m1.nii.gz,mr,train\n")
    manifest = load_manifest(unpaired, root)
    assert manifest.kind == UNPAIRED
    assert [c.source_modality for c in manifest.cases] == ["CT", "MR"]  # implied by the domain
    assert validate_manifest(unpaired, root).ok


def test_every_problem_reported_at_once_with_its_line(root, tmp_path):
    (root / "outside.nii.gz").write_bytes(b"")
    (root / "ct" / "link.nii.gz").symlink_to(tmp_path / "elsewhere.nii.gz")
    (tmp_path / "elsewhere.nii.gz").write_bytes((root / "ct" / "a_src.nii.gz").read_bytes())
    text = (
        "case_id,patient_id,source,target,split,source_modality\n"
        "c1,p1,ct/a_src.nii.gz,ct/a_tgt.nii.gz,train,CT\n"             # 2 fine
        "c1,p2,ct/b_src.nii.gz,ct/a_tgt.nii.gz,train,CT\n"             # 3 duplicate case id
        "c3,p1,ct/b_src.nii.gz,ct/a_tgt.nii.gz,test,CT\n"              # 4 patient p1 in train and test
        "c4,p4,../../etc/passwd,ct/a_tgt.nii.gz,train,CT\n"            # 5 traversal
        "c5,p5,/etc/hostname,ct/a_tgt.nii.gz,train,CT\n"               # 6 absolute outside
        "c6,p6,ct/missing.nii.gz,ct/a_tgt.nii.gz,train,CT\n"           # 7 missing file
        "c7,p7,mr/m1.nii.gz,ct/a_tgt.nii.gz,train,CT\n"                # 8 MR in a CT column
        "c8,p8,ct/far.nii.gz,ct/a_tgt.nii.gz,train,CT\n"               # 9 no overlap
        "c9,p9,ct/a_src.nii.gz,ct/a_tgt.nii.gz,tarin,CT\n"             # 10 unknown split
        "c10,p10,ct/link.nii.gz,ct/a_tgt.nii.gz,train,CT\n"            # 11 symlink out of the root
        "c11,p11,ct/a_src.nii.gz,ct/a_tgt.nii.gz,train\n"              # 12 too few fields
        "c12,,ct/a_src.nii.gz,ct/a_tgt.nii.gz,train,CT\n"              # 13 empty patient
    )
    report = validate_manifest(_write(tmp_path / "bad.csv", text), data_root=root)
    assert not report.ok
    by_line = {}
    for issue in report.errors:
        by_line.setdefault(issue.line, []).append(issue.problem)
    expected = {3: "duplicate case id", 4: "several splits", 5: "leaves the data root", 6: "absolute path outside",
                7: "not found", 8: "looks like MR", 9: "do not overlap", 10: "unknown split",
                11: "outside the data root", 12: "fields but the header", 13: "empty patient_id"}
    for line, words in expected.items():
        assert any(words in problem for problem in by_line.get(line, [])), (line, by_line.get(line))
    assert 2 not in by_line
    text_report = report.format()
    assert f"{tmp_path / 'bad.csv'}:8: error [source]" in text_report
    assert "FAILED" in text_report
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / "bad.csv", root)
    assert "bad.csv:5" in str(caught.value) and "bad.csv:12" in str(caught.value)


def test_missing_columns_and_empty_file(root, tmp_path):
    report = validate_manifest(_write(tmp_path / "m.csv", "case_id,source\nc1,ct/a_src.nii.gz\n"), root)
    problems = " ".join(i.problem for i in report.errors)
    assert "'patient_id'" in problems and "'split'" in problems
    assert all(i.line == 1 for i in report.errors)
    assert not validate_manifest(_write(tmp_path / "e.csv", ""), root).ok
    both = validate_manifest(_write(tmp_path / "b.csv", "case_id,patient_id,source,target,domain,split\n"), root)
    assert any("both 'target' and 'domain'" in i.problem for i in both.errors)


def test_non_utf8_is_named_by_line(root, tmp_path):
    text = "case_id,patient_id,source,split\nc1,p1,ct/a_src.nii.gz,train\nnaïve,p2,ct/b_src.nii.gz,train\n"
    report = validate_manifest(_write(tmp_path / "m.csv", text, encoding="latin-1"), root)
    encoding = [i for i in report.errors if "not UTF-8" in i.problem]
    assert len(encoding) == 1 and encoding[0].line == 3 and "UTF-8" in encoding[0].fix
    assert [c.case_id for c in report.manifest.cases] == ["c1"]
    bom = _write(tmp_path / "bom.csv", "\ufeff" + text, encoding="utf-8")
    assert validate_manifest(bom, root).ok


def test_mask_grid_and_nan_and_4d(root, tmp_path):
    nib.save(nib.Nifti1Image(np.full((20, 18, 8), np.nan, np.float32), np.diag([2.0, 2.0, 2.0, 1.0])),
             root / "ct" / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.int16), np.eye(4)), root / "ct" / "four_d.nii.gz")
    (root / "ct" / "broken.nii.gz").write_bytes((root / "ct" / "a_src.nii.gz").read_bytes()[:200])
    text = ("case_id,patient_id,source,mask,split\n"
            "c1,p1,ct/a_src.nii.gz,ct/bad_mask.nii.gz,train\n"
            "c2,p2,ct/nan.nii.gz,,train\n"
            "c3,p3,ct/four_d.nii.gz,,train\n"
            "c4,p4,ct/broken.nii.gz,,train\n")
    report = validate_manifest(_write(tmp_path / "m.csv", text), root)
    problems = {i.line: i.problem for i in report.errors}
    assert "mask grid" in problems[2]
    assert "NaN or Inf" in problems[3]
    assert "4D image" in problems[4]
    assert 5 in problems


def test_detect_modality_thresholds():
    assert detect_modality(np.array([-1000.0, -990, 40, 60, 1200]))[0] == "CT"
    assert detect_modality(np.array([0.0, 3, 400, 900]))[0] == "MR"
    assert detect_modality(np.array([-1.0, -0.2, 0.5, 1.0]))[0] == "MR"  # normalised: >= -100, no air
    assert detect_modality(np.array([-300.5, 40, 60]))[0] is None
    assert detect_modality(np.tile(np.array([0.0, 1.0, 2.0]), 100))[0] == "SEG"


def test_split_assignment_is_deterministic_and_roughly_proportional():
    splits = [assign_split(f"patient-{i}") for i in range(2000)]
    assert splits == [assign_split(f"patient-{i}") for i in range(2000)]
    fraction = splits.count("train") / len(splits)
    assert 0.76 < fraction < 0.84 and 0.08 < splits.count("val") / len(splits) < 0.12
    assert hash_patient_id("12345") == hash_patient_id("12345") != hash_patient_id("12345", salt="s")
    assert "12345" not in hash_patient_id("12345")


def test_scan_nifti_folder_then_validate(root, tmp_path):
    out = tmp_path / "scan.csv"
    assert main(["manifest", "scan", str(root), "-o", str(out), "--unpaired"]) == 0
    manifest = load_manifest(out, root)
    sources = {c.source.text: c for c in manifest.cases}
    assert sources["mr/m1.nii.gz"].domain == "mr" and sources["ct/a_src.nii.gz"].source_modality == "CT"
    assert {c.patient_id for c in manifest.cases} == {"ct", "mr"}
    assert len({c.split for c in manifest.cases if c.patient_id == "ct"}) == 1
    assert main(["manifest", "scan", str(root), "-o", str(out)]) == 2  # exists: refused
    assert not any("mask" in c.source.text for c in manifest.cases)  # label maps are left out
    assert len(manifest.cases) == 5
    assert main(["manifest", "validate", str(out), "--data-root", str(root)]) == 0


def test_write_manifest_is_atomic_and_utf8(tmp_path):
    rows = [{"case_id": "é1", "patient_id": "p", "source": "a.nii.gz", "split": "train"}]
    path = write_manifest(rows, tmp_path / "m.csv")
    assert path.read_text(encoding="utf-8").splitlines()[1].startswith("é1,")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".medgan-tmp")]


def test_cli_validate_exit_codes(root, tmp_path, capsys):
    good = _write(tmp_path / "m.csv", GOOD)
    assert main(["manifest", "validate", str(good), "--data-root", str(root)]) == 0
    assert "OK: 0 error(s)" in capsys.readouterr().out
    bad = _write(tmp_path / "b.csv", GOOD.replace("ct/b_src", "../../b_src"))
    assert main(["manifest", "validate", str(bad), "--data-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "b.csv:3: error [source]" in err and "Traceback" not in err
    assert main(["manifest", "validate", str(tmp_path / "none.csv")]) == 2
    assert "manifest file not found" in capsys.readouterr().err


def test_manifest_package_does_not_import_torch():
    code = ("import sys, medgan.manifest, medgan.cli.manifest_commands; "
            "sys.exit(1 if any(m == 'torch' or m.startswith('monai') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ}).returncode == 0


@pytest.mark.realdata
@pytest.mark.parametrize("manifest", EXAMPLES, ids=lambda p: p.name)
def test_example_manifests_validate_on_real_data(manifest, data_root):
    report = validate_manifest(manifest, data_root=data_root)
    assert report.ok and not report.warnings, report.format()


@pytest.mark.realdata
@pytest.mark.parametrize("relative,modality", [("ct/abdomen_totalsegmentator/example_ct_sm.nii.gz", "CT"),
                                               ("mr/abdomen_totalsegmentator/example_mr_sm.nii.gz", "MR"),
                                               ("templates_mni/scct_stripped.nii", "MR")])  # not HU: refused as CT
def test_real_modalities_detected(relative, modality, real_file):
    path = real_file(relative)
    assert read_image_header(ImageRef(relative, path)).modality == modality


@pytest.mark.realdata
def test_scan_real_dicom_folder_hashes_patient_ids(real_file, tmp_path):
    folder = real_file("dicom/dcm_qa_ct")
    rows = scan_folder(folder)
    dicom_rows = [r for r in rows if r["format"] == "dicom"]
    assert len(dicom_rows) >= 3 and all("::" in r["source"] for r in dicom_rows)
    assert all(r["patient_id"].startswith("p-") for r in dicom_rows)
    assert all(r["source_modality"] == "CT" for r in dicom_rows)
    out = write_manifest(rows, tmp_path / "scan.csv")
    report = validate_manifest(out, data_root=folder)
    dicom_errors = [i for i in report.errors if "::" in i.problem]
    # the GE series (uneven spacing 1.08-6.99 mm) would be refused by training and medgan run: an error
    # here, naming the fix; the evenly spaced Philips series validate clean
    assert len(dicom_errors) == 1, report.format()
    assert "spacing" in dicom_errors[0].problem or "missing slice" in dicom_errors[0].problem
    assert "--resample-uneven" in (dicom_errors[0].fix or "")
