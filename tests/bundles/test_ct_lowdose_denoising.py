"""Smoke test of the ct_lowdose_denoising bundle, model-zoo style: train -> evaluate -> inference with
overrides on a tiny generated CT, metadata, network in/out shapes, TorchScript, shipped weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medgan.bundle import verify_bundle_metadata
from medgan.bundle.loading import load_network
from medgan.bundle.verify import load_metadata

pytestmark = pytest.mark.bundle

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "ct_lowdose_denoising"
CONFIGS = BUNDLE / "configs"


def _network_def():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.yaml"))
    return parser.get_parsed_content("network_def")


@pytest.fixture(scope="module")
def tiny_ct(tmp_path_factory) -> Path:
    """A 56 x 56 x 24 generated head CT (3.5 mm voxels, inside the bundle's spacing range) with air around it."""
    from medgan.datasets.phantom import make_head_phantom
    from medgan.io.nifti import write_nifti

    path = tmp_path_factory.mktemp("ct") / "ct.nii.gz"
    write_nifti(make_head_phantom(shape=(56, 56, 24), spacing_mm=(3.5, 3.5, 3.5), noise_std_hu=5.0, seed=3), path)
    return path


def test_metadata_verifies_offline():
    assert verify_bundle_metadata(BUNDLE) == []


def test_shipped_weights_load_with_their_sha256():
    metadata = load_metadata(BUNDLE)
    network = load_network(_network_def(), BUNDLE / "models" / "model.pt", metadata["medgan"]["weights_sha256"])
    assert not network.training
    assert sum(p.numel() for p in network.parameters()) < 2_000_000
    assert (BUNDLE / "models" / "model.pt").stat().st_size < 8 * 1024 ** 2


def test_network_in_out_shapes():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"),
                      config_file=str(CONFIGS / "inference.yaml"), device="cpu", n=4)


def test_torchscript_gives_the_same_output(tmp_path):
    metadata = load_metadata(BUNDLE)
    network = load_network(_network_def(), BUNDLE / "models" / "model.pt", metadata["medgan"]["weights_sha256"])
    scripted = torch.jit.script(network)
    torch.jit.save(scripted, str(tmp_path / "model.ts"))
    reloaded = torch.jit.load(str(tmp_path / "model.ts"))
    x = torch.randn(1, 1, 32, 32, 16, generator=torch.Generator().manual_seed(0)) * 0.05
    with torch.inference_mode():
        expected, got = network(x), reloaded(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(expected, x)  # the trained weights act (the untrained net is the identity)


def test_train_evaluate_infer(tmp_path, tiny_ct):
    """Train 2 iterations -> install the generator into a bundle copy -> evaluate -> infer with overrides."""
    import nibabel as nib
    from monai.bundle import run

    from medgan.bundle import save_state_dict
    from medgan.bundle.weights import load_state_dict
    from medgan.io.nifti import read_nifti, write_nifti
    from medgan.transforms.degradation import SimulateLowDose

    run_dir = tmp_path / "train"
    run(config_file=str(CONFIGS / "train.yaml"), bundle_root=str(BUNDLE), target_files=[str(tiny_ct)],
        output_dir=str(run_dir), iterations=2, patch_size_vox=[16, 16, 8], batch_size=1, heldout_slices=8,
        gap_slices=0, validate_every=2, dose_fractions=[0.25], fast=True)
    assert (run_dir / "generator.pt").is_file()
    rows = (run_dir / "validation.csv").read_text().splitlines()
    assert rows[0].startswith("iteration") and any(",generator," in row for row in rows)

    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("models"))
    digest = save_state_dict(load_state_dict(run_dir / "generator.pt"), bundle / "models" / "model.pt")
    metadata = (bundle / "configs" / "metadata.json").read_text()
    (bundle / "configs" / "metadata.json").write_text(
        metadata.replace(load_metadata(BUNDLE)["medgan"]["weights_sha256"], digest))
    assert verify_bundle_metadata(bundle) == []

    normal = read_nifti(tiny_ct)
    low_path = tmp_path / "low.nii.gz"
    write_nifti(SimulateLowDose(0.25, seed=1, fast=True)(normal.float()), low_path, dtype=np.int16)
    out = tmp_path / "eval"
    run(config_file=[str(bundle / "configs" / "inference.yaml"), str(bundle / "configs" / "evaluate.yaml")],
        bundle_root=str(bundle), input_files=[str(low_path)], reference_files=[str(tiny_ct)], output_dir=str(out),
        roi_size_vox=[16, 16, 8])
    metrics = dict(line.split(",") for line in (out / "metrics.csv").read_text().split())
    assert 0.0 < float(metrics["val_mae_hu"]) < 100.0 and float(metrics["val_psnr_db"]) > 30.0

    out = tmp_path / "infer"
    run(config_file=str(bundle / "configs" / "inference.yaml"), bundle_root=str(bundle),
        input_files=[str(low_path)], output_dir=str(out), roi_size_vox=[32, 32, 8], sw_overlap=0.5, device_name="cpu")
    written = nib.load(str(out / "low_denoised.nii.gz"))
    reference = nib.load(str(low_path))
    assert written.shape == reference.shape and written.get_data_dtype() == np.int16
    np.testing.assert_allclose(written.affine, reference.affine, atol=1e-4)
    values = np.asarray(written.dataobj)
    assert values.min() >= -1024 and np.abs(values - np.asarray(reference.dataobj)).mean() < 100.0


def test_medgan_run_path_returns_the_input_grid(tmp_path, tiny_ct):
    """The per-case loop of ``medgan run`` (open_bundle + run_case) on the shipped bundle and weights."""
    runner = pytest.importorskip("medgan.bundle.runner")
    import nibabel as nib

    from medgan.bundle.loading import open_bundle

    bundle = open_bundle(BUNDLE, device="cpu", overrides={"roi_size_vox": [32, 32, 16]})
    result = runner.run_case(bundle, runner.cases_from_input(tiny_ct)[0], tmp_path / "out")
    written = nib.load(str(tmp_path / "out" / "ct" / "pred.nii.gz"))
    reference = nib.load(str(tiny_ct))
    assert result.status == runner.STATUS_OK and written.get_data_dtype() == np.int16
    assert written.shape == reference.shape
    np.testing.assert_allclose(written.affine, reference.affine, atol=1e-4)
    assert (tmp_path / "out" / "ct" / "pred.json").is_file()


def test_restore_settings_give_back_the_input_and_keep_more_lesion_contrast(real_file):
    """On real abdomen CT with simulated quarter dose: ``restore_fraction`` 0.5 without low-pass gives the
    mid-point of the full denoising and the input (to the int16 rounding); small lesions keep more of their
    contrast with it and with the low-passed restore of the lesion setting than with the network alone, and
    the low-passed restore leaves less noise than the plain blend."""
    from monai.data import MetaTensor

    from medgan.bundle.loading import open_bundle
    from medgan.inferers import predict_volume
    from medgan.io import load_volume
    from medgan.metrics import body_mask_from_ct
    from medgan.metrics.lesions import insert_lesions, measure_lesions, place_lesions
    from medgan.transforms.degradation import SimulateLowDose

    normal = load_volume(real_file("ct/abdomen_totalsegmentator/example_ct_sm.nii.gz")).float()
    spacing = [float(v) for v in np.linalg.norm(normal.affine[:3, :3].numpy(), axis=0)]
    lesions = place_lesions(normal.numpy(), spacing, (5.0,), (-40.0, 40.0), mask=body_mask_from_ct(normal.numpy()),
                            copies=3, seed=0)
    assert len(lesions) == 6
    with_lesions = MetaTensor(torch.from_numpy(insert_lesions(normal.numpy(), spacing, lesions)),
                              affine=normal.affine, meta=dict(normal.meta))
    lows = {}
    for name, image in (("plain", normal), ("lesions", with_lesions)):
        low = SimulateLowDose(0.25, seed=7, num_threads=1)(image)
        lows[name] = MetaTensor(torch.round(low.as_tensor()), affine=normal.affine, meta=dict(normal.meta))

    def run(setting: tuple, name: str) -> np.ndarray:
        bundle = open_bundle(BUNDLE, device="cpu", overrides={"restore_fraction": setting[0],
                                                              "restore_sigma_vox": setting[1],
                                                              "texture_fraction": setting[2]})
        data = bundle.preprocessing({"image": lows[name]})
        data["pred"] = predict_volume(bundle.network, data["image"], bundle.inferer, bundle.precision)
        return bundle.postprocessing(data)["pred"][0].numpy().astype(np.float32)

    full, half = run((0.0, 0.0, 0.0), "plain"), run((0.5, 0.0, 0.0), "plain")
    low = np.clip(lows["plain"].numpy(), -1024, 3071)
    unclipped = (full > -1024) & (full < 3071)  # the blend is of the unclipped network output
    assert unclipped.mean() > 0.9
    assert np.abs(half - (full + low) / 2.0)[unclipped].max() <= 1.0
    assert np.abs(half - full).max() > 20.0  # the setting does change the output
    lesion_setting = run((1.0, 0.7, 0.0), "plain")
    retained = {}
    for setting, plain in (((0.0, 0.0, 0.0), full), ((0.5, 0.0, 0.0), half), ((1.0, 0.7, 0.0), lesion_setting)):
        rows = measure_lesions(run(setting, "lesions"), plain, lesions, spacing)
        retained[setting] = float(np.mean([row["retained"] for row in rows]))
    assert retained[(0.5, 0.0, 0.0)] > retained[(0.0, 0.0, 0.0)] + 0.1
    assert retained[(1.0, 0.7, 0.0)] > retained[(0.0, 0.0, 0.0)] + 0.1
    body = body_mask_from_ct(normal.numpy())
    assert np.std((lesion_setting - normal.numpy())[body]) < np.std((half - normal.numpy())[body])


def test_shipped_texture_setting_keeps_the_noise_power_spectrum_peak(real_file):
    """Real abdomen CT, two quarter-dose noise realisations: the network alone leaves coarse noise (its NPS
    peak well below the input noise's); the shipped setting (texture_fraction 0.4) puts the peak back near the
    input noise's while keeping the noise well below the input's."""
    from monai.data import MetaTensor

    from medgan.bundle.loading import open_bundle
    from medgan.inferers import predict_volume
    from medgan.io import load_volume
    from medgan.metrics import body_mask_from_ct
    from medgan.metrics.image_quality import noise_power_spectrum
    from medgan.transforms.degradation import SimulateLowDose

    normal = load_volume(real_file("ct/abdomen_totalsegmentator/example_ct_sm.nii.gz")).float()
    spacing = [float(v) for v in np.linalg.norm(normal.affine[:3, :3].numpy(), axis=0)]
    lows = [MetaTensor(torch.round(SimulateLowDose(0.25, seed=seed, num_threads=1)(normal).as_tensor()),
                       affine=normal.affine, meta=dict(normal.meta)) for seed in (11, 12)]

    def outputs(overrides: dict) -> list:
        bundle = open_bundle(BUNDLE, device="cpu", overrides=overrides)
        result = []
        for low in lows:
            data = bundle.preprocessing({"image": low})
            data["pred"] = predict_volume(bundle.network, data["image"], bundle.inferer, bundle.precision)
            result.append(bundle.postprocessing(data)["pred"][0].numpy().astype(np.float32))
        return result

    body = body_mask_from_ct(normal.numpy())

    def noise(pair) -> dict:  # NPS and SD of (first - second) / sqrt(2): the noise alone
        nps = noise_power_spectrum(pair[0], spacing, roi_size_vox=32, second=pair[1], mask=body)
        return {"peak": nps["peak_frequency_per_mm"], "sd": float(np.std((pair[0] - pair[1])[body]) / np.sqrt(2))}

    reference = noise([low.numpy() for low in lows])
    alone = noise(outputs({"texture_fraction": 0.0, "restore_fraction": 0.0}))
    shipped = noise(outputs({}))
    assert alone["peak"] < 0.7 * reference["peak"]
    assert abs(shipped["peak"] - reference["peak"]) <= 0.2 * reference["peak"]
    assert alone["sd"] < shipped["sd"] < 0.75 * reference["sd"]
