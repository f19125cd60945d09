"""Skipping air-only windows: body voxels keep exactly the output of the full sliding window."""

from __future__ import annotations

import pytest
import torch

from medgan.inferers import BackgroundSkippingInferer, SkipBackgroundWindows, make_sliding_window_inferer, predict_volume
from medgan.networks import ResidualUNet

AIR = -0.75  # network units of -500 HU in the [-1024, 3071] -> [-1, 1] window


def _head_in_air(shape=(48, 48, 16), seed=0) -> torch.Tensor:
    """A CT-like volume in network units: noisy air (about -1) around an off-centre ellipsoid of tissue."""
    generator = torch.Generator().manual_seed(seed)
    x, y, z = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in shape), indexing="ij")
    inside = ((x - 14) / 10) ** 2 + ((y - 16) / 9) ** 2 + ((z - 8) / 20) ** 2 < 1
    volume = torch.full(shape, -1.0) + 0.03 * torch.randn(shape, generator=generator)
    volume[inside] = -0.48 + 0.02 * torch.randn(int(inside.sum()), generator=generator)
    return volume[None]


def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    return ResidualUNet(1, 1, filters=(4, 8, 16), zero_init_output=False).eval()


@pytest.mark.parametrize("sw_batch_size", [1, 3])
def test_body_voxels_get_the_full_inference_output(sw_batch_size):
    volume, network = _head_in_air(), _network()
    full = make_sliding_window_inferer((16, 16, 8), overlap=0.5, sw_batch_size=sw_batch_size, device="cpu")
    skipping = make_sliding_window_inferer((16, 16, 8), overlap=0.5, sw_batch_size=sw_batch_size, device="cpu",
                                           skip_background_below=AIR)
    assert isinstance(skipping, BackgroundSkippingInferer)
    expected = predict_volume(network, volume, full)
    got = predict_volume(network, volume, skipping)
    assert 0 < skipping.last_skipped < skipping.last_windows  # some windows skipped, not all
    body = volume >= AIR
    torch.testing.assert_close(got[body], expected[body], rtol=0, atol=1e-6)
    # air far from the body is only in skipped windows: it keeps the input; the network did change it
    corner = (slice(None), slice(40, 48), slice(40, 48), slice(None))
    torch.testing.assert_close(got[corner], volume[corner])
    assert (expected[corner] - volume[corner]).abs().max() > 1e-3


def test_all_background_calls_no_network_and_nothing_is_skipped_without_background():
    calls = []

    def network(windows: torch.Tensor) -> torch.Tensor:
        calls.append(windows.shape[0])
        return windows + 1.0

    wrapped = SkipBackgroundWindows(network, threshold=AIR)
    air = torch.full((2, 1, 4, 4, 4), -1.0)
    assert torch.equal(wrapped(air), air) and calls == []
    mixed = air.clone()
    mixed[1, 0, 0, 0, 0] = 0.0
    out = wrapped(mixed)
    assert calls == [1] and torch.equal(out[0], mixed[0]) and torch.equal(out[1], mixed[1] + 1.0)
    assert (wrapped.windows, wrapped.skipped) == (4, 3)
