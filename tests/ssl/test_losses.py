"""Shared SSL losses on tiny tensors with hand-computed expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sonoseg.ssl.losses import (
    class_ceiling_thresholds,
    class_share_thresholds,
    confidence_masked_ce,
    confidence_masked_dice,
    correlation_guidance_kl,
    divergence_loss,
    iic_mutual_information,
    info_nce,
    pairwise_similarity_distillation,
    pseudo_label_shares,
    pseudo_label_threshold,
    sdm_ground_truth,
    soft_dice_loss,
    softmax_mse,
    supervised_loss,
)


def maps(*pixels: tuple[float, ...]) -> torch.Tensor:
    """A (1, C, 1, P) probability map from per-pixel class distributions."""
    return torch.tensor(pixels, dtype=torch.float32).t()[None, :, None, :]


def onehot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return F.one_hot(labels, classes).movedim(-1, 1).float()


# ------------------------------------------------------------------ correlation guidance


def test_correlation_guidance_is_zero_for_identical_features() -> None:
    features = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    loss = correlation_guidance_kl(features, features.clone(), 5, 0.1, torch.Generator().manual_seed(1))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_correlation_guidance_two_positions_by_hand() -> None:
    # Student positions (1, 0) and (0, 1): dot products [[1, 0], [0, 1]].
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    # Teacher positions (2, 0) and (3, 0): normalised to (1, 0) twice, dot products [[1, 1], [1, 1]].
    teacher = torch.tensor([[2.0, 3.0], [0.0, 0.0]]).view(1, 2, 1, 2)
    # Temperature 1. Teacher rows: softmax([1, 1]) = (1/2, 1/2).
    # Student row 1: softmax([1, 0]) = (e/(e+1), 1/(e+1)); row 2 is its mirror image.
    # KL(row 1) = 1/2 log((1/2) / (e/(e+1))) + 1/2 log((1/2) / (1/(e+1)))
    #           = 1/2 [log((e+1)/2) - 1] + 1/2 log((e+1)/2) = log((e+1)/2) - 1/2 = KL(row 2).
    expected = math.log((math.e + 1) / 2) - 0.5  # 0.120115...
    loss = correlation_guidance_kl(student, teacher, n_positions=2, temperature=1.0)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # A temperature of 0.5 doubles the scores: the same sum with e^2 in place of e.
    loss = correlation_guidance_kl(student, teacher, n_positions=2, temperature=0.5)
    assert loss.item() == pytest.approx(math.log((math.e**2 + 1) / 2) - 1.0, abs=1e-6)


def test_correlation_guidance_detaches_teacher_and_samples_reproducibly() -> None:
    gen = torch.Generator().manual_seed(3)
    student = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
    teacher = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
    first = correlation_guidance_kl(student, teacher, 6, 0.2, torch.Generator().manual_seed(9))
    second = correlation_guidance_kl(student, teacher, 6, 0.2, torch.Generator().manual_seed(9))
    assert first.item() == second.item() > 0
    first.backward()
    assert student.grad is not None and teacher.grad is None


# ------------------------------------------------------------------ IIC


@pytest.mark.parametrize("classes", [2, 3])
def test_iic_identical_even_one_hot_reaches_minus_log_c(classes: int) -> None:
    labels = torch.arange(classes).repeat(4).view(1, 1, -1)  # every class on the same number of pixels
    p = onehot(labels, classes)
    assert iic_mutual_information(p, p.clone()).item() == pytest.approx(-math.log(classes), abs=1e-5)


def test_iic_independent_inputs_give_zero() -> None:
    uniform = torch.full((2, 3, 4, 4), 1 / 3)
    assert iic_mutual_information(uniform, uniform).item() == pytest.approx(0.0, abs=1e-6)
    gen = torch.Generator().manual_seed(0)
    a = onehot(torch.randint(0, 2, (1, 100, 100), generator=gen), 2)
    b = onehot(torch.randint(0, 2, (1, 100, 100), generator=gen), 2)
    assert abs(iic_mutual_information(a, b).item()) < 1e-3


def test_iic_small_joint_by_hand() -> None:
    # Two pixels, both inputs (1, 0) then (1/2, 1/2). Outer products [[1, 0], [0, 0]] and [[1/4] * 2] * 2,
    # mean P = [[5/8, 1/8], [1/8, 1/8]] (symmetric, sums to 1), marginals (3/4, 1/4).
    p = maps((1.0, 0.0), (0.5, 0.5))
    mi = (
        5 / 8 * math.log((5 / 8) / (3 / 4 * 3 / 4))
        + 2 * (1 / 8) * math.log((1 / 8) / (3 / 4 * 1 / 4))
        + 1 / 8 * math.log((1 / 8) / (1 / 4 * 1 / 4))
    )  # 0.051127...
    assert iic_mutual_information(p, p).item() == pytest.approx(-mi, abs=1e-6)


def test_iic_symmetrises_the_joint() -> None:
    # One pixel, p1 = (1, 0), p2 = (0, 1): P = [[0, 1], [0, 0]] -> (P + P^T)/2 = [[0, 1/2], [1/2, 0]],
    # marginals (1/2, 1/2), MI = 2 * 1/2 * log((1/2) / (1/4)) = log 2. Unsymmetrised it would be 0.
    assert iic_mutual_information(maps((1.0, 0.0)), maps((0.0, 1.0))).item() == pytest.approx(-math.log(2), abs=1e-5)


# ------------------------------------------------------------------ divergence


def test_divergence_is_zero_for_identical_one_hot() -> None:
    p = onehot(torch.tensor([[[0, 1], [2, 1]]]), 3)
    assert divergence_loss(p, p.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_divergence_of_identical_soft_maps_is_their_entropy() -> None:
    # KL = 0 and H(p) + H(p) - H(p) = H(p) = -(0.8 log 0.8 + 0.2 log 0.2).
    p = maps((0.8, 0.2))
    expected = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))  # 0.500402...
    assert divergence_loss(p, p.clone()).item() == pytest.approx(expected, abs=1e-6)


def test_divergence_two_class_single_pixel_by_hand() -> None:
    p1, p2 = maps((0.8, 0.2)), maps((0.5, 0.5))
    kl = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)  # 0.192745
    h1 = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))  # 0.500402
    h2 = math.log(2)  # 0.693147
    hm = -(0.65 * math.log(0.65) + 0.35 * math.log(0.35))  # 0.647447, the mixture is (0.65, 0.35)
    expected = kl + h1 + h2 - hm  # 0.738848
    assert divergence_loss(p1, p2).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.738848, abs=1e-6)


# ------------------------------------------------------------------ InfoNCE


def test_info_nce_two_by_two_by_hand() -> None:
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Identical orthonormal pairs, temperature 1: every row and column is softmax([1, 0]) at the positive.
    assert info_nce(z1, z1.clone(), 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    # z2 rows (1, 1) -> (r, r) with r = 1/sqrt 2, and (0, 1). S = z1 z2^T = [[r, 0], [r, 1]].
    z2 = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    r = 1 / math.sqrt(2)
    rows = (math.log(1 + math.exp(0 - r)) + math.log(1 + math.exp(r - 1))) / 2  # targets S[0,0], S[1,1]
    columns = (math.log(1 + math.exp(r - r)) + math.log(1 + math.exp(0 - 1))) / 2  # S^T = [[r, r], [0, 1]]
    assert info_nce(z1, z2, 1.0).item() == pytest.approx(0.5 * (rows + columns), abs=1e-6)
    # Temperature 0.5 doubles the scores of the identical pairs.
    assert info_nce(z1, z1.clone(), 0.5).item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)


def test_info_nce_prefers_aligned_pairs() -> None:
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    noisy = z + 0.1 * torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    shuffled = noisy[torch.tensor([3, 0, 6, 1, 7, 2, 4, 5])]
    assert info_nce(z, noisy, 0.5) < info_nce(z, shuffled, 0.5)


# ------------------------------------------------------------------ pair-wise distillation


def test_pairwise_distillation() -> None:
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(2, 8, 6, 6, generator=gen, requires_grad=True)
    assert pairwise_similarity_distillation(student, student.detach().clone() * 3.0).item() == pytest.approx(0.0, abs=1e-6)
    teacher = torch.randn(2, 5, 6, 6, generator=gen, requires_grad=True)  # channel counts may differ
    loss = pairwise_similarity_distillation(student, teacher)
    assert loss.item() > 0
    loss.backward()
    assert student.grad is not None and teacher.grad is None
    # Two rows by hand: student rows orthogonal (cosine 0), teacher rows parallel (cosine 1);
    # the matrices [[1, 0], [0, 1]] and [[1, 1], [1, 1]] differ by 1 in 2 of 4 entries: MSE 1/2.
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    assert pairwise_similarity_distillation(s, t).item() == pytest.approx(0.5, abs=1e-6)


# ------------------------------------------------------------------ SDM


def test_sdm_ground_truth_sign_boundary_range_and_absent_class() -> None:
    mask = np.zeros((1, 9, 9), np.int64)
    mask[0, 2:7, 2:7] = 1  # a 5x5 square of class 1; class 2 is absent
    sdm = sdm_ground_truth(mask, num_classes=3)
    assert isinstance(sdm, np.ndarray) and sdm.shape == (1, 2, 9, 9) and sdm.dtype == np.float32
    square = sdm[0, 0]
    inside = np.zeros((9, 9), bool)
    inside[2:7, 2:7] = True
    boundary = inside.copy()
    boundary[3:6, 3:6] = False  # the square's outer ring of pixels
    assert np.all(square[boundary] == 0)
    assert np.all(square[inside & ~boundary] < 0)
    assert np.all(square[~inside] > 0)
    assert square.min() == pytest.approx(-1.0) and square.max() == pytest.approx(1.0)
    # The centre is 3 pixels from the outside (the farthest inside): -3/3 = -1. The corner (0, 0) is
    # the farthest outside pixel, sqrt(2^2 + 2^2) from the square; (1, 4) is 1 away: 1 / sqrt 8.
    assert square[4, 4] == pytest.approx(-1.0)
    assert square[1, 4] == pytest.approx(1 / math.sqrt(8), abs=1e-6)
    assert np.all(sdm[0, 1] == 0)  # the absent class


def test_sdm_ground_truth_torch_in_torch_out() -> None:
    mask = torch.zeros(2, 6, 6, dtype=torch.long)
    mask[1, 1:4, 1:4] = 2
    sdm = sdm_ground_truth(mask, num_classes=3)
    assert isinstance(sdm, torch.Tensor) and sdm.shape == (2, 2, 6, 6) and sdm.dtype == torch.float32
    assert torch.all(sdm[0] == 0) and torch.all(sdm[1, 0] == 0)
    assert sdm[1, 1, 2, 2] < 0 and sdm[1, 1, 5, 5] == 1.0 and sdm[1, 1, 1, 1] == 0
    assert sdm_ground_truth(mask[1], 3).shape == (2, 6, 6)


# ------------------------------------------------------------------ confidence-masked CE


def test_confidence_masked_ce_two_pixels_by_hand() -> None:
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    teacher = maps((0.9, 0.1), (0.4, 0.6))  # argmax 0 (confident) and 1 (not confident at 0.8)
    loss, fraction = confidence_masked_ce(logits, teacher, threshold=0.8)
    ce_first = math.log(1 + math.exp(-2))  # -log softmax([2, 0])[0]
    assert fraction.item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(ce_first / 2, abs=1e-6)  # summed over confident, divided by all
    loss, _ = confidence_masked_ce(logits, teacher, threshold=0.8, average_over="confident")
    assert loss.item() == pytest.approx(ce_first, abs=1e-6)
    loss, fraction = confidence_masked_ce(logits, teacher, threshold=0.5)  # both pass; pixel 2 -> class 1
    assert fraction.item() == 1.0
    assert loss.item() == pytest.approx((ce_first + math.log(2)) / 2, abs=1e-6)


def test_confidence_masked_ce_class_average_weighs_each_pseudo_class_equally() -> None:
    # three confident background pixels with CE log 2 each, one confident foreground pixel with CE
    # log(1 + e^-2), one unconfident pixel: per class mean, then the mean over the two classes
    logits = torch.tensor([[[[0.0, 0.0, 0.0, 0.0, 5.0]], [[0.0, 0.0, 0.0, 2.0, 0.0]]]])  # (1, 2, 1, 5)
    teacher = maps((0.9, 0.1), (0.9, 0.1), (0.9, 0.1), (0.1, 0.9), (0.6, 0.4))
    loss, fraction = confidence_masked_ce(logits, teacher, threshold=0.8, average_over="class")
    ce_foreground = math.log(1 + math.exp(-2))
    assert fraction.item() == pytest.approx(0.8)
    assert loss.item() == pytest.approx((math.log(2) + ce_foreground) / 2, abs=1e-6)
    pooled, _ = confidence_masked_ce(logits, teacher, threshold=0.8, average_over="confident")
    assert pooled.item() == pytest.approx((3 * math.log(2) + ce_foreground) / 4, abs=1e-6)
    only_background, _ = confidence_masked_ce(logits[..., :3], teacher[..., :3], 0.8, "class")
    assert only_background.item() == pytest.approx(math.log(2), abs=1e-6)  # an absent class does not dilute
    with pytest.raises(ValueError, match="'class'"):
        confidence_masked_ce(logits, teacher, 0.8, "pixels")


def test_confidence_masked_dice_scores_confident_pixels_only_by_hand() -> None:
    # pixel 1: confident background; pixel 2: confident foreground; pixel 3: not confident (left out)
    logits = torch.tensor([[[[0.0, 0.0, 9.0]], [[0.0, math.log(3.0), 0.0]]]])  # (1, 2, 1, 3)
    teacher = maps((0.9, 0.1), (0.2, 0.8), (0.5, 0.5))
    loss = confidence_masked_dice(logits, teacher, threshold=0.8)
    # student probabilities on pixels 1, 2: background (0.5, 0.25), foreground (0.5, 0.75)
    dice_background = 2 * 0.5 / (0.5 + 0.25 + 1)
    dice_foreground = 2 * 0.75 / (0.5 + 0.75 + 1)
    assert loss.item() == pytest.approx(1 - (dice_background + dice_foreground) / 2, abs=1e-5)
    perfect = torch.tensor([[[[20.0, -20.0, 0.0]], [[-20.0, 20.0, 0.0]]]])
    assert confidence_masked_dice(perfect, teacher, 0.8).item() == pytest.approx(0.0, abs=1e-5)


def test_confidence_masked_dice_only_confident_classes_leaves_out_a_class_with_no_confident_pixel() -> None:
    # 3 classes; the teacher is confident on pixels 1 (background) and 2 (class 1), never on class 2
    teacher = maps((0.9, 0.05, 0.05), (0.05, 0.9, 0.05), (0.2, 0.2, 0.6))
    logits = torch.zeros(1, 3, 1, 3, requires_grad=True)  # the student: 1/3 per class everywhere
    counted = confidence_masked_dice(logits, teacher, threshold=0.8)
    only = confidence_masked_dice(logits, teacher, threshold=0.8, only_confident_classes=True)
    # masked student mass per class on the 2 confident pixels: 2/3; each of classes 0 and 1 has 1 target pixel
    present = 1 - (2 * (1 / 3) + 1e-5) / (2 / 3 + 1 + 1e-5)
    absent = 1 - 1e-5 / (2 / 3 + 1e-5)  # class 2's empty target: about 1, whatever the student does
    assert counted.item() == pytest.approx((2 * present + absent) / 3, abs=1e-6)
    assert only.item() == pytest.approx(present, abs=1e-6)
    # near 0, the empty target's pull on class 2 grows as 1 / smooth; leaving it out removes it
    nearly_gone = torch.tensor([[[[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [[-15.0, -15.0, 0.0]]]], requires_grad=True)
    confidence_masked_dice(nearly_gone, teacher, 0.8).backward()
    pull = nearly_gone.grad[0, 2, 0, :2].abs().max().item()
    nearly_gone.grad = None
    confidence_masked_dice(nearly_gone, teacher, 0.8, only_confident_classes=True).backward()
    assert pull > 100 * nearly_gone.grad[0, 2, 0, :2].abs().max().item()
    nothing = confidence_masked_dice(logits, teacher, threshold=0.99, only_confident_classes=True)
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_confidence_masked_ce_is_zero_not_nan_when_nothing_passes() -> None:
    logits = torch.zeros(1, 2, 1, 2, requires_grad=True)
    for mode in ("all", "confident", "class"):
        loss, fraction = confidence_masked_ce(logits, maps((0.5, 0.5), (0.6, 0.4)), 0.95, mode)
        assert loss.item() == 0.0 and fraction.item() == 0.0 and not torch.isnan(loss)
        loss.backward()
        assert torch.all(logits.grad == 0)


def test_pseudo_label_shares_count_confident_pixels_per_class_by_hand() -> None:
    # pixel 1: confident background; 2: class 1 but not confident; 3: confident class 2; 4: confident class 1
    teacher = maps((0.96, 0.02, 0.02), (0.1, 0.85, 0.05), (0.01, 0.01, 0.98), (0.02, 0.97, 0.01)).requires_grad_()
    shares = pseudo_label_shares(teacher, threshold=0.95)
    assert {k: v.item() for k, v in shares.items()} == {"confident_share": 0.75, "pseudo_class1_share": 0.25, "pseudo_class2_share": 0.25}
    assert not any(v.requires_grad for v in shares.values())
    assert pseudo_label_shares(teacher, threshold=0.5)["pseudo_class1_share"].item() == 0.5


# ------------------------------------------------------------------ supervised, soft Dice, softmax MSE


def test_supervised_loss_perfect_logits_is_near_zero() -> None:
    target = torch.tensor([[[0, 1], [2, 1]]])
    assert supervised_loss(50.0 * onehot(target, 3), target).item() < 1e-4


def test_supervised_loss_is_half_ce_plus_dice() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=gen)
    target = torch.randint(0, 3, (2, 4, 4), generator=gen)
    ce = F.cross_entropy(logits, target)
    p, q = torch.softmax(logits, 1).flatten(2), onehot(target, 3).flatten(2)
    dice = (1 - (2 * (p * q).sum(-1) + 1e-5) / (p.sum(-1) + q.sum(-1) + 1e-5)).mean()
    assert supervised_loss(logits, target).item() == pytest.approx(0.5 * (ce + dice).item(), abs=1e-6)


def test_supervised_loss_matches_monai_dice_ce() -> None:
    from monai.losses import DiceCELoss

    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 5, generator=gen)
    target = torch.randint(0, 3, (2, 5, 5), generator=gen)
    reference = DiceCELoss(softmax=True, to_onehot_y=True, lambda_dice=0.5, lambda_ce=0.5)(logits, target[:, None])
    assert supervised_loss(logits, target).item() == pytest.approx(reference.item(), abs=1e-6)


def test_soft_dice_loss_hand_values() -> None:
    hard = onehot(torch.tensor([[[0, 1]]]), 2)
    assert soft_dice_loss(hard, hard.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # One pixel, (0.5, 0.5) against (1, 0): class 0 gives 1 - 2*0.5/1.5 = 1/3, class 1 gives 1 - 0/0.5 = 1.
    loss = soft_dice_loss(maps((0.5, 0.5)), maps((1.0, 0.0)), smooth=0.0)
    assert loss.item() == pytest.approx((1 / 3 + 1) / 2, abs=1e-6)


def test_softmax_mse_by_hand_and_detaches_teacher() -> None:
    a = torch.zeros(1, 2, 1, 1, requires_grad=True)  # softmax (1/2, 1/2)
    b = torch.tensor([[[[math.log(3)]], [[0.0]]]], requires_grad=True)  # softmax (3/4, 1/4)
    loss = softmax_mse(a, b)
    assert loss.item() == pytest.approx(1 / 16, abs=1e-7)  # both entries differ by 1/4
    loss.backward()
    assert a.grad is not None and b.grad is None


def test_class_share_thresholds_let_each_class_keep_its_surest_pixels_by_hand() -> None:
    # background at 0.99 and 0.9; class 1 labelled right but unsure, at 0.72, 0.6 and 0.5; class 2 nowhere
    teacher = maps((0.99, 0.005, 0.005), (0.9, 0.05, 0.05), (0.2, 0.72, 0.08), (0.35, 0.6, 0.05), (0.45, 0.5, 0.05))
    teacher.requires_grad_()
    half = class_share_thresholds(teacher, 0.95, 0.5)
    # the top ceil(0.5 * 2) = 1 background pixel is already over 0.95; the top ceil(0.5 * 3) = 2 of class 1 set its bar
    assert half.tolist() == pytest.approx([0.95, 0.6, 0.95])
    assert not half.requires_grad
    shares = pseudo_label_shares(teacher, half)
    assert shares["confident_share"].item() == pytest.approx(3 / 5) and shares["pseudo_class1_share"].item() == pytest.approx(2 / 5)
    assert class_share_thresholds(teacher, 0.95, 1.0).tolist() == pytest.approx([0.9, 0.5, 0.95])
    assert class_share_thresholds(teacher, 0.95, 0.0).tolist() == pytest.approx([0.95, 0.95, 0.95])
    # under the ceiling's bars (0.95 x 0.99, 0.95 x 0.72), class 1 still keeps its top two
    ceiling = class_ceiling_thresholds(teacher, 0.95)
    assert class_share_thresholds(teacher, ceiling, 0.5).tolist() == pytest.approx([0.95 * 0.99, 0.6, 0.95])


def test_pseudo_label_threshold_composes_the_ceiling_and_the_keep_share_and_the_shares_report_its_bars() -> None:
    # the teacher of the test above: class 1 labelled right but unsure (0.72, 0.6, 0.5)
    teacher = maps((0.99, 0.005, 0.005), (0.9, 0.05, 0.05), (0.2, 0.72, 0.08), (0.35, 0.6, 0.05), (0.45, 0.5, 0.05))
    assert pseudo_label_threshold(teacher, 0.95) == 0.95
    assert "threshold_class1" not in pseudo_label_shares(teacher, 0.95)
    ceiling = pseudo_label_threshold(teacher, 0.95, class_ceiling=True)
    assert ceiling.tolist() == pytest.approx([0.95 * 0.99, 0.95 * 0.72, 0.95])
    assert pseudo_label_threshold(teacher, 0.95, keep_share=0.5).tolist() == pytest.approx([0.95, 0.6, 0.95])
    both = pseudo_label_threshold(teacher, 0.95, class_ceiling=True, keep_share=0.5)
    assert both.tolist() == pytest.approx([0.95 * 0.99, 0.6, 0.95])
    shares = pseudo_label_shares(teacher, both)
    assert shares["threshold_class1"].item() == pytest.approx(0.6) and shares["threshold_class2"].item() == pytest.approx(0.95)
    assert "threshold_class0" not in shares  # background's bar is the rest's, not logged


@pytest.mark.parametrize("keep_share", [-0.1, 1.5])
def test_class_share_thresholds_refuse_a_share_outside_0_to_1(keep_share: float) -> None:
    with pytest.raises(ValueError, match="keep_share must be in"):
        class_share_thresholds(maps((0.9, 0.05, 0.05)), 0.95, keep_share)


def test_class_ceiling_thresholds_scale_each_class_by_its_top_confidence_by_hand() -> None:
    # background tops at 0.99; class 1 is never more sure than 0.72 (a capped class); class 2 is nowhere
    teacher = maps((0.99, 0.005, 0.005), (0.9, 0.05, 0.05), (0.2, 0.72, 0.08), (0.2, 0.7, 0.1)).requires_grad_()
    thresholds = class_ceiling_thresholds(teacher, 0.95)
    assert thresholds.tolist() == pytest.approx([0.95 * 0.99, 0.95 * 0.72, 0.95])
    assert not thresholds.requires_grad
    # a fixed 0.95 teaches nothing of class 1; scaled, both its pixels pass, and background's 0.9 does not
    assert pseudo_label_shares(teacher, 0.95)["pseudo_class1_share"].item() == 0.0
    shares = pseudo_label_shares(teacher, thresholds)
    assert shares["confident_share"].item() == 0.75 and shares["pseudo_class1_share"].item() == 0.5
    logits = torch.zeros(1, 3, 1, 4)
    loss, fraction = confidence_masked_ce(logits, teacher, thresholds, average_over="confident")
    assert fraction.item() == 0.75 and loss.item() == pytest.approx(math.log(3), abs=1e-6)
    # the Dice masks the same three pixels: the background target is pixel 1, class 1's pixels 3 and 4
    masked = teacher.detach().clone()
    masked[..., 1] = 0.0
    assert confidence_masked_dice(logits, teacher, thresholds).item() == pytest.approx(
        confidence_masked_dice(logits, masked, 0.5).item(), abs=1e-6
    )
