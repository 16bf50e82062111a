"""DualDecoderNet, the SDM head and SimCVD's projection head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sonoseg.models import DualDecoderNet, ProjectionHead, SDMNet, build_network, count_parameters, with_sdm_head


class Scale:
    """A perturbation whose strength can change between calls; counts its calls."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * self.factor


@pytest.mark.parametrize("base", ["unet_small", "unext"])
def test_dual_decoders_are_independently_initialised(base, image):
    dual = DualDecoderNet(base, perturbation=None).eval()
    with torch.no_grad():
        main, noisy, features = dual.forward_dual(image, perturb=False)
    assert main.shape == noisy.shape == (2, 3, 64, 64)
    assert not torch.allclose(main, noisy)
    decoder_weights = [p for p in dual.decoder.parameters() if p.ndim == 4]
    noisy_weights = [p for p in dual.noisy_decoder.parameters() if p.ndim == 4]
    assert len(decoder_weights) == len(noisy_weights)
    assert all(not torch.equal(a, b) for a, b in zip(decoder_weights, noisy_weights))
    assert features[-1].shape[1] == dual.bottleneck_channels
    single = build_network(base)  # one encoder, two decoders and heads
    extra = count_parameters(single.decoder) + count_parameters(single.head)
    assert count_parameters(dual) == count_parameters(single) + extra


def test_perturbation_reaches_only_the_noisy_decoder(image):
    perturbation = Scale(1.0)
    dual = DualDecoderNet("unet_small", perturbation=perturbation).eval()
    with torch.no_grad():
        main_a, noisy_a, features = dual.forward_dual(image)
        assert perturbation.calls == len(features)  # every encoder map
        perturbation.factor = 3.0
        main_b, noisy_b, _ = dual.forward_dual(image)
        main_c, noisy_c, _ = dual.forward_dual(image, perturb=False)
    assert torch.equal(main_a, main_b)
    assert not torch.allclose(noisy_a, noisy_b)
    assert torch.equal(noisy_c, noisy_a)  # perturb=False: clean maps (the factor-1 run)
    assert torch.equal(main_c, main_a)


def test_forward_is_the_main_logits(image):
    dual = DualDecoderNet("unext", perturbation=nn.Dropout2d(0.5), num_classes=4).eval()
    with torch.no_grad():
        logits = dual(image)
        main, _, _ = dual.forward_dual(image)
    assert logits.shape == (2, 4, 64, 64)
    assert torch.equal(logits, main)


def test_noisy_loss_trains_encoder_and_noisy_decoder_only(image):
    dual = DualDecoderNet("unet_small", perturbation=lambda f: f * 0.5)
    _, noisy, _ = dual.forward_dual(image)
    noisy.square().mean().backward()
    assert all(p.grad is None for p in dual.decoder.parameters())
    assert all(p.grad is None for p in dual.head.parameters())
    assert dual.noisy_head.weight.grad is not None
    assert next(dual.encoder.parameters()).grad is not None


def test_dual_on_swin_unet():
    dual = DualDecoderNet("swin_unet", perturbation=lambda f: f + 0.1, embed_dim=12, depths=(1, 1, 1, 1),
                          num_heads=(1, 2, 3, 6)).eval()
    with torch.no_grad():
        main, noisy, _ = dual.forward_dual(torch.randn(2, 1, 32, 32))
    assert main.shape == noisy.shape == (2, 3, 32, 32)
    assert not torch.allclose(main, noisy)


def test_dual_rejects_unknown_base():
    with pytest.raises(ValueError, match="valid names"):
        DualDecoderNet("segformer", perturbation=None)


@pytest.mark.parametrize("num_classes", [3, 2])
def test_sdm_head_gives_bounded_maps_per_foreground_class(num_classes, image):
    net = build_network("unet_small", num_classes=num_classes)
    sdm_net = with_sdm_head(net).eval()
    assert isinstance(sdm_net, SDMNet)
    assert sdm_net.encoder is net.encoder and sdm_net.head is net.head  # shared, not copied
    with torch.no_grad():
        logits, sdm, features = sdm_net.forward_with_sdm(10 * image)  # large inputs push tanh to its limits
        plain = sdm_net(10 * image)
    assert sdm.shape == (2, num_classes - 1, 64, 64)
    assert sdm.abs().max() < 1.0
    assert torch.equal(logits, plain)
    assert features[-1].shape[1] == sdm_net.bottleneck_channels


def test_sdm_net_takes_a_plain_networks_state_dict():
    plain = build_network("unet_small")
    sdm_net = with_sdm_head(build_network("unet_small"))
    result = sdm_net.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["sdm_head.conv.bias", "sdm_head.conv.weight"]
    assert not result.unexpected_keys


@pytest.mark.parametrize("patch_grid", [4, 2])
def test_projection_head_gives_unit_patch_embeddings(patch_grid):
    head = ProjectionHead(1 + 2, patch_grid=patch_grid, hidden=32, out_dim=16)
    x = torch.randn(2, 3, 64, 64)
    out = head(x)
    assert out.shape == (2, patch_grid**2, 16)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, patch_grid**2))
    assert any(isinstance(m, nn.AlphaDropout) and m.p == 0.1 for m in head.modules())
    out.sum().backward()
    assert head.conv[0].weight.grad is not None


def test_projection_head_defaults():
    out = ProjectionHead(3).eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 16, 64)
