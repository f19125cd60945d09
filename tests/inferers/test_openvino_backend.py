"""The OpenVINO CPU backend: the bundles' output unchanged, compiled once per window shape, clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medgan.errors import MedganError
from medgan.inferers import OpenVINONetwork, predict_volume, with_cpu_backend
from medgan.networks import ResidualUNet

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def test_openvino_network_matches_torch_and_compiles_once_per_shape():
    torch.manual_seed(0)
    network = ResidualUNet(1, 1, filters=(8, 16, 32)).eval()
    wrapped = OpenVINONetwork(network, num_threads=1)
    x = torch.randn(2, 1, 32, 32, 16)
    with torch.inference_mode():
        expected = network(x)
        out = wrapped(x)
        again = wrapped(x[:1])
        wrapped(x * 0.5)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-4)
    np.testing.assert_allclose(again.numpy(), expected[:1].numpy(), atol=1e-4)
    assert len(wrapped._compiled) == 2  # batch 2 and batch 1, each compiled once
    assert next(wrapped.parameters()) is next(network.parameters())


def test_backend_choice_and_refusals():
    network = ResidualUNet(1, 1, filters=(8, 16, 32)).eval()
    assert with_cpu_backend(network, "torch", "cpu") is network
    assert with_cpu_backend(network, "openvino", torch.device("cuda")) is network  # CUDA keeps PyTorch
    assert isinstance(with_cpu_backend(network, "openvino", "cpu"), OpenVINONetwork)
    with pytest.raises(MedganError, match="cpu_backend"):
        with_cpu_backend(network, "tensorrt", "cpu")
    with pytest.raises(ValueError, match="fp32"), torch.autocast("cpu", dtype=torch.bfloat16):
        OpenVINONetwork(network)(torch.zeros(1, 1, 16, 16, 8))


@pytest.mark.parametrize("bundle_name", ["ct_lowdose_denoising", "ct_kernel_conversion"])
def test_bundle_output_is_the_same_with_either_backend(bundle_name, real_file):
    """Whole-volume inference of a real CT through the shipped bundle: OpenVINO and PyTorch agree to the
    int16 rounding of the output (1 HU) everywhere."""
    from medgan.bundle.loading import open_bundle
    from medgan.io import load_volume

    image = load_volume(real_file("ct/phantom_head_philips/thin1mm_kernelUB.nii.gz")).float()[128:320, 128:320, 40:60]
    outputs = {}
    for backend in ("torch", "openvino"):
        bundle = open_bundle(BUNDLES / bundle_name, device="cpu", overrides={"cpu_backend": backend})
        assert isinstance(bundle.network, OpenVINONetwork) == (backend == "openvino")
        assert bundle.parameters["backend"] == backend  # recorded in every sidecar
        data = bundle.preprocessing({"image": image})
        data["pred"] = predict_volume(bundle.network, data["image"], bundle.inferer, bundle.precision)
        outputs[backend] = bundle.postprocessing(data)["pred"][0].numpy()
    difference = np.abs(outputs["openvino"] - outputs["torch"])
    assert difference.max() <= 1.0
    assert (difference > 0.5).mean() < 0.01  # outputs written as int16 HU: at most a rounding step apart
    assert np.abs(outputs["torch"] - image.numpy()).max() > 10.0  # the bundle did change the image
