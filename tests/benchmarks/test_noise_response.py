"""The noise response: its two noise units and its measures, by hand on a tiny thresholding network."""

from __future__ import annotations

import pytest
import torch
from support.scripts import BENCHMARKS, load_script
from torch import nn


@pytest.fixture(scope="module")
def response():
    return load_script(BENCHMARKS / "noise_response.py")


class Threshold(nn.Module):
    """Class 2 where the intensity is above 0.6, class 1 above 0.3, background below: logits by hand."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images[:, 0]
        return torch.stack([torch.zeros_like(x), (x > 0.3).float(), 2 * (x > 0.6).float()], 1)


def test_measures_dice_and_area_per_class_by_hand(response):
    images = torch.tensor([[[[0.0, 0.4, 0.7, 0.7]]]])  # predicted 0, 1, 2, 2
    masks = torch.tensor([[[0, 1, 1, 2]]])
    result = response.measure(Threshold(), images, masks, ["ps", "fh"])
    assert result["dice_ps"] == pytest.approx(2 * 1 / (1 + 2))  # one of one predicted PS pixel is in two true ones
    assert result["dice_fh"] == pytest.approx(2 * 1 / (2 + 1))
    assert result["dice"] == pytest.approx(2 / 3)
    assert result["area_ratio_ps"] == pytest.approx(0.5) and result["area_ratio_fh"] == pytest.approx(2.0)


def test_intensity_noise_ignores_the_image_spread_and_image_std_noise_scales_with_it(response):
    images = torch.zeros(1, 1, 64, 64)
    images[0, 0, ::2] = 0.2  # intensity std 0.1
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    by_intensity = response.intensity_noise(images, 0.05, gen()) - images
    by_std = response.image_std_noise(images, 0.05, gen()) - images
    assert by_intensity.abs().max() <= 0.1 + 1e-7  # clipped to 2σ
    assert by_intensity.std().item() == pytest.approx(0.05, rel=0.15)
    assert by_std.std().item() == pytest.approx(0.05 * 0.1, rel=0.15)


def test_respond_gives_one_record_per_unit_and_level_with_sigma_zero_clean(response):
    images = torch.tensor([[[[0.0, 0.4, 0.7, 0.7]]]])
    masks = torch.tensor([[[0, 1, 2, 2]]])
    records = response.respond(Threshold(), images, masks, ["ps", "fh"], [0.0, 0.5], seed=0)
    assert [(r["unit"], r["sigma"]) for r in records] == [("intensity", 0.0), ("intensity", 0.5), ("image std", 0.0), ("image std", 0.5)]
    assert records[0]["dice"] == records[2]["dice"] == 1.0  # no noise: the thresholds are exact


def test_intensity_spread_by_hand(response):
    images = torch.tensor([[[[0.0, 1.0]]], [[[0.5, 0.5]]]])  # stds 0.5 and 0
    spread = response.intensity_spread(images)
    assert spread == {"mean_intensity": 0.5, "image_std_mean": 0.25, "image_std_min": 0.0, "image_std_max": 0.5}


def test_checkpoint_networks_loads_each_student_and_teacher_and_refuses_a_bare_path(response, tmp_path):
    import argparse

    from sonoseg.models import build_network

    student = build_network("unet_small", num_classes=3)
    checkpoint = {"model": {"name": "unet_small"}, "num_classes": 3, "iteration": 7, "networks": {"student": student.state_dict()}}
    torch.save(checkpoint, tmp_path / "last.pt")
    loaded = list(response.checkpoint_networks(argparse.ArgumentParser(), [f"last={tmp_path / 'last.pt'}"]))
    assert [(label, role, c["iteration"]) for label, _, c, role, _ in loaded] == [("last", "student", 7)]
    assert all(torch.equal(a, b) for a, b in zip(loaded[0][4].state_dict().values(), student.state_dict().values()))
    with pytest.raises(SystemExit):
        list(response.checkpoint_networks(argparse.ArgumentParser(), [str(tmp_path / "last.pt")]))


def test_checkpoint_networks_rebuilds_roles_of_their_own_architecture_through_the_method(response, tmp_path):
    import argparse

    from sonoseg.ssl.base import build_method

    settings = {"transformer_options": {"embed_dim": 12, "depths": [1, 1, 1, 1]}}
    infodiv = build_method("infodiv", settings, {"name": "unet_small"}, num_classes=3)
    networks = {role: infodiv.inner(role).state_dict() for role in ("student", "transformer", "transformer_teacher")}
    checkpoint = {"method": "infodiv", "settings": settings, "model": {"name": "unet_small"}, "num_classes": 3,
                  "iteration": 9, "networks": networks}  # fmt: skip
    torch.save(checkpoint, tmp_path / "best.pt")
    item = [f"best={tmp_path / 'best.pt'}"]
    loaded = list(response.checkpoint_networks(argparse.ArgumentParser(), item, ("student", "transformer", "teacher")))
    assert [(role, type(net).__name__) for _, _, _, role, net in loaded] == [("student", "UNeXt"), ("transformer", "SwinUNet")]
    for _, _, _, role, net in loaded:
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), networks[role].values()))
    with pytest.raises(SystemExit):  # none of the asked networks is in it
        list(response.checkpoint_networks(argparse.ArgumentParser(), item, ("teacher",)))
