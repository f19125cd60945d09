"""Smoke test of bundles/ct_kernel_conversion in the model zoo's way: metadata, network in/out,
TorchScript, shipped weights with their sha256, then train -> evaluate -> inference with overrides on
tiny volumes (a smooth phantom and an unsharp-masked "sharp" copy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medgan.bundle.trust import SHIPPED_BUNDLES

pytestmark = pytest.mark.bundle

BUNDLE = SHIPPED_BUNDLES / "ct_kernel_conversion"
CONFIGS = BUNDLE / "configs"
META = str(CONFIGS / "metadata.json")
SPACING_MM = (0.45, 0.45, 1.0)
SHAPE = (64, 64, 24)


def _config(*names: str) -> list[str]:
    return [str(CONFIGS / name) for name in names]


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A 64 x 64 x 24 piece of the digital head (skull edge included) and its unsharp-masked copy."""
    from medgan.datasets.phantom import make_head_phantom, phantom_affine
    from medgan.io.nifti import write_nifti
    from medgan.metrics.baselines import unsharp_mask

    root = tmp_path_factory.mktemp("kernel_pair")
    affine = phantom_affine((64, 64, 24), SPACING_MM)
    affine[:3, 3] += np.array([0.0, 60.0, 0.0])  # over the skull
    smooth = make_head_phantom(SHAPE, SPACING_MM, noise_std_hu=5.0, seed=0, affine=affine)
    sharp = unsharp_mask(smooth, SPACING_MM, sigma_mm=1.0, amount=1.5)
    write_nifti(smooth, root / "ub.nii.gz")
    write_nifti(sharp, root / "ya.nii.gz", affine=smooth.affine)
    return root / "ub.nii.gz", root / "ya.nii.gz"


def test_metadata_verifies_offline():
    from medgan.bundle import verify_bundle_metadata

    assert verify_bundle_metadata(BUNDLE) == []


def test_network_in_out_shapes():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=META, config_file=_config("inference.yaml"), device="cpu")


def test_shipped_weights_load_with_their_sha256_and_script_identically():
    from medgan.bundle.loading import load_network
    from medgan.networks import ResidualUNet
    from medgan.utils.atomic import sha256_file

    digest = json.loads((CONFIGS / "metadata.json").read_text())["medgan"]["weights_sha256"]
    assert sha256_file(BUNDLE / "models" / "model.pt") == digest
    assert (BUNDLE / "models" / "model.pt").stat().st_size < 5 * 2**20
    network = load_network(ResidualUNet(1, 1, filters=(16, 32, 64)), BUNDLE / "models" / "model.pt", digest)
    scripted = torch.jit.script(network)
    x = torch.linspace(-1.0, 2.0, 32 * 32 * 16).reshape(1, 1, 32, 32, 16)
    with torch.inference_mode():
        torch.testing.assert_close(scripted(x), network(x), rtol=0, atol=1e-6)


def test_train_evaluate_infer_with_overrides(tiny_pair, tmp_path):
    from monai.bundle import run

    from medgan.io.nifti import read_nifti

    ub, ya = tiny_pair
    data = {"source_file": str(ub), "target_file": str(ya), "heldout_slices": 4, "gap_slices": 1,
            "device_name": "cpu"}
    train_dir = tmp_path / "train"
    run(config_file=_config("train.yaml"), meta_file=META, output_dir=str(train_dir), iterations=2,
        patch_size_vox=[32, 32, 16], batch_size=1, validate_every=2, **data)
    assert (train_dir / "generator.pt").is_file() and (train_dir / "validation.csv").is_file()

    eval_dir = tmp_path / "eval"
    run(config_file=_config("train.yaml", "evaluate.yaml"), meta_file=META, output_dir=str(eval_dir),
        patch_size_vox=[32, 32, 16], **data)
    rows = (eval_dir / "validation.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,model") and {r.split(",")[1] for r in rows[1:]} == {"input", "generator"}

    infer_dir = tmp_path / "infer"
    run(config_file=_config("inference.yaml"), meta_file=META, input_files=[str(ub)], output_dir=str(infer_dir),
        device_name="cpu")
    [written] = list(infer_dir.glob("*.nii.gz"))
    pred, source = read_nifti(written), read_nifti(ub)
    assert pred.meta["medgan"]["nifti"]["stored_dtype"] == "int16"
    assert tuple(pred.shape) == SHAPE
    np.testing.assert_allclose(pred.affine.numpy(), source.affine.numpy(), atol=1e-4)
    assert np.abs(pred.numpy().astype(np.float32) - source.numpy()).max() > 1.0
