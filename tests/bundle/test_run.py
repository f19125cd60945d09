"""``medgan run``: outputs, sidecars, summary, resumability, refusals, on a tiny copy of a shipped bundle.

The test bundle is ``bundles/ct_kernel_conversion`` copied to a temporary folder with seeded random
weights (so the output differs from the input) and a spacing contract widened to the small phantom
volumes used here (64 x 64 x 16 voxels of 3.5 x 3.5 x 12 mm cover the whole digital head).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medgan.bundle.trust import SHIPPED_BUNDLES, TRUSTED_ENV
from medgan.cli import main
from medgan.utils.atomic import sha256_file

BUNDLE_NAME = "ct_kernel_conversion"
SHAPE = (64, 64, 16)
SPACING_MM = (3.5, 3.5, 12.0)


def make_test_bundle(root: Path, seed: int = 0) -> Path:
    """A copy of the shipped kernel bundle with seeded random weights and a wide spacing contract."""
    from medgan.bundle import save_state_dict
    from medgan.networks import ResidualUNet

    bundle = root / BUNDLE_NAME
    shutil.copytree(SHIPPED_BUNDLES / BUNDLE_NAME, bundle, ignore=shutil.ignore_patterns("eval", "__pycache__"))
    torch.manual_seed(seed)
    network = ResidualUNet(1, 1, filters=(16, 32, 64), zero_init_output=False)
    digest = save_state_dict(network.state_dict(), bundle / "models" / "model.pt")
    metadata_path = bundle / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["medgan"]["weights_sha256"] = digest
    metadata["medgan"]["spacing_mm_range"] = [[0.3, 0.3, 0.8], [5.0, 5.0, 15.0]]
    metadata["medgan"].pop("field_of_view_mm_range", None)
    metadata_path.write_text(json.dumps(metadata, indent=2))
    return bundle


def make_phantom_nifti(path: Path, seed: int, shape=SHAPE, spacing_mm=SPACING_MM) -> Path:
    from medgan.datasets.phantom import make_head_phantom
    from medgan.io.nifti import write_nifti

    write_nifti(make_head_phantom(shape, spacing_mm, noise_std_hu=10.0, seed=seed), path)
    return path


def write_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_id", "patient_id", "source", "split"])
        for case_id, source in rows:
            writer.writerow([case_id, f"p_{case_id}", source, "test"])
    return path


def read_summary(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as handle:
        return {row["case_id"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def test_bundle(tmp_path_factory) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Two phantom NIfTI files, one phantom DICOM series, a manifest with a missing fourth case."""
    from medgan.datasets.phantom import write_phantom_dicom

    root = tmp_path_factory.mktemp("inputs")
    make_phantom_nifti(root / "a.nii.gz", seed=1)
    make_phantom_nifti(root / "b.nii.gz", seed=2)
    write_phantom_dicom(root / "dicom_c", SHAPE, SPACING_MM, noise_std_hu=10.0, seed=3)
    write_manifest(root / "cases.csv", [("a", "a.nii.gz"), ("b", "b.nii.gz"), ("c", "dicom_c"),
                                        ("missing", "nothing_here.nii.gz")])
    return root


def _run(bundle: Path, *args: str) -> int:
    return main(["run", str(bundle), "--trust-bundle", "--device", "cpu", *args])


@pytest.fixture(scope="module")
def batch(test_bundle, inputs, tmp_path_factory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("results")
    code = _run(test_bundle, "--manifest", str(inputs / "cases.csv"), "-o", str(out))
    return out, code


def test_batch_writes_outputs_sidecars_and_summary(batch, inputs, test_bundle):
    from medgan.io import load_volume
    from medgan.io.nifti import read_nifti
    from medgan.report.provenance import sha256_input

    out, code = batch
    assert code == 1  # one case failed
    summary = read_summary(out / "summary.csv")
    assert [summary[c]["status"] for c in ("a", "b", "c", "missing")] == ["ok", "ok", "ok", "failed"]
    assert "nothing_here.nii.gz" in summary["missing"]["message"] and "Fix:" in summary["missing"]["message"]
    assert not (out / "missing").exists()

    metadata = json.loads((test_bundle / "configs" / "metadata.json").read_text())
    for case_id, source in (("a", inputs / "a.nii.gz"), ("c", inputs / "dicom_c")):
        pred = read_nifti(out / case_id / "pred.nii.gz")
        original = load_volume(source)
        assert pred.meta["medgan"]["nifti"]["stored_dtype"] == "int16"
        assert tuple(pred.shape) == tuple(original.shape)
        np.testing.assert_allclose(pred.affine.numpy(), original.affine.numpy(), atol=1e-4)
        difference = np.abs(pred.numpy().astype(np.float32) - original.numpy().astype(np.float32))
        assert difference.max() > 1.0  # random weights change the image
        assert pred.meta["medgan"]["nifti"]["descrip"] == f"SYNTHETIC medgan ct_kernel_conversion v{metadata['version']}"
        sidecar = json.loads((out / case_id / "pred.json").read_text())
        assert sidecar["synthetic"] is True and sidecar["case_id"] == case_id
        assert sidecar["bundle"] == {"name": BUNDLE_NAME, "version": metadata["version"],
                                     "weights_sha256": metadata["medgan"]["weights_sha256"],
                                     "task": "ct_kernel_conversion"}
        assert sidecar["inputs"][0]["sha256"] == sha256_input(source)
        assert sidecar["output_sha256"]["pred.nii.gz"] == sha256_file(out / case_id / "pred.nii.gz")
        assert set(sidecar["timing_s"]) == {"load", "inference", "write"} and sidecar["device"] == "cpu"
        assert sidecar["parameters"]["roi_size_vox"] == [64, 64, 16] and sidecar["parameters"]["overlap"] == 0.5
        assert sidecar["parameters"]["skip_background_below"] == -0.5  # -500 HU in the bundle's HU / 1000 units
        windows = sidecar["sliding_window"]
        assert 0 <= windows["background_windows_skipped"] < windows["windows"]
    # DICOM input -> a derived series in the input's study, holding the NIfTI's voxels
    assert not (out / "a" / "dicom").exists()
    derived = load_volume(out / "c" / "dicom")
    np.testing.assert_array_equal(derived.numpy(), read_nifti(out / "c" / "pred.nii.gz").numpy())
    assert derived.meta["StudyInstanceUID"] == load_volume(inputs / "dicom_c").meta["StudyInstanceUID"]
    assert not list(out.rglob(".medgan-tmp-*"))


def test_rerun_skips_finished_cases_and_redoes_damaged_ones(batch, inputs, test_bundle, tmp_path):
    out, _ = batch
    work = tmp_path / "results"
    shutil.copytree(out, work)
    before = sha256_file(work / "b" / "pred.nii.gz")
    damaged = work / "a" / "pred.nii.gz"
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"0123456789")
    (work / "c" / "pred.json").unlink()  # as if killed before the sidecar
    (work / "b" / ".medgan-tmp-leftover.nii.gz").write_bytes(b"partial")

    code = _run(test_bundle, "--manifest", str(inputs / "cases.csv"), "-o", str(work))
    assert code == 1
    summary = read_summary(work / "summary.csv")
    assert {c: summary[c]["status"] for c in summary} == {"a": "ok", "b": "skipped", "c": "ok", "missing": "failed"}
    assert sha256_file(work / "b" / "pred.nii.gz") == before
    assert sha256_file(work / "a" / "pred.nii.gz") == sha256_file(out / "a" / "pred.nii.gz")
    assert (work / "c" / "pred.json").is_file()


def test_single_input_with_overwrite_and_reference(test_bundle, inputs, tmp_path):
    out = tmp_path / "single"
    assert _run(test_bundle, "--input", str(inputs / "b.nii.gz"), "-o", str(out), "--format", "nifti") == 0
    assert read_summary(out / "summary.csv")["b"]["status"] == "ok"
    assert _run(test_bundle, "--input", str(inputs / "b.nii.gz"), "-o", str(out)) == 0
    assert read_summary(out / "summary.csv")["b"]["status"] == "skipped"
    # --reference with a NIfTI input adds the derived DICOM series; --overwrite redoes the case
    assert _run(test_bundle, "--input", str(inputs / "b.nii.gz"), "-o", str(out), "--overwrite",
                "--reference", str(inputs / "dicom_c")) == 0
    assert read_summary(out / "summary.csv")["b"]["status"] == "ok"
    assert json.loads((out / "b" / "pred.json").read_text())["outputs"] == {"pred": "pred.nii.gz", "dicom": "dicom"}


def test_dicom_format_without_reference_fails_clearly(test_bundle, inputs, tmp_path):
    out = tmp_path / "needs_reference"
    assert _run(test_bundle, "--input", str(inputs / "a.nii.gz"), "-o", str(out), "--format", "nifti,dicom") == 1
    message = read_summary(out / "summary.csv")["a"]["message"]
    assert "--reference" in message and "a.nii.gz" in message
    assert not (out / "a").exists()


def test_input_outside_the_contract_is_refused_unless_forced(test_bundle, tmp_path):
    thick = make_phantom_nifti(tmp_path / "thick.nii.gz", seed=4, spacing_mm=(3.5, 3.5, 20.0))
    out = tmp_path / "contract"
    assert _run(test_bundle, "--input", str(thick), "-o", str(out)) == 1
    message = read_summary(out / "summary.csv")["thick"]["message"]
    assert "spacing" in message and "--force" in message
    assert _run(test_bundle, "--input", str(thick), "-o", str(out), "--force") == 0
    sidecar = json.loads((out / "thick" / "pred.json").read_text())
    assert sidecar["input_check"]["forced"] is True
    assert [flag["check"] for flag in sidecar["input_check"]["flags"]] == ["spacing"]
    assert sidecar["notes"] and "spacing" in sidecar["notes"][0]


def test_untrusted_bundle_is_refused_before_its_config_runs(test_bundle, inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(TRUSTED_ENV, raising=False)
    out = tmp_path / "untrusted"
    code = main(["run", str(test_bundle), "--input", str(inputs / "a.nii.gz"), "-o", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "trusted" in err and "--trust-bundle" in err and str(test_bundle) in err
    assert not out.exists()


def test_unknown_bundle_name_lists_the_shipped_ones(inputs, tmp_path, capsys):
    code = main(["run", "no_such_bundle", "--input", str(inputs / "a.nii.gz"), "-o", str(tmp_path / "x")])
    assert code == 2
    assert BUNDLE_NAME in capsys.readouterr().err


def test_changed_weights_are_refused(test_bundle, inputs, tmp_path, capsys):
    bundle = tmp_path / "tampered"
    shutil.copytree(test_bundle, bundle)
    weights = bundle / "models" / "model.pt"
    weights.write_bytes(weights.read_bytes() + b"\0")
    code = _run(bundle, "--input", str(inputs / "a.nii.gz"), "-o", str(tmp_path / "out"))
    assert code == 2
    assert "sha256" in capsys.readouterr().err


def test_uncertainty_writes_sd_volume_and_sidecar_score(test_bundle, inputs, tmp_path):
    from medgan.io.nifti import read_nifti

    plain, flipped = tmp_path / "plain", tmp_path / "flipped"
    assert _run(test_bundle, "--input", str(inputs / "a.nii.gz"), "-o", str(plain)) == 0
    assert _run(test_bundle, "--input", str(inputs / "a.nii.gz"), "-o", str(flipped), "--uncertainty") == 0
    sidecar = json.loads((flipped / "a" / "pred.json").read_text())
    assert sidecar["outputs"]["uncertainty"] == "uncertainty.nii.gz"
    sd = read_nifti(flipped / "a" / "uncertainty.nii.gz")
    pred = read_nifti(flipped / "a" / "pred.nii.gz")
    assert tuple(sd.shape) == tuple(pred.shape)
    assert np.allclose(sd.affine.numpy(), pred.affine.numpy())
    sd_hu = sd.numpy()
    # random weights are not flip-equivariant: the flips disagree, and the score is their mean SD in the body
    assert np.isfinite(sd_hu).all() and sd_hu.min() >= 0 and sd_hu.max() > 0
    score = sidecar["uncertainty"]["score"]
    assert 0 < score < float(sd_hu.max())
    # the flip average is a different (not identical) prediction from the single pass
    single = read_nifti(plain / "a" / "pred.nii.gz").numpy()
    assert not np.array_equal(single, pred.numpy())


def test_override_changes_settings_is_recorded_and_redoes_cases(test_bundle, inputs, tmp_path, capsys):
    out = tmp_path / "override"
    assert _run(test_bundle, "--input", str(inputs / "b.nii.gz"), "-o", str(out), "--override", "sw_overlap=0.25") == 0
    sidecar = json.loads((out / "b" / "pred.json").read_text())
    assert sidecar["parameters"]["overlap"] == 0.25 and sidecar["parameters"]["overrides"] == {"sw_overlap": 0.25}
    # every literal setting in effect is recorded, the overridden one with its new value
    settings = sidecar["parameters"]["settings"]
    assert settings["sw_overlap"] == 0.25 and settings["roi_size_vox"] == sidecar["parameters"]["roi_size_vox"]
    assert not {"network", "inferer", "imports", "bundle_root"} & set(settings)
    assert _run(test_bundle, "--input", str(inputs / "b.nii.gz"), "-o", str(out), "--override", "sw_overlap=0.25") == 0
    assert read_summary(out / "summary.csv")["b"]["status"] == "skipped"  # same overrides: finished
    assert _run(test_bundle, "--input", str(inputs / "b.nii.gz"), "-o", str(out)) == 0  # the shipped settings
    assert read_summary(out / "summary.csv")["b"]["status"] == "ok"
    sidecar = json.loads((out / "b" / "pred.json").read_text())
    assert sidecar["parameters"]["overlap"] == 0.5 and sidecar["parameters"]["overrides"] == {}
    capsys.readouterr()
    assert _run(test_bundle, "--input", str(inputs / "b.nii.gz"), "-o", str(out), "--override", "overlap=0.1") == 2
    err = capsys.readouterr().err
    tunable = err.split("override one of:")[1].strip().split(", ")
    assert "no setting overlap" in err and "sw_overlap" in tunable and "roi_size_vox" in tunable
    assert not {"network", "inferer", "imports", "run", "bundle_root"} & set(tunable)
    assert _run(test_bundle, "--input", str(inputs / "b.nii.gz"), "-o", str(out), "--override", "sw_overlap") == 2
    assert "KEY=VALUE" in capsys.readouterr().err
