"""Every registered network: shapes, sizes, gradient flow, the encode/decode/head protocol, the factory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sonoseg.models import NETWORKS, DeepLabV3Plus, SegmentationNet, UNet, build_network, count_parameters

LIGHT = ["unet_small", "unet", "unext", "swin_unet"]


def _first_conv(net: nn.Module) -> nn.Conv2d:
    return next(m for m in net.encoder.modules() if isinstance(m, nn.Conv2d))


def test_registry_lists_the_five_networks():
    assert set(NETWORKS) == {"unet_small", "unet", "deeplabv3plus", "unext", "swin_unet"}


@pytest.mark.parametrize("name", LIGHT)
def test_output_shape_protocol_and_composition(name, image):
    net = build_network(name, in_channels=1, num_classes=3).eval()
    assert isinstance(net, SegmentationNet)
    with torch.no_grad():
        logits = net(image)
        features = net.encode(image)
        decoded = net.decode(features)
        composed = net.head(decoded)
    assert logits.shape == (2, 3, 64, 64)
    assert torch.equal(composed, logits)
    assert decoded.shape == (2, net.feature_channels, 64, 64)
    assert features[-1].shape[1] == net.bottleneck_channels
    sizes = [f.shape[-1] for f in features]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < 64  # shallow to deep


@pytest.mark.parametrize("name", LIGHT)
def test_gradients_reach_the_first_layer(name, image):
    net = build_network(name, num_classes=3).train()
    loss = nn.functional.cross_entropy(net(image), torch.randint(0, 3, (2, 64, 64)))
    loss.backward()
    grad = _first_conv(net).weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "size"), [("unet_small", (48, 80)), ("unext", (48, 80)), ("swin_unet", (96, 32))])
def test_any_size_at_the_stated_multiple(name, size):
    net = build_network(name, num_classes=2).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, *size)).shape == (2, 2, *size)


@pytest.mark.parametrize(("name", "size"), [("unet_small", (40, 64)), ("swin_unet", (48, 64))])
def test_sizes_off_the_multiple_are_refused(name, size):
    net = build_network(name)
    with pytest.raises(ValueError, match=f"divisible by {net.input_multiple}"):
        net(torch.randn(1, 1, *size))


def test_wrong_channel_count_is_refused():
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        build_network("unet_small")(torch.randn(1, 3, 64, 64))


def test_parameter_counts_are_in_their_ranges():
    counts = {name: count_parameters(build_network(name)) for name in ("unet_small", "unext", "swin_unet")}
    assert 400_000 <= counts["unet_small"] <= 600_000, counts
    assert 1_200_000 <= counts["unext"] <= 1_800_000, counts
    assert 1_000_000 <= counts["swin_unet"] <= 6_000_000, counts


def test_multichannel_input_and_class_count():
    net = build_network("unext", in_channels=3, num_classes=5).eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 5, 32, 32)


def test_unet_options_change_the_network():
    net = build_network("unet", channels=(4, 8, 16), dropout=0.2, norm="instance", residual=True)
    assert net.input_multiple == 4 and net.feature_channels == 4 and net.bottleneck_channels == 16
    assert any(isinstance(m, nn.InstanceNorm2d) for m in net.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, nn.Dropout) and m.p == 0.2 for m in net.modules())
    assert net.eval()(torch.randn(2, 1, 20, 20)).shape == (2, 3, 20, 20)
    per_level = build_network("unet", channels=(4, 8), dropout=(0.0, 0.5))
    assert [m.p for m in per_level.modules() if isinstance(m, nn.Dropout)] == [0.5]


@pytest.mark.parametrize("encoder", ["resnet50", "resnet101"])
def test_deeplabv3plus_builds_on_both_resnets(encoder, image):
    net = build_network("deeplabv3plus", encoder=encoder, num_classes=3).eval()
    assert isinstance(net, DeepLabV3Plus)
    assert net.encoder.conv1.in_channels == 1  # the stem is built for greyscale
    blocks = {"resnet50": 6, "resnet101": 23}[encoder]
    assert len(net.encoder.layer3) == blocks
    with torch.no_grad():
        features = net.encode(image)
        logits = net(image)
        composed = net.head(net.decode(features))
    assert logits.shape == (2, 3, 64, 64)
    assert torch.equal(composed, logits)
    assert features[0].shape[-2:] == (16, 16)  # low-level skip at 1/4
    assert features[-1].shape == (2, 2048, 4, 4)  # output stride 16, not 32


def test_deeplabv3plus_gradients_reach_the_stem(image):
    net = build_network("deeplabv3plus", encoder="resnet50", aspp_rates=(2, 4, 6)).train()
    net(image).logsumexp(1).mean().backward()
    assert net.encoder.conv1.weight.grad is not None and net.encoder.conv1.weight.grad.abs().sum() > 0


def test_unknown_network_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown network 'unet3d'") as info:
        build_network("unet3d")
    for name in NETWORKS:
        assert name in str(info.value)


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['depth'\]") as info:
        build_network("unet", depth=4)
    assert "channels" in str(info.value) and "norm" in str(info.value)
    with pytest.raises(ValueError, match="encoder must be one of"):
        build_network("deeplabv3plus", encoder="resnet18")
    with pytest.raises(ValueError, match="norm must be one of"):
        UNet(norm="group")
