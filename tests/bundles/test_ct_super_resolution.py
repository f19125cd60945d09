"""Smoke test of the ct_super_resolution bundle, model-zoo style: train -> evaluate -> inference with
overrides on a tiny generated thick/thin pair, both inference paths, metadata, network in/out shapes,
TorchScript, shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medgan.bundle import verify_bundle_metadata
from medgan.bundle.loading import load_network
from medgan.bundle.verify import load_metadata

pytestmark = pytest.mark.bundle

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "ct_super_resolution"
CONFIGS = BUNDLE / "configs"
THICK_MM = 5.0


def _network_def():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.yaml"))
    return parser.get_parsed_content("network_def")


def _shipped_network():
    metadata = load_metadata(BUNDLE)
    return load_network(_network_def(), BUNDLE / "models" / "model.pt", metadata["medgan"]["weights_sha256"])


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory) -> dict:
    """A generated head CT, 48 x 48 x 40 at (4, 4, 1) mm, and its 5 mm slab average (48 x 48 x 8)."""
    from medgan.datasets.phantom import make_head_phantom
    from medgan.io.nifti import write_nifti
    from medgan.transforms.degradation.thick_slice import ThickSliceParameters, simulate_thick_slices

    folder = tmp_path_factory.mktemp("sr")
    thin = make_head_phantom(shape=(48, 48, 40), spacing_mm=(4.0, 4.0, 1.0), noise_std_hu=3.0, seed=2)
    thick, thick_affine = simulate_thick_slices(thin.numpy().astype(np.float32), thin.affine.numpy(),
                                                ThickSliceParameters(THICK_MM, profile="rectangular"))
    paths = {"thin": folder / "thin.nii.gz", "thick": folder / "thick.nii.gz"}
    write_nifti(thin, paths["thin"])
    from monai.data import MetaTensor

    write_nifti(MetaTensor(torch.from_numpy(np.round(thick)), affine=torch.from_numpy(thick_affine)), paths["thick"],
                dtype=np.int16)
    return paths


def test_metadata_verifies_offline():
    assert verify_bundle_metadata(BUNDLE) == []


def test_shipped_weights_load_with_their_sha256(tmp_path):
    from medgan.errors import BundleError

    network = _shipped_network()
    assert not network.training
    assert (BUNDLE / "models" / "model.pt").stat().st_size < 4 * 1024 ** 2
    with pytest.raises(BundleError, match="sha256"):
        load_network(_network_def(), BUNDLE / "models" / "model.pt", "0" * 64)


def test_network_in_out_shapes():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"),
                      config_file=str(CONFIGS / "inference.yaml"), device="cpu", n=4)


def test_torchscript_gives_the_same_output(tmp_path):
    network = _shipped_network()
    reloaded_path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(network), str(reloaded_path))
    reloaded = torch.jit.load(str(reloaded_path))
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.05
    with torch.inference_mode():
        expected, got = network(x), reloaded(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(expected, x)  # the trained weights act (the untrained network is the identity)


def test_train_evaluate_infer(tmp_path, tiny_pair):
    """Train 2 iterations -> evaluate the run -> infer with the shipped weights, both ways, on the thin grid."""
    import nibabel as nib
    from monai.bundle import run

    from medgan.bundle.loading import open_bundle
    from medgan.bundle.runner import cases_from_input, run_case

    run_dir = tmp_path / "train"
    overrides = dict(bundle_root=str(BUNDLE), thick_file=str(tiny_pair["thick"]), thin_file=str(tiny_pair["thin"]),
                     output_dir=str(run_dir), iterations=2, patch_size_vox=[16, 16, 16], batch_size=1,
                     heldout_slices=12, gap_slices=4, validate_every=2)
    run(config_file=str(CONFIGS / "train.yaml"), **overrides)
    assert (run_dir / "generator.pt").is_file()
    assert any(",generator," in row for row in (run_dir / "validation.csv").read_text().splitlines())

    run(config_file=[str(CONFIGS / "train.yaml"), str(CONFIGS / "evaluate.yaml")], roi_size_vox=[16, 16, 16],
        **overrides)
    metrics = json.loads((run_dir / "heldout_metrics.json").read_text())
    assert set(metrics) == {"model", "bspline"}
    assert 10.0 < metrics["bspline"]["psnr_db"] < 80.0 and np.isfinite(metrics["model"]["psnr_db"])

    # MONAI path with the shipped weights: (8 - 1) * 5 + 1 = 36 slices of 1 mm, RAS, from the first thick centre
    out = tmp_path / "infer"
    run(config_file=str(CONFIGS / "inference.yaml"), bundle_root=str(BUNDLE), input_files=[str(tiny_pair["thick"])],
        output_dir=str(out), device_name="cpu", roi_size_vox=[48, 48, 32])
    written = nib.load(str(out / "thick_thin.nii.gz"))
    thick = nib.load(str(tiny_pair["thick"]))
    thin = nib.load(str(tiny_pair["thin"]))
    assert written.shape == (48, 48, 36) and written.get_data_dtype() == np.int16
    np.testing.assert_allclose(np.abs(np.diag(written.affine)[:3]), (4.0, 4.0, 1.0), atol=1e-4)
    first_centre = thick.affine @ np.array([0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(written.affine @ np.array([47.0, 47.0, 0.0, 1.0]), first_centre, atol=1e-3)
    # in world space the output's voxels are the thin series' voxels of slices 2..37 (axes maybe flipped)
    to_thin = np.linalg.inv(thin.affine) @ written.affine
    np.testing.assert_allclose(to_thin[:3, :3], np.diag(np.sign(np.diag(to_thin[:3, :3]))), atol=1e-6)
    assert abs(to_thin[2, 3] - 2.0) < 1e-3
    values = np.asarray(written.dataobj).astype(np.float32)
    thin_values = np.asarray(thin.dataobj).astype(np.float32)
    flips = tuple(i for i in range(2) if to_thin[i, i] < 0)
    aligned = np.flip(thin_values, axis=flips)[:, :, 2:38] if flips else thin_values[:, :, 2:38]
    assert np.abs(values - aligned).mean() < 60.0

    # medgan run path: the same components through the runner, same grid and values
    bundle = open_bundle(BUNDLE, device="cpu", overrides={"roi_size_vox": [48, 48, 32]})
    result = run_case(bundle, cases_from_input(tiny_pair["thick"])[0], tmp_path / "medgan_run", write_dicom=False,
                      force=True)
    ran = nib.load(str(Path(result.case_dir) / result.outputs["pred"]))
    np.testing.assert_allclose(ran.affine, written.affine, atol=1e-4)
    assert np.abs(np.asarray(ran.dataobj).astype(np.float32) - values).max() <= 1.0
