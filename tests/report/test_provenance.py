"""Provenance records, NIfTI descriptions and sidecars."""

from __future__ import annotations

import datetime
import hashlib
import json

import numpy as np
import pytest

from medgan.report.provenance import (DESCRIP_BYTES, build_provenance, nifti_description, sha256_input,
                                      write_sidecar)


def test_description_fits_and_says_synthetic():
    text = nifti_description("ct_lowdose_denoising", "1.2.3")
    assert text == "SYNTHETIC medgan ct_lowdose_denoising v1.2.3"
    long = nifti_description("x" * 200, "10.20.30")
    assert len(long.encode("ascii")) == DESCRIP_BYTES
    assert long.startswith("SYNTHETIC medgan ") and long.endswith("~ v10.20.30")
    assert nifti_description("é_bundle", "0.1.0").isascii()


def test_description_survives_a_nifti_round_trip(tmp_path):
    from monai.data import MetaTensor

    from medgan.io.nifti import read_nifti, write_nifti

    text = nifti_description("y" * 90, "0.1.0")
    path = write_nifti(MetaTensor(np.zeros((4, 4, 4), np.int16), affine=np.eye(4)), tmp_path / "a.nii.gz",
                       description=text)
    assert read_nifti(path).meta["medgan"]["nifti"]["descrip"] == text


def test_sha256_of_file_and_folder(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "1.dcm").write_bytes(b"abc")
    (tmp_path / "s" / "2.dcm").write_bytes(b"def")
    assert sha256_input(tmp_path / "s" / "1.dcm") == hashlib.sha256(b"abc").hexdigest()
    before = sha256_input(tmp_path / "s")
    (tmp_path / "s" / "2.dcm").write_bytes(b"deg")
    changed = sha256_input(tmp_path / "s")
    (tmp_path / "s" / "2.dcm").rename(tmp_path / "s" / "3.dcm")
    renamed = sha256_input(tmp_path / "s")
    assert len({before, changed, renamed}) == 3


def test_missing_or_empty_input_is_refused(tmp_path):
    from medgan.errors import ImageFileError

    with pytest.raises(ImageFileError, match="no such file"):
        sha256_input(tmp_path / "absent.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageFileError, match="holds no file"):
        sha256_input(tmp_path / "empty")


def test_record_and_sidecar(tmp_path):
    source = tmp_path / "ct.nii.gz"
    source.write_bytes(b"volume bytes")
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    record = build_provenance("ct_kernel_conversion", "0.2.0", "ab" * 32, [source], case_id="c1",
                              parameters={"overlap": np.float32(0.5), "roi": (96, 96, 32)}, device="cpu",
                              timing_s={"inference": 3.5}, outputs={"pred": "pred.nii.gz"},
                              extra={"uncertainty": {"score": float("inf")}}, created=when)
    assert record["synthetic"] is True
    assert record["bundle"] == {"name": "ct_kernel_conversion", "version": "0.2.0", "weights_sha256": "ab" * 32}
    assert record["inputs"] == [{"path": str(source), "sha256": hashlib.sha256(b"volume bytes").hexdigest()}]
    assert record["created"] == "2026-01-02T03:04:05+00:00"
    assert record["description"].startswith("SYNTHETIC medgan ct_kernel_conversion v0.2.0")
    assert set(record["versions"]) >= {"medgan", "monai", "torch", "numpy", "python"}
    path = write_sidecar(record, tmp_path / "case" / "pred.json")
    loaded = json.loads(path.read_text())
    assert loaded["parameters"] == {"overlap": 0.5, "roi": [96, 96, 32]}
    assert loaded["uncertainty"]["score"] == "inf"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".medgan-tmp")]


def test_extra_may_not_replace_provenance(tmp_path):
    source = tmp_path / "a.nii"
    source.write_bytes(b"x")
    with pytest.raises(ValueError, match="synthetic"):
        build_provenance("b", "1.0.0", "0" * 64, [source], extra={"synthetic": False})
