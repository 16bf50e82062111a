"""The teacher probe: the replayed pre-a4f7e8c EMA update and the measures, by hand on tiny maps; the work
directory's sets, on a tiny synthetic store."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from support.scripts import BENCHMARKS, load_script
from torch import nn

from sonoseg.io.readers import SyntheticReader
from sonoseg.io.store import SampleStore, ingest
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
    m = probe.measure(net, torch.zeros(2, 1, 1, 4), masks, torch.zeros(3, 1, 1, 4), class_names=["head"])
    assert m["val_dice"] == pytest.approx(0.5)  # Dice 1 and 0
    assert m["val_poor_cases"] == 1
    assert m["val_area_ratio"] == pytest.approx(2 / 3)  # 2 predicted foreground pixels of 3 true
    assert m["unlabelled_foreground"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert m["unlabelled_empty"] == 2
    assert m["unlabelled_confident"] == pytest.approx(8 / 12)  # image 1's 4 pixels sit at 0.5
    assert net.training  # put back in the mode it came in
    assert not any(key.endswith("_head") for key in m)  # one class: the union says it all


def test_measures_each_class_by_hand_when_there_are_several(probe):
    # val: 1 case of 1x6 pixels: a small class 1 (2 px) wholly missed, a large class 2 (3 px) over-predicted by 1
    masks = torch.tensor([[[1, 1, 2, 2, 2, 0]]])
    val_logits = torch.zeros(1, 3, 1, 6)
    val_logits[0, 2, 0, 1:5] = 5.0  # predicted 0 2 2 2 2 0
    # unlabelled: 2 images; image 0 predicts class 1 on 3 of 6 pixels, image 1 class 2 on all 6
    unlabelled_logits = torch.zeros(2, 3, 1, 6)
    unlabelled_logits[0, 1, 0, :3] = 5.0
    unlabelled_logits[0, 0, 0, 3:] = 5.0
    unlabelled_logits[1, 2] = 5.0
    net = FixedLogits({1: val_logits, 2: unlabelled_logits})
    m = probe.measure(net, torch.zeros(1, 1, 1, 6), masks, torch.zeros(2, 1, 1, 6), class_names=["small", "large"])
    assert m["val_dice_small"] == 0.0
    assert m["val_dice_large"] == pytest.approx(2 * 3 / (4 + 3))
    assert m["val_dice"] == pytest.approx(3 / 7)  # mean of the two
    assert (m["val_poor_cases_small"], m["val_poor_cases_large"], m["val_poor_cases"]) == (1, 0, 0)
    assert m["val_area_ratio_small"] == 0.0
    assert m["val_area_ratio_large"] == pytest.approx(4 / 3)
    assert m["val_area_ratio"] == pytest.approx(4 / 5)  # the union hides the missing class
    assert m["unlabelled_foreground_small"] == pytest.approx(3 / 12)
    assert m["unlabelled_foreground_large"] == pytest.approx(6 / 12)


def test_markdown_gives_each_class_a_table_of_its_own(probe):
    union = {"student_val_dice": 0.5, "teacher_val_dice": 0.4, "teacher_val_area_ratio": 0.9,
             "teacher_unlabelled_foreground": 0.1, "teacher_unlabelled_empty": 2, "teacher_unlabelled_confident": 0.95,
             "student_val_poor_cases": 3}  # fmt: skip
    per_class = {f"{role}_{key}_ps": value for role in ("student", "teacher") for key, value in
                 (("val_dice", 0.25), ("val_area_ratio", 0.5), ("val_poor_cases", 7), ("unlabelled_foreground", 0.0123))}  # fmt: skip
    text = probe.markdown("run", "cmd", [{"iteration": 100, **union, **per_class}])
    assert "ps alone:" in text
    assert "| 100 | 0.250 | 0.50 | 7 | 0.0123 | 0.250 | 0.50 | 7 | 0.0123 |" in text
    assert "alone:" not in probe.markdown("run", "cmd", [{"iteration": 100, **union}])


def test_loss_means_average_the_train_losses_and_skip_the_rate_and_the_final_val_entry(probe):
    window = [
        {"train/total": 1.0, "train/sup": 0.5, "train/lr": 0.01},
        {"train/total": 3.0, "train/sup": 1.5, "train/lr": 0.02},
        {"val/dice": 0.9},  # what the trainer logs alone after its last iteration
    ]
    assert probe.loss_means(window) == {"total": 2.0, "sup": 1.0}


def test_load_work_reads_the_split_and_class_names_and_refuses_another_ratio(probe, tmp_path):
    store = tmp_path / "data" / "02_intermediate"
    manifest, _ = ingest(SyntheticReader(10, {"size": 32, "seed": 0}), SampleStore(store), progress=False)
    (store / "dataset.json").write_text(json.dumps({"classes": {"0": "background", "1": "ps", "2": "fh"}}))
    for folder in ("03_primary", "08_reporting"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    manifest.to_parquet(tmp_path / "data/03_primary/manifest_validated.parquet")
    split = ["labelled"] * 2 + ["unlabelled"] * 4 + ["val"] * 3 + ["test"]
    pd.DataFrame({"sample_id": manifest["sample_id"], "split": split}).to_csv(tmp_path / "data/03_primary/splits.csv", index=False)
    (tmp_path / "data/08_reporting/split_report.json").write_text(json.dumps({"config": {"label_ratio": 0.2}}))

    sets, names = probe.load_work(tmp_path, 16, 0.2)
    images, masks = probe.val_tensors(sets)

    assert names == ["ps", "fh"] and (sets.n_labelled, sets.n_unlabelled) == (2, 4)
    assert images.shape == (3, 1, 16, 16) and masks.shape == (3, 16, 16)
    assert probe.load_work(tmp_path, 16)[0].n_labelled == 2  # no ratio given: no check
    with pytest.raises(ValueError, match=r"split is at label ratio 0.2, not 0.05"):
        probe.load_work(tmp_path, 16, 0.05)
