"""Feature and input perturbations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sonoseg.ssl.noise import (
    attention_guided_dropout,
    feature_dropout2d,
    gaussian_input_noise,
    make_perturbation,
    uniform_multiplicative,
    vat_direction,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_uniform_multiplicative_stays_within_strength() -> None:
    x = torch.randn(2, 3, 8, 8, generator=gen(1))
    y = uniform_multiplicative(x, 0.3, generator=gen())
    assert torch.all((y - x).abs() <= 0.3 * x.abs() + 1e-6)
    assert not torch.equal(x, y)
    assert torch.equal(y, uniform_multiplicative(x, 0.3, generator=gen()))


def test_feature_dropout_zeroes_whole_channels() -> None:
    x = torch.rand(4, 8, 5, 5, generator=gen(1)) + 0.1  # no zero to start with
    y = feature_dropout2d(x, 0.5, generator=gen())
    dropped = (y == 0).flatten(2).all(-1)
    kept = torch.isclose(y, 2 * x).flatten(2).all(-1)
    assert torch.all(dropped ^ kept)  # every channel map is either all zero or scaled by 1 / (1 - p)
    assert dropped.any() and kept.any()
    assert torch.equal(y, feature_dropout2d(x, 0.5, generator=gen()))
    assert torch.equal(feature_dropout2d(x, 1.0), torch.zeros_like(x))


def test_attention_guided_dropout_drops_the_peak() -> None:
    x = torch.zeros(1, 2, 4, 4)
    x[0, :, 1, 1] = 10.0  # the most attended position
    x[0, :, 3, 3] = 1.0
    y = attention_guided_dropout(x, (0.7, 0.9), generator=gen())
    assert torch.all(y[0, :, 1, 1] == 0) and torch.all(y[0, :, 3, 3] == 1.0)


def test_gaussian_input_noise_is_in_units_of_each_images_std_clipped_and_seeded() -> None:
    x = torch.zeros(2, 1, 16, 16)
    x[1, 0, ::2] = 1.0  # image 1: half zeros, half ones, so its std is 0.5; image 0 is constant (std 0)
    y = gaussian_input_noise(x, sigma=10.0, clip=0.2, generator=gen())
    assert torch.equal(y[0], x[0])  # a constant image gets no noise
    # nearly every draw of N(0, 10²) is clipped to ±0.2 image stds, i.e. ±0.1 in intensity
    assert (y[1] - x[1]).abs().max() == pytest.approx(0.1)
    assert ((y[1] - x[1]).abs() > 0.1 - 1e-6).float().mean() > 0.95
    assert torch.equal(y, gaussian_input_noise(x, 10.0, 0.2, generator=gen()))
    small = gaussian_input_noise(x, sigma=0.1, clip=1.0, generator=gen())
    assert (small[1] - x[1]).std().item() == pytest.approx(0.1 * 0.5, rel=0.15)


def test_vat_direction_has_norm_eps_and_touches_no_parameter_grad() -> None:
    decoder = nn.Conv2d(3, 2, 1)
    x = torch.randn(2, 3, 4, 4, generator=gen(1))
    r = vat_direction(decoder, x, xi=0.1, eps=2.0, iterations=1, generator=gen())
    assert r.shape == x.shape and not r.requires_grad
    assert torch.allclose(r.flatten(1).norm(dim=1), torch.full((2,), 2.0))
    assert all(p.grad is None for p in decoder.parameters())
    assert torch.equal(r, vat_direction(decoder, x, 0.1, 2.0, 1, generator=gen()))


def test_make_perturbation_registry() -> None:
    x = torch.rand(2, 4, 4, 4, generator=gen(1)) + 0.1
    assert torch.equal(make_perturbation("none", strength=0.3)(x), x)
    uniform = make_perturbation("uniform", strength=0.1)
    assert torch.all((uniform(x, gen()) - x).abs() <= 0.1 * x + 1e-6)
    assert make_perturbation("dropout", strength=0.3).options == {"p": 0.3}
    assert make_perturbation("dropout", strength=0.3, p=0.5).options == {"p": 0.5}
    assert make_perturbation("attention", strength=0.3)(x, gen()).shape == x.shape
    decoder = nn.Conv2d(4, 2, 1)
    vat = make_perturbation("vat", strength=1.0)
    assert torch.allclose((vat(x, gen(), forward_fn=decoder) - x).flatten(1).norm(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="forward_fn"):
        vat(x)
    with pytest.raises(ValueError, match="unknown perturbation"):
        make_perturbation("gaussian")
    with pytest.raises(ValueError, match="unknown"):
        make_perturbation("uniform", p=0.5)


def test_vat_direction_is_more_adversarial_than_random() -> None:
    torch.manual_seed(0)
    decoder = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Tanh(), nn.Conv2d(8, 3, 1))
    x = torch.randn(1, 3, 4, 4, generator=gen(1))

    def kl(r: torch.Tensor) -> float:
        p = torch.softmax(decoder(x), 1)
        return float(torch.nn.functional.kl_div(torch.log_softmax(decoder(x + r), 1), p, reduction="batchmean"))

    with torch.no_grad():
        adversarial = kl(vat_direction(decoder, x, xi=0.1, eps=0.5, iterations=2, generator=gen()))
        randoms = []
        for seed in range(20):
            r = torch.randn(x.shape, generator=gen(seed + 100))
            randoms.append(kl(0.5 * r / r.norm()))
    assert adversarial > max(randoms)
