"""One contract suite for every generator and discriminator (tiny sizes, 16^3 inputs)."""

from __future__ import annotations

import io

import pytest
import torch

from medgan.networks import (
    PatchDiscriminator,
    ResidualUNet,
    ResnetGenerator,
    SpectralNormPatchDiscriminator,
    max_discriminator_layers,
)

# (factory, input shape (B, C, X, Y, Z)); anisotropic sizes catch swapped axes.
CASES = {
    "residual_unet": (lambda: ResidualUNet(1, 1, filters=(4, 8, 16)), (2, 1, 16, 12, 8)),
    "residual_unet_2in": (lambda: ResidualUNet(2, 1, filters=(4, 8, 8)), (1, 2, 8, 12, 4)),
    "unet_no_residual": (lambda: ResidualUNet(1, 1, filters=(4, 8, 8), residual=False, zero_init_output=False),
                         (1, 1, 8, 8, 8)),
    "resnet_generator": (lambda: ResnetGenerator(1, 1, base_channels=4, num_blocks=2), (2, 1, 16, 12, 8)),
    "resnet_generator_linear": (lambda: ResnetGenerator(1, 1, base_channels=4, num_downsampling=1, num_blocks=1,
                                                        output_activation="none"), (1, 1, 8, 10, 6)),
    "patch_discriminator": (lambda: PatchDiscriminator(2, channels=4, num_layers=2), (2, 2, 16, 20, 24)),
    "patch_discriminator_1ch": (lambda: PatchDiscriminator(1, channels=4, num_layers=1), (1, 1, 8, 8, 8)),
    "spectral_norm_discriminator": (lambda: SpectralNormPatchDiscriminator(2, channels=4, num_layers=2),
                                    (1, 2, 16, 16, 16)),
}


@pytest.fixture(params=sorted(CASES), ids=sorted(CASES))
def case(request):
    torch.manual_seed(0)
    factory, shape = CASES[request.param]
    return factory(), shape


def test_output_shape_rule_and_finite(case):
    net, shape = case
    x = torch.randn(shape)
    y = net(x)
    assert y.ndim == 5
    assert tuple(y.shape) == net.output_shape(shape)
    assert torch.isfinite(y).all()


def test_gradients_reach_every_parameter(case):
    net, shape = case
    # zero-initialised output layers block gradients to earlier layers on the first step by design;
    # perturb them so the test sees the whole graph.
    with torch.no_grad():
        for p in net.parameters():
            if not p.abs().sum():
                p.normal_(0.0, 0.1)
    y = net(torch.randn(shape))
    (y**2).mean().backward()
    missing = [name for name, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, f"no gradient reached {missing}"


def test_torchscript_export_or_declared_unsupported(case):
    net, shape = case
    net.eval()
    x = torch.randn(shape)
    if not type(net).supports_torchscript:
        with pytest.raises(Exception):
            torch.jit.script(net)
        return
    scripted = torch.jit.script(net)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


def test_residual_unet_starts_as_identity():
    net = ResidualUNet(1, 1, filters=(4, 8, 8))
    x = torch.randn(1, 1, 8, 8, 8)
    torch.testing.assert_close(net(x), x)


def test_residual_unet_rejects_bad_sizes():
    net = ResidualUNet(1, 1, filters=(4, 8, 16))
    with pytest.raises(ValueError, match="divisible by 4"):
        net.output_shape((1, 1, 16, 16, 10))
    with pytest.raises(ValueError, match="out_channels <= in_channels"):
        ResidualUNet(1, 2)


@pytest.mark.parametrize("patch, expected", [((16, 16, 16), 2), ((32, 32, 32), 3), ((64, 64, 64), 4), ((64, 64, 16), 2)])
def test_discriminator_depth_rule(patch, expected):
    assert max_discriminator_layers(patch) == expected
    net = PatchDiscriminator(1, channels=2, num_layers=expected)
    out = net(torch.randn(1, 1, *patch))  # instance norm works at batch 1 at the deepest allowed depth
    assert min(out.shape[2:]) >= 2
    with pytest.raises(ValueError, match="too small"):
        PatchDiscriminator(1, channels=2, num_layers=expected + 1).output_shape((1, 1, *patch))
