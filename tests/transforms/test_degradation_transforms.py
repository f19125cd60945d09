"""Degradation transforms: array/dict/Rand forms, recorded parameters rebuild a pair exactly, CLI and pair pipeline."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, CopyItemsd

from medgan.cli import main as cli_main
from medgan.datasets.phantom import make_head_phantom
from medgan.errors import SimulationError
from medgan.io.nifti import read_nifti, write_nifti
from medgan.transforms.degradation import (
    RandSimulateKernel,
    RandSimulateKerneld,
    RandSimulateLowDose,
    RandSimulateLowDosed,
    RandSimulateThickSlices,
    RandSimulateThickSlicesd,
    SimulateKernel,
    SimulateKerneld,
    SimulateLowDose,
    SimulateLowDosed,
    SimulateThickSlices,
    SimulateThickSlicesd,
)
from tests.conftest import tree_digest

ROOT = Path(__file__).resolve().parents[2]
MR_SMALL = "mr/abdomen_totalsegmentator/example_mr_sm.nii.gz"


@pytest.fixture(scope="module")
def ct() -> MetaTensor:
    """Small head phantom CT (80, 80, 6), 2.6 x 2.6 x 2 mm, int16 HU."""
    return make_head_phantom(shape=(80, 80, 6), spacing_mm=(2.6, 2.6, 2.0), noise_std_hu=5.0, seed=2)


@pytest.fixture()
def ct_file(ct, tmp_path) -> Path:
    return write_nifti(ct, tmp_path / "ct.nii.gz")


RAND_CASES = [
    (RandSimulateLowDose, {"dose_fraction_range": (0.1, 0.5), "fast": True}, SimulateLowDose),
    (RandSimulateKernel, {"filter_names": ("hann", "cosine"), "cutoff_range": (0.5, 1.0)}, SimulateKernel),
    (RandSimulateThickSlices, {"thickness_range_mm": (4.0, 6.0), "profiles": ("gaussian", "triangular")},
     SimulateThickSlices),
]


@pytest.mark.parametrize("rand_cls,kwargs,det_cls", RAND_CASES)
def test_rand_transform_records_its_draw_and_the_pair_rebuilds_exactly(ct, rand_cls, kwargs, det_cls):
    rand = rand_cls(**kwargs)
    rand.set_random_state(7)
    first = rand(ct)
    name = det_cls.__name__
    record = first.meta["medgan"][name]
    assert set(first.meta["medgan"][rand_cls.__name__]).issubset(record)
    rebuilt = det_cls(**{k: v for k, v in record.items() if k in det_cls.__init__.__code__.co_varnames})(ct)
    torch.testing.assert_close(rebuilt, first)
    np.testing.assert_allclose(rebuilt.affine.numpy(), first.affine.numpy())
    rand.set_random_state(7)
    torch.testing.assert_close(rand(ct), first)  # seeded reproducibility
    assert "medgan" not in ct.meta or name not in ct.meta["medgan"]  # the input's metadata is untouched


def test_rand_with_probability_zero_returns_the_input(ct):
    assert RandSimulateLowDose(prob=0.0)(ct) is ct


@pytest.mark.parametrize("dict_cls,kwargs,array_cls,array_kwargs", [
    (SimulateLowDosed, {"dose_fraction": 0.3, "seed": 4, "fast": True}, SimulateLowDose,
     {"dose_fraction": 0.3, "seed": 4, "fast": True}),
    (SimulateKerneld, {"filter_name": "hamming", "cutoff": 0.7}, SimulateKernel,
     {"filter_name": "hamming", "cutoff": 0.7}),
    (SimulateThickSlicesd, {"thickness_mm": 4.0, "profile": "gaussian"}, SimulateThickSlices,
     {"thickness_mm": 4.0, "profile": "gaussian"}),
])
def test_dict_version_routes_keys_to_the_array_maths(ct, dict_cls, kwargs, array_cls, array_kwargs):
    out = Compose([CopyItemsd("target", names="source"), dict_cls("source", **kwargs)])({"target": ct})
    torch.testing.assert_close(out["source"], array_cls(**array_kwargs)(ct))
    assert out["target"] is not out["source"] and torch.equal(out["target"], ct)


@pytest.mark.parametrize("dict_cls,kwargs", [
    (RandSimulateLowDosed, {"fast": True}), (RandSimulateKerneld, {}), (RandSimulateThickSlicesd, {})])
def test_rand_dict_draws_once_for_all_keys(ct, dict_cls, kwargs):
    transform = dict_cls(("a", "b"), **kwargs)
    transform.set_random_state(3)
    out = transform({"a": ct, "b": ct.clone()})
    assert out["a"].meta["medgan"] == out["b"].meta["medgan"]
    torch.testing.assert_close(out["a"], out["b"])


def test_channel_first_input_keeps_its_channel(ct):
    out = SimulateThickSlices(4.0)(ct[None])
    assert out.shape == (1, 80, 80, 3)


def test_plain_array_needs_a_pixel_size(ct):
    array = ct.numpy()
    with pytest.raises(SimulationError, match="no affine"):
        SimulateLowDose(0.25)(array)
    out = SimulateLowDose(0.25, fast=True, pixel_mm=2.6)(array)
    assert out.meta["medgan"]["SimulateLowDose"]["pixel_mm"] == 2.6


def test_cli_simulate_writes_volume_and_record_and_leaves_input_untouched(ct_file, tmp_path, capsys):
    digest = tree_digest(ct_file)
    out = tmp_path / "low.nii.gz"
    assert cli_main(["simulate", "low-dose", str(ct_file), str(out), "--dose-fraction", "0.25", "--seed", "9",
                     "--threads", "1"]) == 0
    record = json.loads((tmp_path / "low.json").read_text())
    assert record["parameters"]["seed"] == 9 and record["parameters"]["dose_fraction"] == 0.25
    low = read_nifti(out)
    rebuilt = SimulateLowDose(**{k: record["parameters"][k] for k in ("dose_fraction", "seed", "i0_photons",
                                                                     "n_views", "filter_name")})(read_nifti(ct_file))
    np.testing.assert_array_equal(low.numpy(), np.rint(rebuilt.numpy()).astype(np.int16))
    assert tree_digest(ct_file) == digest
    assert cli_main(["simulate", "thick-slice", str(ct_file), str(tmp_path / "thick.nii.gz"),
                     "--thickness-mm", "4"]) == 0
    assert read_nifti(tmp_path / "thick.nii.gz").shape == (80, 80, 3)
    assert cli_main(["simulate", "kernel", str(ct_file), str(tmp_path / "k.nii.gz"), "--filter", "hann"]) == 0


def test_cli_refuses_bad_dose_and_names_the_problem(ct_file, tmp_path, capsys):
    assert cli_main(["simulate", "low-dose", str(ct_file), str(tmp_path / "x.nii.gz"), "--dose-fraction", "0"]) == 2
    assert "outside (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "x.nii.gz").exists()


@pytest.mark.realdata
def test_cli_refuses_an_mr_naming_the_file(real_file, tmp_path, capsys):
    mr = real_file(MR_SMALL)
    assert cli_main(["simulate", "kernel", str(mr), str(tmp_path / "x.nii.gz"), "--filter", "hann"]) == 2
    err = capsys.readouterr().err
    assert str(mr) in err and "not a CT in Hounsfield units" in err and "Fix:" in err


def _make_pairs_module():
    spec = importlib.util.spec_from_file_location("make_pairs", ROOT / "pipelines" / "make_pairs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_pairs_writes_a_paired_manifest_that_rebuilds(ct_file, tmp_path):
    from medgan.manifest import load_manifest

    manifest = tmp_path / "real.csv"
    manifest.write_text("case_id,patient_id,source,split,source_modality\n"
                        f"c1,p1,{ct_file.name},train,CT\n", encoding="utf-8")
    make_pairs = _make_pairs_module()
    out_dir = tmp_path / "out"
    assert make_pairs.main([str(manifest), str(out_dir), "--seed", "5", "low-dose", "--dose-fractions", "0.25",
                            "0.5", "--fast"]) == 0
    paired = load_manifest(out_dir / "paired_manifest.csv")
    assert paired.kind == "paired" and len(paired.cases) == 2
    rows = list(csv.DictReader((out_dir / "paired_manifest.csv").open()))
    assert {r["split"] for r in rows} == {"train"} and rows[0]["seed"] != rows[1]["seed"]
    params = json.loads(rows[0]["parameters"])
    assert params["seed"] == int(rows[0]["seed"]) == make_pairs.case_seed(5, "c1", rows[0]["setting"])
    source = read_nifti(paired.cases[0].source.path)
    target = read_nifti(paired.cases[0].target.path)
    assert source.shape == target.shape and np.allclose(source.affine, target.affine)
    noise = source.numpy().astype(np.float32) - target.numpy()
    assert 1.0 < float(noise[target.numpy() > -200].std())


def test_make_pairs_refuses_an_mr_row(ct_file, tmp_path):
    manifest = tmp_path / "real.csv"
    manifest.write_text("case_id,patient_id,source,split,source_modality\n"
                        f"m1,p1,{ct_file.name},train,MR\n", encoding="utf-8")
    assert _make_pairs_module().main([str(manifest), str(tmp_path / "o"), "thick-slice"]) == 2
