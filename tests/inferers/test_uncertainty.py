"""Test-time flips and ensembles: flips invert exactly, Welford matches numpy, scores, and on real data
the SD tracks the error of a trained kernel-conversion network."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medgan.errors import GeometryMismatchError, MedganError
from medgan.inferers import (
    ALL_FLIPS,
    IN_PLANE_FLIPS,
    RunningMoments,
    make_sliding_window_inferer,
    predict_with_uncertainty,
    propagate_sd,
    uncertainty_score,
    uncertainty_sidecar,
)

REPO = Path(__file__).resolve().parents[2]


class Pointwise(torch.nn.Module):
    """``x ** 2 + 0.5 x``: acts voxel by voxel, so it commutes with every flip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x + 0.5 * x


class Scale(torch.nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * x


class AddXRamp(torch.nn.Module):
    """Adds ``0, 1, 2, ...`` along X of each window: depends on position along X only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.arange(x.shape[2], dtype=x.dtype).view(1, 1, -1, 1, 1)
        return x + ramp


def conv(kernel: torch.Tensor) -> torch.nn.Conv3d:
    layer = torch.nn.Conv3d(1, 1, 3, padding=1, bias=True)
    with torch.no_grad():
        layer.weight.copy_(kernel.view(1, 1, 3, 3, 3))
        layer.bias.fill_(0.1)
    return layer


def symmetric_kernel(seed: int = 0) -> torch.Tensor:
    """A random 3^3 kernel averaged over all 8 flips: the convolution commutes with every flip."""
    k = torch.randn(3, 3, 3, generator=torch.Generator().manual_seed(seed))
    return sum(torch.flip(k, dims=list(f)) if f else k for f in ALL_FLIPS) / len(ALL_FLIPS)


@pytest.fixture
def volume() -> torch.Tensor:
    return torch.randn(1, 32, 32, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def inferer():
    # 32 = 0, 8, 16 window starts with roi 16 / overlap 0.5: the window grid is itself flip-symmetric
    return make_sliding_window_inferer((16, 16, 16), overlap=0.5, sw_batch_size=2, device="cpu")


def test_pointwise_network_all_flips_invert_exactly(volume, inferer):
    mean, sd = predict_with_uncertainty([Pointwise()], volume, inferer, flips=ALL_FLIPS)
    expected = volume * volume + 0.5 * volume
    torch.testing.assert_close(mean, expected, rtol=1e-5, atol=1e-5)
    assert float(sd.max()) < 1e-5


def test_flip_symmetric_convolution_gives_zero_sd(volume, inferer):
    mean, sd = predict_with_uncertainty([conv(symmetric_kernel())], volume, inferer, flips=ALL_FLIPS)
    assert float(sd.max()) < 1e-5
    assert float(mean.std()) > 0.1  # the network did something


def test_asymmetric_convolution_gives_positive_sd(volume, inferer):
    kernel = torch.zeros(3, 3, 3)
    kernel[2, 1, 1], kernel[0, 1, 1] = 1.0, -0.3  # a one-sided X difference: not flip-equivariant
    _, sd = predict_with_uncertainty([conv(kernel)], volume, inferer, flips=IN_PLANE_FLIPS)
    assert float(sd.mean()) > 0.1


def test_flip_back_uses_the_right_axis(volume):
    # one window over the whole volume: the ramp is along the volume's X
    whole = make_sliding_window_inferer(tuple(volume.shape[1:]), overlap=0.0, device="cpu")
    ramp = torch.arange(32, dtype=torch.float32).view(1, -1, 1, 1)
    # a Y flip leaves an X ramp unchanged: predictions agree
    mean, sd = predict_with_uncertainty([AddXRamp()], volume, whole, flips=((), (1,)))
    torch.testing.assert_close(mean, volume + ramp)
    assert float(sd.max()) < 1e-5
    # an X flip reverses it: after flipping back the prediction is x + reversed ramp
    mean, sd = predict_with_uncertainty([AddXRamp()], volume, whole, flips=((), (0,)))
    reversed_ramp = torch.flip(ramp, dims=[1])
    torch.testing.assert_close(mean, volume + (ramp + reversed_ramp) / 2)
    torch.testing.assert_close(sd, ((ramp - reversed_ramp).abs() / 2).expand_as(sd))


def test_ensemble_sd_is_half_the_spread(volume, inferer):
    mean, sd = predict_with_uncertainty([Scale(1.0), Scale(2.0)], volume, inferer, flips=((),))
    torch.testing.assert_close(mean, 1.5 * volume, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sd, 0.5 * volume.abs(), rtol=1e-5, atol=1e-5)


def test_shapes_devices_and_metatensor_input(volume, inferer):
    image = MetaTensor(volume, affine=torch.diag(torch.tensor([0.5, 0.5, 2.0, 1.0], dtype=torch.float64)))
    mean, sd = predict_with_uncertainty([Pointwise()], image, inferer)
    for out in (mean, sd):
        assert type(out) is torch.Tensor and out.shape == volume.shape
        assert out.dtype == torch.float32 and out.device.type == "cpu"
    batched_mean, batched_sd = predict_with_uncertainty([Scale(1.0), Scale(3.0)], volume[None].repeat(2, 1, 1, 1, 1),
                                                        inferer, flips=((), (2,)))
    assert batched_mean.shape == batched_sd.shape == (2, *volume.shape)
    torch.testing.assert_close(batched_sd[1], volume.abs(), rtol=1e-5, atol=1e-5)
    assert image.shape == volume.shape  # input untouched


@pytest.mark.gpu
def test_windows_on_cuda_volume_on_cpu(volume):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cuda_inferer = make_sliding_window_inferer((16, 16, 16), overlap=0.5, device="cuda")
    layer = conv(symmetric_kernel()).cuda()
    mean, sd = predict_with_uncertainty([layer], volume, cuda_inferer, flips=IN_PLANE_FLIPS)
    assert mean.device.type == sd.device.type == "cpu"
    assert float(sd.max()) < 1e-4


@pytest.mark.parametrize("flips, networks, match", [
    (((),), 1, "at least two predictions"),
    (((3,),), 2, "spatial axes"),
    (((0, 0),), 2, "spatial axes"),
    (((0,), (0,)), 1, "repeat"),
    (IN_PLANE_FLIPS, 0, "at least one network"),
])
def test_bad_arguments(volume, inferer, flips, networks, match):
    with pytest.raises(ValueError, match=match):
        predict_with_uncertainty([Pointwise()] * networks, volume, inferer, flips=flips)


@pytest.mark.parametrize("dtype, offset", [(torch.float64, 0.0), (torch.float32, 0.0), (torch.float32, 1000.0)])
def test_welford_matches_numpy(dtype, offset):
    rng = np.random.default_rng(3)
    stack = offset + rng.normal(size=(9, 4, 5, 6)) * rng.uniform(0.01, 5.0, size=(4, 5, 6))
    moments = RunningMoments(dtype=dtype)
    for sample in stack:
        moments.update(torch.from_numpy(sample))
    assert moments.count == 9
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-4)
    np.testing.assert_allclose(moments.mean.numpy(), stack.mean(axis=0), **tol)
    np.testing.assert_allclose(moments.sd().numpy(), stack.std(axis=0), **tol)
    np.testing.assert_allclose(moments.sd(ddof=1).numpy(), stack.std(axis=0, ddof=1), **tol)
    np.testing.assert_allclose(moments.variance().numpy(), stack.var(axis=0), **tol)


def test_welford_refuses_mismatched_and_too_few_samples():
    moments = RunningMoments()
    with pytest.raises(ValueError, match="no sample"):
        _ = moments.mean
    moments.update(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="ddof=1"):
        moments.sd(ddof=1)
    with pytest.raises(ValueError, match="does not match"):
        moments.update(torch.zeros(3, 2))


def test_propagate_sd_through_an_affine_map_and_a_flip():
    mean, sd = torch.randn(1, 4, 5, 6), torch.rand(1, 4, 5, 6)
    out = propagate_sd(lambda v: torch.flip(v[0] * 1000.0 - 1024.0, dims=[0]), mean, sd)
    torch.testing.assert_close(out, torch.flip(sd[0] * 1000.0, dims=[0]), rtol=1e-4, atol=1e-2)


def test_score_over_mask():
    sd = np.zeros((1, 10, 10, 10), dtype=np.float32)
    sd[0, :5] = 10.0
    mask = np.zeros((10, 10, 10), bool)
    mask[:5, :, :2] = True  # 100 voxels, all with SD 10
    mask[9, 9, 9] = True    # and one with SD 0
    score = uncertainty_score(torch.from_numpy(sd), mask)
    assert score["voxels"] == 101
    assert score["mean"] == pytest.approx(1000.0 / 101)
    assert score["p95"] == pytest.approx(10.0)
    assert uncertainty_score(sd)["mean"] == pytest.approx(5.0)


def test_score_refuses_bad_masks_and_values():
    sd = np.ones((4, 4, 4))
    with pytest.raises(GeometryMismatchError, match="different voxels"):
        uncertainty_score(sd, np.ones((4, 4, 5), bool))
    with pytest.raises(MedganError, match="no voxel"):
        uncertainty_score(sd, np.zeros((4, 4, 4), bool))
    sd[0, 0, 0] = np.nan
    with pytest.raises(MedganError, match="NaN"):
        uncertainty_score(sd, np.ones((4, 4, 4), bool))


def test_sidecar_section_is_json_and_named():
    record = uncertainty_sidecar(np.full((3, 3, 3), 12.5), np.ones((3, 3, 3), bool), num_networks=2)
    assert record["score"] == pytest.approx(12.5) and record["unit"] == "HU"
    assert record["method"] == "SD over 2 networks x 4 flips (none, X, Y, XY)"
    assert record["flips"] == [[], [0], [1], [0, 1]] and record["region"] == "body mask"
    assert json.loads(json.dumps(record)) == record


def _spearman_blocks(sd: np.ndarray, error: np.ndarray, mask: np.ndarray, block: int = 8) -> float:
    from scipy import stats

    nx, ny, nz = (s // block for s in sd.shape)

    def blocks(a):
        a = a[:nx * block, :ny * block, :nz * block].reshape(nx, block, ny, block, nz, block)
        return a.transpose(0, 2, 4, 1, 3, 5).reshape(-1, block ** 3).astype(np.float64)

    weight = blocks(mask)
    keep = weight.sum(1) >= 0.5 * block ** 3
    means = [(blocks(a) * weight).sum(1)[keep] / weight.sum(1)[keep] for a in (sd, error)]
    return float(stats.spearmanr(*means).statistic)


@pytest.mark.realdata
@pytest.mark.slow
def test_sd_tracks_error_on_held_out_kernel_conversion(real_file):
    """Trained kernel-conversion weights on held-out slices 80-99: SD and |error| rank together.

    The weights are the bundle's ``models/model.pt``, or the generator state dict named by
    ``$MEDGAN_KERNEL_WEIGHTS`` (e.g. a training run's ``generator.pt``).
    """
    from scipy import stats

    from medgan.engines.volumes import threshold_body_mask
    from medgan.io.nifti import read_nifti
    from medgan.networks import ResidualUNet

    weights = Path(os.environ.get("MEDGAN_KERNEL_WEIGHTS", REPO / "bundles" / "ct_kernel_conversion" / "models"
                                  / "model.pt"))
    if not weights.is_file():
        pytest.skip(f"no trained kernel-conversion weights at {weights}")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if not any(bool(v.any()) for k, v in state.items() if k.startswith("unet.output_block")):
        pytest.skip(f"{weights} is the untrained identity start (zero output layer), not trained weights")
    source = read_nifti(real_file("ct/phantom_head_philips/thin1mm_kernelUB.nii.gz")).numpy()[:, :, 80:100]
    target = read_nifti(real_file("ct/phantom_head_philips/thin1mm_kernelYA.nii.gz")).numpy()[:, :, 80:100]
    mask = threshold_body_mask(source)
    region = (slice(96, 224), slice(96, 224), slice(None))  # a 128 x 128 x 20 crop across the skull
    source, target, mask = source[region], target[region], mask[region]
    network = ResidualUNet(1, 1, filters=(16, 32, 64))
    network.load_state_dict(state)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    inferer = make_sliding_window_inferer((64, 64, 16), overlap=0.25, device="cpu")
    mean, sd = predict_with_uncertainty([network], torch.from_numpy(source / 1000.0).float()[None], inferer)
    sd_hu, error_hu = sd[0].numpy() * 1000.0, np.abs(mean[0].numpy() * 1000.0 - target)
    voxel_rho = stats.spearmanr(sd_hu[mask], error_hu[mask]).statistic
    block_rho = _spearman_blocks(sd_hu, error_hu, mask)
    assert voxel_rho > 0.1, voxel_rho
    assert block_rho > 0.3, block_rho
    assert 1.0 < uncertainty_score(sd_hu, mask)["mean"] < 100.0
