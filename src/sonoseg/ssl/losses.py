"""Losses shared by the semi-supervised methods (DESIGN.md §4).

Conventions: batch-first; logits and probabilities are ``(N, C, H, W)`` with C classes, background
included; integer targets are ``(N, H, W)``. Every loss returns a 0-d float32 tensor (inputs are cast
to float32, so they are safe under autocast). Teacher inputs are detached where the docstring says so.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "class_ceiling_thresholds",
    "class_share_thresholds",
    "confidence_masked_ce",
    "confidence_masked_dice",
    "correlation_guidance_kl",
    "divergence_loss",
    "iic_mutual_information",
    "info_nce",
    "pairwise_similarity_distillation",
    "pseudo_label_shares",
    "pseudo_label_threshold",
    "sdm_ground_truth",
    "soft_dice_loss",
    "softmax_mse",
    "supervised_loss",
]

_SMOOTH = 1e-5  # MONAI DiceLoss's smooth_nr and smooth_dr defaults


def _check_maps(name: str, a: Tensor, b: Tensor) -> None:
    if a.ndim < 3 or a.shape != b.shape:
        raise ValueError(f"{name} needs two (N, C, ...) maps of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def soft_dice_loss(probs: Tensor, target_probs: Tensor, smooth: float = _SMOOTH) -> Tensor:
    """Soft Dice loss between two probability maps (Dice cross-supervision, co-training).

    Per sample and class, ``1 - (2 Σ p q + smooth) / (Σ p + Σ q + smooth)`` over pixels; the mean over
    samples and classes (background included) — MONAI ``DiceLoss``'s defaults. It is 0 for identical
    one-hot maps; identical *soft* maps give ``1 - Σp² / Σp > 0``. A class absent from both maps of a
    sample scores 0 loss for that sample. ``target_probs`` is used as given: detach it to make it a target.

    Args:
        probs: ``(N, C, H, W)`` probabilities (softmax outputs).
        target_probs: ``(N, C, H, W)`` probabilities or one-hot maps.
        smooth: added to numerator and denominator.

    Raises:
        ValueError: when the shapes differ.
    """
    _check_maps("soft_dice_loss", probs, target_probs)
    return _soft_dice_per_class(probs, target_probs, smooth).mean()


def _soft_dice_per_class(probs: Tensor, target_probs: Tensor, smooth: float = _SMOOTH) -> Tensor:
    """``(N, C)``: the soft Dice loss of each sample and class (see :func:`soft_dice_loss`)."""
    p, q = probs.float().flatten(2), target_probs.float().flatten(2)
    intersection = (p * q).sum(-1)
    denominator = p.sum(-1) + q.sum(-1)
    return 1.0 - (2.0 * intersection + smooth) / (denominator + smooth)


def supervised_loss(logits: Tensor, target: Tensor) -> Tensor:
    """The supervised loss used everywhere: ``0.5 * (CE + soft Dice)``.

    A pure-torch equivalent of MONAI's ``DiceCELoss(softmax=True, to_onehot_y=True, lambda_dice=0.5,
    lambda_ce=0.5)`` with its defaults (background included in the Dice, ``smooth_nr = smooth_dr =
    1e-5``, Dice per sample and class then averaged, CE averaged over pixels); the tests check it
    against MONAI. It avoids importing MONAI (about 5 s) wherever a loss is needed.

    Args:
        logits: ``(N, C, H, W)`` raw scores.
        target: ``(N, H, W)`` integer labels in ``[0, C)``.

    Raises:
        ValueError: when the shapes do not match or ``target`` is not integer.
    """
    if logits.ndim < 3 or target.shape != logits.shape[:1] + logits.shape[2:] or target.is_floating_point():
        raise ValueError(
            f"supervised_loss needs logits (N, C, H, W) and integer target (N, H, W), "
            f"got {tuple(logits.shape)} and {target.dtype} {tuple(target.shape)}"
        )
    logits = logits.float()
    target = target.long()
    ce = F.cross_entropy(logits, target)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).float()
    dice = soft_dice_loss(torch.softmax(logits, dim=1), onehot)
    return 0.5 * (ce + dice)


def _confident_argmax(teacher_probs: Tensor, threshold: float | Tensor) -> tuple[Tensor, Tensor]:
    """The teacher's detached argmax ``(N, H, W)`` and its float confidence mask ``(N, H, W)`` at ``threshold``
    (one number, or a ``(C,)`` tensor: each pixel against the threshold of its argmax class)."""
    confidence, pseudo = teacher_probs.detach().float().max(dim=1)
    if isinstance(threshold, Tensor):
        threshold = threshold.to(confidence.device, torch.float32)[pseudo]
    return pseudo, (confidence >= threshold).float()


def class_ceiling_thresholds(teacher_probs: Tensor, threshold: float) -> Tensor:
    """Per-class confidence thresholds: ``threshold`` times each class's ceiling in this batch.

    A class's ceiling is the largest probability the teacher gives it on the pixels it labels as that
    class, and 1 for a class it labels nowhere. A fixed threshold never pseudo-labels a class whose
    confidence the network caps below it, e.g. a class its output head codes by the bias alone
    (docs/benchmarks.md point 39), so self-training never reaches that class. Scaled by the ceiling,
    the threshold keeps the top of that class; a class that reaches confidence 1 keeps ``threshold``.
    FreeMatch (Wang et al., ICLR 2023) scales by each class's mean confidence instead; a pixel-class
    mean is set by the structure's size, so a small one (the pubic symphysis) would get a low bar.

    Args:
        teacher_probs: ``(N, C, H, W)`` teacher probabilities; detached here.
        threshold: the confidence threshold τ for a class whose ceiling is 1.

    Returns:
        a detached ``(C,)`` float32 tensor, for the ``threshold`` of the confidence-masked losses.
    """
    confidence, pseudo = teacher_probs.detach().float().max(dim=1)
    ceiling = torch.ones(teacher_probs.shape[1], device=confidence.device)
    ceiling = ceiling.scatter_reduce(0, pseudo.flatten(), confidence.flatten(), reduce="amax", include_self=False)
    return threshold * ceiling


def class_share_thresholds(teacher_probs: Tensor, threshold: float | Tensor, keep_share: float) -> Tensor:
    """Per-class confidence thresholds, each lowered where needed so that at least the top ``keep_share`` of
    the pixels the teacher labels as that class in this batch pass it (CBST's class-balanced selection, Zou
    et al., ECCV 2018).

    A network can label a class right but never surely: fixmatch's seed 2 at 5 % labels the pubic symphysis
    on unlabelled images with Dice 0.88 at a median confidence of 0.50 (docs/benchmarks.md point 42). Neither
    a fixed threshold nor one scaled by the class's ceiling lets more than its top tail through, so the
    pseudo-labels teach only the background around it. Keeping a share of each class's own pixels, ranked by
    confidence, teaches every class the network labels, however unsure it is, and a class that is already
    sure keeps its threshold.

    Args:
        teacher_probs: ``(N, C, H, W)`` teacher probabilities; detached here.
        threshold: the threshold τ, or one per class (e.g. :func:`class_ceiling_thresholds`), that a class's
            bar never exceeds; a class the teacher labels nowhere keeps it.
        keep_share: in ``[0, 1]``; 0 leaves ``threshold`` as it is (as a ``(C,)`` tensor).

    Returns:
        a detached ``(C,)`` float32 tensor, for the ``threshold`` of the confidence-masked losses.

    Raises:
        ValueError: when ``keep_share`` is outside ``[0, 1]``.
    """
    if not 0.0 <= keep_share <= 1.0:
        raise ValueError(f"keep_share must be in [0, 1], got {keep_share}")
    confidence, pseudo = teacher_probs.detach().float().max(dim=1)
    bars = torch.as_tensor(threshold, dtype=torch.float32, device=confidence.device).expand(teacher_probs.shape[1]).clone()
    for c in range(len(bars)):
        ranked = confidence[pseudo == c].sort(descending=True).values
        kept = math.ceil(keep_share * len(ranked))
        if kept:
            bars[c] = torch.minimum(bars[c], ranked[kept - 1])
    return bars


def pseudo_label_threshold(
    teacher_probs: Tensor, threshold: float, class_ceiling: bool = False, keep_share: float = 0.0
) -> float | Tensor:
    """The confidence threshold of a pseudo-label method's masked losses, from its settings.

    ``threshold`` as it is; with ``class_ceiling``, one per class scaled by the class's ceiling
    (:func:`class_ceiling_thresholds`); with ``keep_share`` > 0, each class's bar then lowered, where
    needed, to keep that share of the class's surest pixels (:func:`class_share_thresholds`).

    Returns:
        ``threshold`` (a float) when both are off, else a detached ``(C,)`` float32 tensor.
    """
    bars: float | Tensor = threshold
    if class_ceiling:
        bars = class_ceiling_thresholds(teacher_probs, threshold)
    if keep_share > 0:
        bars = class_share_thresholds(teacher_probs, bars, keep_share)
    return bars


def pseudo_label_shares(teacher_probs: Tensor, threshold: float | Tensor) -> dict[str, Tensor]:
    """Diagnostics, not losses: what a confidence-masked pseudo-label loss learns from.

    ``confident_share`` is the share of pixels whose largest probability is ``>= threshold`` (their argmax
    class's, for per-class thresholds);
    ``pseudo_class<c>_share`` is the share of pixels confidently pseudo-labelled as foreground class ``c``
    (background, class 0, is the rest). Logged over training, a falling class share is self-training
    shrinking that structure, which a val Dice shows only at the next validation. Per-class thresholds
    add ``threshold_class<c>``, each foreground class's bar.

    Returns:
        detached 0-d float32 tensors, named as above.
    """
    pseudo, mask = _confident_argmax(teacher_probs, threshold)
    shares = {"confident_share": mask.mean()}
    for c in range(1, teacher_probs.shape[1]):
        shares[f"pseudo_class{c}_share"] = (mask * (pseudo == c)).mean()
        if isinstance(threshold, Tensor):
            shares[f"threshold_class{c}"] = threshold[c]
    return shares


def confidence_masked_ce(
    logits: Tensor, teacher_probs: Tensor, threshold: float | Tensor, average_over: str = "all"
) -> tuple[Tensor, Tensor]:
    """Cross-entropy against the teacher's argmax on the pixels where the teacher is confident.

    A pixel counts when the teacher's largest probability is ``>= threshold``. The teacher is detached.

    Args:
        logits: ``(N, C, H, W)`` student logits.
        teacher_probs: ``(N, C, H, W)`` teacher probabilities (softmax outputs).
        threshold: the confidence threshold τ (e.g. 0.95 for FixMatch), or a ``(C,)`` tensor of one per
            class, which a pixel meets by its argmax class's (:func:`class_ceiling_thresholds`).
        average_over: ``all`` (default) divides the masked sum by every pixel, as FixMatch and UniMatch
            do, so the loss grows with the confident share; ``confident`` divides by the confident pixels
            only (a plain mean over them); ``class`` takes the mean over the confident pixels of each
            pseudo-class, then the mean over the pseudo-classes that have any, so that a small structure
            (the pubic symphysis) weighs as much as the background around it.

    Returns:
        ``(loss, mask_fraction)``: both 0-d tensors; the fraction of confident pixels is detached. When no
        pixel passes, the loss is exactly 0 (not NaN) and still part of the graph.

    Raises:
        ValueError: when the shapes differ or ``average_over`` is unknown.
    """
    _check_maps("confidence_masked_ce", logits, teacher_probs)
    if average_over not in ("all", "confident", "class"):
        raise ValueError(f"average_over must be 'all', 'confident' or 'class', got {average_over!r}")
    pseudo, mask = _confident_argmax(teacher_probs, threshold)
    ce = F.cross_entropy(logits.float(), pseudo, reduction="none")
    if average_over == "class":
        per_class = F.one_hot(pseudo, logits.shape[1]).movedim(-1, 1).float() * mask.unsqueeze(1)  # (N, C, H, W)
        counts = per_class.sum(dim=(0, 2, 3))
        class_means = (per_class * ce.unsqueeze(1)).sum(dim=(0, 2, 3)) / counts.clamp_min(1.0)
        loss = class_means.sum() / (counts > 0).sum().clamp_min(1)
    else:
        total = (ce * mask).sum()
        count = mask.sum() if average_over == "confident" else torch.tensor(float(mask.numel()), device=mask.device)
        loss = total / count.clamp_min(1.0)
    return loss, mask.mean().detach()


def confidence_masked_dice(
    logits: Tensor, teacher_probs: Tensor, threshold: float | Tensor, only_confident_classes: bool = False
) -> Tensor:
    """Soft Dice of the student against the teacher's one-hot argmax, on the confident pixels only.

    Both maps are zeroed where the teacher's largest probability is below ``threshold``, then
    :func:`soft_dice_loss` scores them (per sample and class, then the mean). Dice weighs each class by
    its own size, so a pseudo-label loss with it neither shrinks a small structure into the background
    nor lets a large one spread. The teacher is detached.

    A class with no confident pixel in a sample has an empty target there, and its Dice loss,
    ``1 - smooth / (Σp + smooth)``, pulls the student's probability of that class on the sample's
    confident pixels towards 0 with a gradient of up to ``1 / smooth``, although the teacher only
    failed to be sure of it. ``only_confident_classes`` leaves those (sample, class) pairs out of the
    mean: there, unconfident means unknown, not absent.

    Args:
        logits: ``(N, C, H, W)`` student logits.
        teacher_probs: ``(N, C, H, W)`` teacher probabilities.
        threshold: the confidence threshold τ, or one per class (see :func:`confidence_masked_ce`).
        only_confident_classes: the mean over the (sample, class) pairs with a confident pixel only;
            exactly 0, and still part of the graph, when no pixel is confident.

    Raises:
        ValueError: when the shapes differ.
    """
    _check_maps("confidence_masked_dice", logits, teacher_probs)
    pseudo, mask = _confident_argmax(teacher_probs, threshold)
    mask = mask.unsqueeze(1)
    target = F.one_hot(pseudo, logits.shape[1]).movedim(-1, 1).float() * mask
    probs = torch.softmax(logits.float(), dim=1) * mask
    if not only_confident_classes:
        return soft_dice_loss(probs, target)
    per_class = _soft_dice_per_class(probs, target)
    present = target.flatten(2).sum(-1) > 0
    if not present.any():
        return probs.sum() * 0.0
    return per_class[present].mean()


def correlation_guidance_kl(
    student_feat: Tensor,
    teacher_feat: Tensor,
    n_positions: int,
    temperature: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """HDC's correlation guidance: the student's feature affinity map follows the teacher's.

    The caller projects the features. Here each position's channel vector is L2-normalised, the same
    ``n_positions`` spatial positions are sampled in both maps (per sample, without replacement; all
    positions when there are no more than ``n_positions``), and for each sampled position ``i`` the
    affinity row is ``A_i = softmax_j(f_i · f_j / temperature)`` over the sampled positions (``j = i``
    included). The loss is ``KL(A_teacher,i ‖ A_student,i)`` averaged over rows and samples, with the
    teacher detached.

    Args:
        student_feat: ``(N, D, H, W)`` projected student features.
        teacher_feat: ``(N, D, H, W)`` projected teacher features.
        n_positions: positions to sample per sample, >= 1.
        temperature: the softmax temperature, > 0.
        generator: the random source of the positions (optional; drawn on its device).

    Raises:
        ValueError: for mismatched shapes, ``n_positions < 1`` or ``temperature <= 0``.
    """
    if student_feat.ndim != 4 or student_feat.shape != teacher_feat.shape:
        raise ValueError(
            f"correlation_guidance_kl needs two (N, D, H, W) maps of one shape, "
            f"got {tuple(student_feat.shape)} and {tuple(teacher_feat.shape)}"
        )
    if n_positions < 1 or temperature <= 0:
        raise ValueError(f"need n_positions >= 1 and temperature > 0, got {n_positions} and {temperature}")
    n, d, h, w = student_feat.shape
    s = F.normalize(student_feat.float().flatten(2), dim=1)  # (N, D, HW)
    t = F.normalize(teacher_feat.detach().float().flatten(2), dim=1)
    if n_positions < h * w:
        device = generator.device if generator is not None else s.device
        scores = torch.rand((n, h * w), generator=generator, device=device)
        index = scores.argsort(dim=1)[:, :n_positions].to(s.device)
        gather = index[:, None, :].expand(n, d, n_positions)
        s, t = s.gather(2, gather), t.gather(2, gather)
    log_a_s = F.log_softmax(torch.einsum("ndi,ndj->nij", s, s) / temperature, dim=-1)
    log_a_t = F.log_softmax(torch.einsum("ndi,ndj->nij", t, t) / temperature, dim=-1)
    kl = (log_a_t.exp() * (log_a_t - log_a_s)).sum(-1)  # (N, P): one KL per row
    return kl.mean()


def iic_mutual_information(p1: Tensor, p2: Tensor, eps: float = 1e-8) -> Tensor:
    """IIC's loss: the negative mutual information of two pixel-wise class distributions.

    The joint ``P[c, d]`` is the mean over samples and pixels of ``p1[:, c] * p2[:, d]``, symmetrised
    ``(P + Pᵀ) / 2`` and normalised to sum 1; its marginals are taken, then ``P`` and the marginals are
    floored at ``eps`` (as IIC does) and ``MI = Σ P (log P − log P_c − log P_d)``. The MI is at most
    ``log C``, reached for identical one-hot maps spread evenly over the C classes (loss ``−log C``),
    and is 0 for independent maps.

    Args:
        p1: ``(N, C, H, W)`` probabilities (e.g. the main decoder's softmax).
        p2: ``(N, C, H, W)`` probabilities (e.g. the noisy decoder's softmax).
        eps: the floor of the joint and marginal probabilities inside the logarithms.

    Returns:
        ``−MI`` (minimising it maximises the mutual information); gradients reach both inputs.

    Raises:
        ValueError: when the shapes differ.
    """
    _check_maps("iic_mutual_information", p1, p2)
    a, b = p1.float().flatten(2), p2.float().flatten(2)  # (N, C, HW)
    joint = torch.einsum("ncp,ndp->cd", a, b) / (a.shape[0] * a.shape[2])
    joint = (joint + joint.t()) / 2.0
    joint = joint / joint.sum().clamp_min(eps)
    p_c = joint.sum(dim=1, keepdim=True).clamp_min(eps)
    p_d = joint.sum(dim=0, keepdim=True).clamp_min(eps)
    joint = joint.clamp_min(eps)
    mi = (joint * (joint.log() - p_c.log() - p_d.log())).sum()
    return -mi


def _entropy(p: Tensor, eps: float) -> Tensor:
    """Per-pixel entropy ``−Σ_c p log p`` of ``(N, C, ...)`` (0·log 0 = 0)."""
    return -(p * p.clamp_min(eps).log()).sum(dim=1)


def divergence_loss(p1: Tensor, p2: Tensor, eps: float = 1e-8) -> Tensor:
    """Infodiv's divergence loss on all pixels (DESIGN.md §4), as written there:

    ``mean KL(p1 ‖ p2) + mean[H(p1) + H(p2) − H((p1 + p2) / 2)]``

    with natural logarithms, means over samples and pixels, ``0 log 0 = 0`` and logarithms floored at
    ``eps``. Gradients reach both inputs.

    What "zero for identical distributions" means: the KL term is 0 whenever ``p1 == p2``, but the
    entropy term is then ``H(p) + H(p) − H(p) = H(p)``, so the loss is ``mean H(p)``: zero exactly for
    identical **one-hot** (confident) maps, positive for identical soft ones. The loss therefore also
    pushes both networks towards confident predictions. Note that for disjoint one-hot maps the KL term
    is ``−log eps`` per pixel (large), as ``p2`` puts no mass where ``p1`` does.

    Args:
        p1: ``(N, C, H, W)`` probabilities (e.g. the CNN's softmax).
        p2: ``(N, C, H, W)`` probabilities (e.g. the transformer's softmax).
        eps: the floor inside the logarithms.

    Raises:
        ValueError: when the shapes differ.
    """
    _check_maps("divergence_loss", p1, p2)
    a, b = p1.float(), p2.float()
    kl = (a * (a.clamp_min(eps).log() - b.clamp_min(eps).log())).sum(dim=1)
    entropy = _entropy(a, eps) + _entropy(b, eps) - _entropy((a + b) / 2.0, eps)
    return kl.mean() + entropy.mean()


def info_nce(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """Symmetric InfoNCE between row-aligned embeddings: row ``i`` of ``z1`` and row ``i`` of ``z2``
    are a positive pair, every other row of the other set a negative.

    Rows are L2-normalised; ``S = z1 z2ᵀ / temperature``; the loss is
    ``(CE(S, diag) + CE(Sᵀ, diag)) / 2`` with cross-entropies averaged over rows. Gradients reach both
    inputs (detach one to make it a target).

    Args:
        z1: ``(M, D)`` embeddings (e.g. the student's patch projections).
        z2: ``(M, D)`` embeddings aligned with ``z1`` (e.g. the teacher's).
        temperature: the softmax temperature τ, > 0 (0.5 in SimCVD).

    Raises:
        ValueError: for mismatched or non-2-D inputs, or ``temperature <= 0``.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"info_nce needs two (M, D) tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    a, b = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    logits = a @ b.t() / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def _similarity_matrix(features: Tensor, pool_size: int | None) -> Tensor:
    """Cosine similarities between pooled feature vectors: ``(N, P, P)`` for maps, ``(M, M)`` for rows."""
    if features.ndim == 2:
        f = F.normalize(features.float(), dim=1)
        return f @ f.t()
    if features.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) maps or (M, D) vectors, got shape {tuple(features.shape)}")
    f = features.float()
    if pool_size is not None:
        f = F.adaptive_avg_pool2d(f, (min(pool_size, f.shape[2]), min(pool_size, f.shape[3])))
    f = F.normalize(f.flatten(2), dim=1)  # (N, C, P)
    return f.transpose(1, 2) @ f


def pairwise_similarity_distillation(student_feat: Tensor, teacher_feat: Tensor, pool_size: int | None = 4) -> Tensor:
    """SimCVD's pair-wise distillation: the student's pair-wise similarity structure follows the teacher's.

    For feature maps ``(N, C, H, W)``, each map is average-pooled to at most ``pool_size × pool_size``
    cells; each cell's channel vector is L2-normalised and the cosine-similarity matrix between the
    cells (``P × P`` per sample) is formed. For vectors ``(M, D)`` the matrix is between the M rows.
    The loss is the mean squared difference of the student's and the teacher's matrices (each entry in
    [−1, 1]); the teacher is detached. The channel counts may differ between student and teacher.

    Args:
        student_feat: ``(N, C, H, W)`` maps or ``(M, D)`` vectors from the student.
        teacher_feat: the teacher's, with the same N (and H, W) or M.
        pool_size: the pooled grid side for maps; None keeps every position.

    Raises:
        ValueError: when the similarity matrices' shapes differ.
    """
    s = _similarity_matrix(student_feat, pool_size)
    t = _similarity_matrix(teacher_feat.detach(), pool_size)
    if s.shape != t.shape:
        raise ValueError(f"student and teacher similarity matrices differ: {tuple(s.shape)} vs {tuple(t.shape)}")
    return F.mse_loss(s, t)


def _class_sdm(inside: np.ndarray) -> np.ndarray:
    """Normalised signed distance map of one binary 2-D mask (see :func:`sdm_ground_truth`)."""
    from scipy import ndimage

    if not inside.any():
        return np.zeros(inside.shape, np.float32)
    if inside.all():
        return np.full(inside.shape, -1.0, np.float32)
    inside_distance = ndimage.distance_transform_edt(inside)  # to the nearest outside pixel
    outside_distance = ndimage.distance_transform_edt(~inside)  # to the nearest inside pixel
    sdm = outside_distance / outside_distance.max() - inside_distance / inside_distance.max()
    cross = ndimage.generate_binary_structure(2, 1)
    boundary = inside & ~ndimage.binary_erosion(inside, structure=cross, border_value=1)
    sdm[boundary] = 0.0
    return sdm.astype(np.float32)


def sdm_ground_truth(mask: np.ndarray | Tensor, num_classes: int) -> np.ndarray | Tensor:
    """Normalised signed distance maps of each foreground class (SimCVD's SDM head target).

    Sign convention: **negative inside, positive outside, zero on the boundary**. For class k, with
    Euclidean distances (``scipy.ndimage.distance_transform_edt``): an outside pixel gets its distance
    to the nearest class-k pixel divided by the largest such distance (so (0, 1]); an inside pixel gets
    minus its distance to the nearest non-k pixel divided by the largest such distance (so [−1, 0));
    the boundary — class-k pixels with a 4-connected non-k neighbour (the image edge is not a
    boundary) — is set to 0. An absent class is all 0; a class filling the whole image is all −1.
    This is DTC/SASSNet's ``compute_sdf`` convention.

    Args:
        mask: integer labels ``(N, H, W)`` or ``(H, W)``, numpy or torch (any device).
        num_classes: C, background included; the output has C − 1 channels (classes 1..C−1).

    Returns:
        float32 maps ``(N, C − 1, H, W)`` (or ``(C − 1, H, W)`` for a 2-D mask), in [−1, 1], as the same
        kind of array as ``mask`` (a torch tensor comes back on ``mask``'s device).

    Raises:
        ValueError: for a mask that is not 2-D or 3-D, or ``num_classes < 2``.
    """
    is_torch = isinstance(mask, Tensor)
    array = mask.detach().cpu().numpy() if is_torch else np.asarray(mask)
    if array.ndim not in (2, 3):
        raise ValueError(f"mask must be (N, H, W) or (H, W), got shape {array.shape}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + a foreground class), got {num_classes}")
    batch = array[None] if array.ndim == 2 else array
    out = np.zeros((batch.shape[0], num_classes - 1, *batch.shape[1:]), np.float32)
    for n, labels in enumerate(batch):
        for k in range(1, num_classes):
            out[n, k - 1] = _class_sdm(labels == k)
    if array.ndim == 2:
        out = out[0]
    return torch.from_numpy(out).to(mask.device) if is_torch else out


def softmax_mse(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """Mean-teacher consistency: the mean over all elements of ``(softmax(a) − softmax(b))²``, softmax
    over the class dimension 1; ``b`` (the teacher) is detached.

    Args:
        logits_a: ``(N, C, H, W)`` student logits.
        logits_b: ``(N, C, H, W)`` teacher logits.

    Raises:
        ValueError: when the shapes differ.
    """
    _check_maps("softmax_mse", logits_a, logits_b)
    return F.mse_loss(torch.softmax(logits_a.float(), dim=1), torch.softmax(logits_b.detach().float(), dim=1))

