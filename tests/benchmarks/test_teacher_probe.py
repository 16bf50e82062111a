"""The teacher probe: the replayed pre-a4f7e8c EMA update and the measures, by hand on tiny maps."""

from __future__ import annotations

import pytest
import torch
from support.scripts import BENCHMARKS, load_script
from torch import nn

from sonoseg.ssl.ema import ema_update


@pytest.fixture(scope="module")
def probe():
    return load_script(BENCHMARKS / "teacher_probe.py")


def test_copy_update_copies_statistics_where_the_current_update_averages_them(probe):
    student = nn.BatchNorm1d(1)
    student.train()(torch.tensor([[1.0], [3.0]]))  # batch mean 2, unbiased var 2: running (0.2, 1.1)
    copied, averaged = nn.BatchNorm1d(1), nn.BatchNorm1d(1)  # running (0, 1)
    with torch.no_grad():
        student.weight.fill_(3.0)
    assert probe.copy_statistics_update(copied, student, step=1, decay=0.99) == 0.5
    ema_update(averaged, student, step=1, decay=0.99)
    assert copied.weight.item() == averaged.weight.item() == pytest.approx(2.0)  # parameters: averaged by both
    assert copied.running_mean.item() == pytest.approx(0.2)
    assert copied.running_var.item() == pytest.approx(1.1)
    assert averaged.running_mean.item() == pytest.approx(0.1)
    assert averaged.running_var.item() == pytest.approx(1.05)


class FixedLogits(nn.Module):
    """Returns the logits it was given for each input batch size, whatever the images."""

    def __init__(self, by_batch: dict[int, torch.Tensor]) -> None:
        super().__init__()
        self.by_batch = by_batch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.by_batch[images.shape[0]]


def test_measures_by_hand(probe):
    # val: 2 cases of 1x4 pixels, 2 classes; case 0 predicted exactly, case 1 misses its one foreground pixel
    masks = torch.tensor([[[0, 1, 1, 0]], [[0, 0, 0, 1]]])
    val_logits = torch.zeros(2, 2, 1, 4)
    val_logits[0, 1, 0, 1:3] = 5.0
    # unlabelled: 3 images; image 0 half foreground (sure), image 1 none (unsure: p 0.5), image 2 none (sure)
    unlabelled_logits = torch.zeros(3, 2, 1, 4)
    unlabelled_logits[0, 1, 0, :2] = 5.0
    unlabelled_logits[0, 0, 0, 2:] = 5.0
    unlabelled_logits[2, 0] = 5.0
    net = FixedLogits({2: val_logits, 3: unlabelled_logits})
    m = probe.measure(net, torch.zeros(2, 1, 1, 4), masks, torch.zeros(3, 1, 1, 4), num_classes=2)
    assert m["val_dice"] == pytest.approx(0.5)  # Dice 1 and 0
    assert m["val_poor_cases"] == 1
    assert m["val_area_ratio"] == pytest.approx(2 / 3)  # 2 predicted foreground pixels of 3 true
    assert m["unlabelled_foreground"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert m["unlabelled_empty"] == 2
    assert m["unlabelled_confident"] == pytest.approx(8 / 12)  # image 1's 4 pixels sit at 0.5
    assert net.training  # put back in the mode it came in
