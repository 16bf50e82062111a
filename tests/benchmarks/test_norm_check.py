"""The BatchNorm check: re-estimated running statistics and the train/eval gap, by hand on a one-layer network."""

from __future__ import annotations

import pytest
import torch
from support.scripts import BENCHMARKS, load_script
from torch import nn


@pytest.fixture(scope="module")
def norm_check():
    return load_script(BENCHMARKS / "norm_check.py")


class SignNet(nn.Module):
    """Normalises, then class 1 where the result is positive, class 2 where it is negative, background at 0."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(1, affine=False)  # running statistics (0, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        y = self.norm(images)[:, 0]
        return torch.stack([torch.zeros_like(y), y, -y], 1)


def test_mode_gap_compares_running_and_batch_statistics_by_hand(norm_check):
    net = SignNet().eval()
    images = torch.tensor([[[[1.0, 3.0]]], [[[1.0, 3.0]]]])  # batch mean 2
    gap = norm_check.mode_gap(net, images, batch=2, num_classes=3)
    assert gap["share_eval"] == [0.0, 1.0, 0.0]  # (x - 0) / 1 > 0 everywhere
    assert gap["share_train"] == [0.0, 0.5, 0.5]  # (x - 2) / 1: -1 and +1
    assert gap["softmax_mse"] > 0.01
    assert net.norm.running_mean.item() == 0.0 and not net.training  # the network is left as it was


def test_recalibrated_averages_the_batch_statistics_and_keeps_the_weights(norm_check):
    net = SignNet().eval()
    images = torch.tensor([[[[1.0, 1.0]]], [[[3.0, 3.0]]]])  # one image per batch: means 1 and 3, variances 0
    recalibrated = norm_check.recalibrated(net, images, batch=1)
    assert recalibrated.norm.running_mean.item() == pytest.approx(2.0)
    assert recalibrated.norm.running_var.item() == pytest.approx(0.0)
    assert not recalibrated.training and net.norm.running_mean.item() == 0.0
    predicted = recalibrated(images).argmax(1)
    assert predicted.flatten().tolist() == [2, 2, 1, 1]  # below the new mean of 2, then above it
