"""Smoke test of bundles/mr_synthetic_ct in the model zoo's way: metadata, network in/out, TorchScript,
shipped weights with their sha256, then train (CycleGAN) -> evaluate (paired, SynthRAD2023) ->
inference with overrides on tiny volumes: a digital head CT and an MR-like contrast made from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medgan.bundle.trust import SHIPPED_BUNDLES

pytestmark = pytest.mark.bundle

BUNDLE = SHIPPED_BUNDLES / "mr_synthetic_ct"
CONFIGS = BUNDLE / "configs"
META = str(CONFIGS / "metadata.json")
SPACING_MM = (2.0, 2.0, 2.0)
SHAPE = (56, 60, 32)  # 112 x 120 x 64 mm: inside the field of view the metadata accepts
TINY = {"roi_size_vox": [16, 16, 16], "device_name": "cpu"}


def _config(*names: str) -> list[str]:
    return [str(CONFIGS / name) for name in names]


def _mr_like(hu: np.ndarray, seed: int = 0) -> np.ndarray:
    """A T1-like contrast of a CT: air and bone dark, fat bright, soft tissue mid-grey, plus noise."""
    mr = np.interp(hu, [-1000, -200, -100, 0, 60, 300, 1500], [0, 40, 700, 450, 380, 60, 20])
    return (mr + np.random.default_rng(seed).normal(0, 8, hu.shape)).clip(0, None).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_head(tmp_path_factory) -> dict[str, Path]:
    """Tiny MR (RAS, 2 mm), the CT on its grid, and an MR copy in LPS with anisotropic voxels."""
    from monai.data import MetaTensor

    from medgan.datasets.phantom import make_head_phantom, phantom_affine
    from medgan.io.nifti import write_nifti

    root = tmp_path_factory.mktemp("sct_head")
    affine = phantom_affine(SHAPE, SPACING_MM)
    ct = make_head_phantom(SHAPE, SPACING_MM, noise_std_hu=5.0, seed=0, affine=affine)
    mr = _mr_like(ct.numpy())
    write_nifti(ct, root / "ct.nii.gz")
    write_nifti(MetaTensor(mr, affine=ct.affine), root / "mr.nii.gz")
    # the same MR stored left-right and anterior-posterior flipped (LPS) with 1.5 mm slices
    ras = np.asarray(ct.affine, dtype=np.float64)
    lps = ras @ np.diag([-1.0, -1.0, 0.75, 1.0])
    lps[:3, 3] = ras[:3, :3] @ np.array([SHAPE[0] - 1, SHAPE[1] - 1, 0]) + ras[:3, 3]
    write_nifti(MetaTensor(mr[::-1, ::-1].copy(), affine=lps), root / "mr_lps.nii.gz")
    for name in ("mr", "mr_lps"):  # the sidecar medgan convert / dcm2niix write: it states the modality
        (root / f"{name}.json").write_text('{"Modality": "MR"}')
    return {"ct": root / "ct.nii.gz", "mr": root / "mr.nii.gz", "mr_lps": root / "mr_lps.nii.gz"}


def test_metadata_verifies_offline():
    from medgan.bundle import verify_bundle_metadata

    assert verify_bundle_metadata(BUNDLE) == []
    medgan_block = json.loads(Path(META).read_text())["medgan"]
    assert (medgan_block["source_modality"], medgan_block["target_modality"]) == ("MR", "CT")


def test_network_in_out_shapes():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=META, config_file=_config("inference.yaml"), device="cpu")


def test_shipped_weights_load_with_their_sha256_and_script_identically():
    from monai.bundle import ConfigParser

    from medgan.bundle.loading import load_network
    from medgan.bundle.verify import load_metadata

    parser = ConfigParser()
    parser.read_config(_config("inference.yaml"))
    parser.update({"bundle_root": str(BUNDLE)})
    sha = load_metadata(BUNDLE)["medgan"]["weights_sha256"]
    network = load_network(parser.get_parsed_content("network_def"), BUNDLE / "models" / "model.pt", sha)
    assert (BUNDLE / "models" / "model.pt").stat().st_size < 5 * 2**20
    x = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        eager = network(x)
        scripted = torch.jit.script(network)(x)
    assert eager.abs().max() > 0.01  # trained weights, not a constant
    torch.testing.assert_close(scripted, eager, rtol=1e-5, atol=1e-5)


def test_train_evaluate_infer_with_overrides(tiny_head, tmp_path):
    from monai.bundle import run

    from medgan.io.nifti import read_nifti
    from medgan.utils.atomic import sha256_file

    train_dir = tmp_path / "train"
    run(config_file=_config("train.yaml"), meta_file=META, bundle_root=str(BUNDLE), output_dir=str(train_dir),
        source_files=[str(tiny_head["mr"])], target_files=[str(tiny_head["ct"])], iterations=2,
        patch_size_vox=[16, 16, 16], checkpoint_every=2, log_every=1, device_name="cpu")
    generator = train_dir / "generator.pt"
    rows = (train_dir / "losses.csv").read_text().splitlines()
    assert generator.is_file() and rows[0].startswith("iteration,") and len(rows) >= 2
    weights = {"weights_path": str(generator), "weights_sha256": sha256_file(generator)}

    eval_dir = tmp_path / "eval"
    run(config_file=_config("inference.yaml", "evaluate.yaml"), meta_file=META, bundle_root=str(BUNDLE),
        input_files=[str(tiny_head["mr"])], target_files=[str(tiny_head["ct"])], output_dir=str(eval_dir),
        **weights, **TINY)
    [scores] = json.loads((eval_dir / "metrics.json").read_text()).values()
    assert set(scores) == {"mae_hu", "psnr_db", "ssim"} and np.isfinite(scores["mae_hu"])

    infer_dir = tmp_path / "infer"
    run(config_file=_config("inference.yaml"), meta_file=META, bundle_root=str(BUNDLE),
        input_files=[str(tiny_head["mr_lps"])], output_dir=str(infer_dir), **weights, **TINY)
    [written] = list(infer_dir.glob("*.nii.gz"))
    sct, mr = read_nifti(written), read_nifti(tiny_head["mr_lps"])
    assert sct.meta["medgan"]["nifti"]["stored_dtype"] == "int16"
    assert tuple(sct.shape) == tuple(mr.shape)  # the MR's own grid, not the 2 mm RAS working grid
    np.testing.assert_allclose(sct.affine.numpy(), mr.affine.numpy(), atol=1e-4)
    values = sct.numpy()
    assert -1024 <= values.min() and values.max() <= 3071 and values.std() > 1.0
    assert values[0, 0, 0] == -1024  # a corner outside the head: air outside the MR body mask


def test_medgan_run_writes_the_sct_on_the_mr_grid(tiny_head, tmp_path):
    from medgan.cli import main
    from medgan.io.nifti import read_nifti

    assert main(["run", "mr_synthetic_ct", "--input", str(tiny_head["mr"]), "--output-dir", str(tmp_path),
                 "--device", "cpu"]) == 0
    [written] = list(tmp_path.glob("*/pred.nii.gz"))
    sct, mr = read_nifti(written), read_nifti(tiny_head["mr"])
    assert tuple(sct.shape) == tuple(mr.shape)
    np.testing.assert_allclose(sct.affine.numpy(), mr.affine.numpy(), atol=1e-4)
    sidecar = json.loads((written.parent / "pred.json").read_text())
    assert load_sha() in json.dumps(sidecar)


def test_an_mr_nifti_without_sidecar_is_refused_unless_forced(tiny_head, tmp_path, capsys):
    """MR-like intensities alone do not confirm MR (a CT in Cormack units looks the same)."""
    import shutil

    from medgan.cli import main

    bare = tmp_path / "bare_mr.nii.gz"
    shutil.copyfile(tiny_head["mr"], bare)
    assert main(["run", "mr_synthetic_ct", "--input", str(bare), "--output-dir", str(tmp_path / "out"),
                 "--device", "cpu"]) != 0
    summary = (tmp_path / "out" / "summary.csv").read_text()
    assert "MR not confirmed" in summary and "sidecar" in summary
    assert not list((tmp_path / "out").glob("*/pred.nii.gz"))
    assert main(["run", "mr_synthetic_ct", "--input", str(bare), "--output-dir", str(tmp_path / "forced"),
                 "--device", "cpu", "--force"]) == 0
    [sidecar] = list((tmp_path / "forced").glob("*/pred.json"))
    assert "MR not confirmed" in sidecar.read_text()


def load_sha() -> str:
    return json.loads(Path(META).read_text())["medgan"]["weights_sha256"]


@pytest.mark.slow
@pytest.mark.realdata
def test_shipped_weights_on_the_real_head_mr(real_file, tmp_path):
    """The shipped generator on the real head MR: sCT on the MR grid, air outside the body, not a
    constant, outline near the MR's. Bounds guard the measured behaviour of docs/README.md (which
    does NOT meet the plausibility and 2 mm outline goals: air 54 %, Dice 0.83); a retrained model
    should tighten them."""
    from monai.bundle import run

    from medgan.io.nifti import read_nifti
    from medgan.transforms.mask import CTBodyMask, MRBodyMask

    mr_path = real_file("mr/head_vs_seg_001/VS-SEG-001_t1_mpr_tra_gk_v4_2.nii.gz")
    run(config_file=_config("inference.yaml"), meta_file=META, bundle_root=str(BUNDLE),
        input_files=[str(mr_path)], output_dir=str(tmp_path), device_name="cpu")
    [written] = list(tmp_path.glob("*.nii.gz"))
    sct, mr = read_nifti(written), read_nifti(mr_path)
    assert tuple(sct.shape) == tuple(mr.shape)
    np.testing.assert_allclose(sct.affine.numpy(), mr.affine.numpy(), atol=1e-3)
    body = np.asarray(MRBodyMask()(mr)) > 0
    values = sct.numpy().astype(np.float32)
    assert np.median(values[~body]) == -1024  # air outside the MR body mask
    p5, p95 = np.percentile(values[body], [5, 95])
    assert p95 - p5 > 500  # no collapse to a constant
    assert (values[body] > 200).mean() > 0.02  # some bone-like voxels
    ct_body = np.asarray(CTBodyMask()(sct)) > 0
    dice = 2 * (ct_body & body).sum() / (ct_body.sum() + body.sum())
    assert dice > 0.75
