"""Ramp-ups, learning-rate schedules and EMA teachers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sonoseg.ssl.base import Batch, StepContext, build_method
from sonoseg.ssl.ema import batch_norms, batch_statistics, ema_alpha, ema_update, make_ema_copy
from sonoseg.ssl.ramps import consistency_weight, cosine_lr, poly_lr, sigmoid_rampup


def test_sigmoid_rampup_values() -> None:
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5 * 0.25))  # (1 - 1/2)^2 = 1/4
    assert sigmoid_rampup(100, 100) == 1.0
    assert sigmoid_rampup(1000, 100) == 1.0
    assert sigmoid_rampup(0, 0) == 1.0 and sigmoid_rampup(7, 0) == 1.0
    assert sigmoid_rampup(20, 40.0) == pytest.approx(math.exp(-1.25))  # fractional T from a fraction of steps
    with pytest.raises(ValueError):
        sigmoid_rampup(0, -1)


def test_consistency_weight_scales_the_ramp() -> None:
    assert consistency_weight(50, 0.1, 100) == pytest.approx(0.1 * math.exp(-1.25))
    assert consistency_weight(200, 0.1, 100) == pytest.approx(0.1)


def test_poly_and_cosine_lr() -> None:
    assert poly_lr(0.01, 0, 100) == pytest.approx(0.01)
    assert poly_lr(0.01, 50, 100) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 100, 100) == 0.0 and poly_lr(0.01, 150, 100) == 0.0
    assert cosine_lr(1.0, 0, 100) == pytest.approx(1.0)
    assert cosine_lr(1.0, 50, 100) == pytest.approx(0.5)
    assert cosine_lr(1.0, 100, 100) == pytest.approx(0.0, abs=1e-12)
    # Warm-up of 10: (t + 1) / 10, then cosine over the remaining 90 steps.
    assert cosine_lr(1.0, 0, 100, warmup=10) == pytest.approx(0.1)
    assert cosine_lr(1.0, 9, 100, warmup=10) == pytest.approx(1.0)
    assert cosine_lr(1.0, 10, 100, warmup=10) == pytest.approx(1.0)
    assert cosine_lr(1.0, 55, 100, warmup=10) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        cosine_lr(1.0, 0, 10, warmup=10)
    with pytest.raises(ValueError):
        poly_lr(1.0, 0, 0)


def test_ema_alpha_schedule() -> None:
    assert ema_alpha(0, 0.99) == 0.0
    assert ema_alpha(1, 0.99) == 0.5
    assert ema_alpha(9, 0.99) == pytest.approx(0.9)
    assert ema_alpha(10_000, 0.99) == 0.99


def test_ema_update_by_hand_averages_statistics_and_copies_counters() -> None:
    student = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1))
    teacher = make_ema_copy(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    with torch.no_grad():
        teacher[0].weight.fill_(1.0)
        student[0].weight.fill_(3.0)
        student[0].bias.fill_(0.0)
    student.train()(torch.tensor([[1.0], [2.0], [4.0]]))  # moves the student's BN running statistics
    # Linear outputs 3, 6, 12: batch mean 7, unbiased var 21; momentum 0.1 from (0, 1) gives (0.7, 3.0)
    assert student[1].running_mean.item() == pytest.approx(0.7)
    assert student[1].running_var.item() == pytest.approx(3.0)
    alpha = ema_update(teacher, student, step=1, decay=0.99)  # alpha = min(1 - 1/2, 0.99) = 0.5
    assert alpha == 0.5
    assert teacher[0].weight.item() == pytest.approx(0.5 * 1.0 + 0.5 * 3.0)  # 2.0
    assert teacher[1].running_mean.item() == pytest.approx(0.5 * 0.0 + 0.5 * 0.7)  # the teacher's were (0, 1)
    assert teacher[1].running_var.item() == pytest.approx(0.5 * 1.0 + 0.5 * 3.0)
    assert teacher[1].num_batches_tracked.item() == 1  # an integer counter: copied
    assert student[0].weight.item() == 3.0  # the student is untouched
    ema_update(teacher, student, step=0, decay=0.99)  # alpha 0: the teacher becomes the student
    assert teacher[0].weight.item() == 3.0
    with pytest.raises(ValueError):
        ema_update(nn.Linear(1, 1), nn.Linear(1, 2, bias=False), 5, 0.99)


def test_batch_statistics_normalises_with_the_batch_and_restores_everything() -> None:
    teacher = nn.Sequential(nn.BatchNorm1d(1), nn.Dropout(0.5)).eval()  # running statistics (0, 1)
    batch = torch.tensor([[1.0], [2.0], [3.0]])  # mean 2, biased var 2/3
    assert torch.equal(teacher(batch), batch / (1 + 1e-5) ** 0.5)  # eval: (x - 0) / sqrt(1 + eps)

    with batch_statistics(teacher):
        normalised = teacher(batch)
        assert teacher[0].training and not teacher[1].training  # dropout stays off

    assert torch.allclose(normalised, (batch - 2.0) / (2 / 3 + 1e-5) ** 0.5)
    assert teacher[0].running_mean.item() == 0.0 and teacher[0].running_var.item() == 1.0  # untouched
    assert not teacher[0].training and teacher[0].momentum == 0.1


@pytest.mark.parametrize("name", ["mean_teacher", "simcvd"])
def test_teacher_norm_batch_changes_only_the_consistency_term(name: str) -> None:
    generator = torch.Generator().manual_seed(0)
    images, masks = torch.rand(4, 1, 32, 32, generator=generator), torch.randint(0, 3, (2, 32, 32), generator=generator)
    terms = {}
    for norm in ("running", "batch"):
        torch.manual_seed(0)
        method = build_method(name, {"teacher_norm": norm, "noise_sigma": 0.0}, {"name": "unet_small"}, 3)
        method.train()
        with torch.no_grad():  # running statistics far from these batches', so the two norms differ
            for buffer_name, buffer in method.inner("teacher").named_buffers():
                if buffer_name.endswith("running_mean"):
                    buffer.fill_(5.0)
        terms[norm] = method.losses(Batch(images[:2], masks), Batch(images[2:]), StepContext(5, 10, torch.Generator()))
        assert not method.networks["teacher"].training  # the teacher is back in eval mode
    assert torch.equal(terms["running"]["sup"], terms["batch"]["sup"])
    # the teacher is still the student's copy and sees the same images (simcvd's: labelled and unlabelled as one
    # batch, as its student does): normalised alike, it agrees exactly
    assert terms["batch"]["consistency"].item() == 0.0 and terms["running"]["consistency"].item() > 1e-3


@pytest.mark.parametrize("name", ["mean_teacher", "hdc", "simcvd"])
def test_teacher_norm_sets_how_each_ema_teacher_normalises(name: str) -> None:
    generator = torch.Generator().manual_seed(0)
    images, masks = torch.rand(4, 1, 32, 32, generator=generator), torch.randint(0, 3, (2, 32, 32), generator=generator)
    for norm, expected_mode in (("running", False), ("batch", True)):
        torch.manual_seed(0)
        method = build_method(name, {"teacher_norm": norm}, {"name": "unet_small"}, 3)
        method.train()
        teacher = method.inner("teacher")
        norms = batch_norms(teacher)
        modes: list[bool] = []
        for m in norms:
            m.register_forward_pre_hook(lambda module, _: modes.append(module.training))
        running = [m.running_mean.clone() for m in norms]
        method.losses(Batch(images[:2], masks), Batch(images[2:]), StepContext(5, 10, torch.Generator()))
        assert modes and set(modes) == {expected_mode}, norm  # hdc's teacher skips its noisy decoder
        assert all(torch.equal(m.running_mean, r) for m, r in zip(norms, running, strict=True))  # untouched
        assert not any(m.training for m in norms)  # back in eval mode
    with pytest.raises(ValueError, match=f"training.{name}.teacher_norm is 'batches'"):
        build_method(name, {"teacher_norm": "batches"}, {"name": "unet_small"}, 3)

