"""Ramp-ups and learning-rate schedules (plain floats, no optimiser state)."""

from __future__ import annotations

import math

__all__ = ["consistency_weight", "cosine_lr", "poly_lr", "sigmoid_rampup"]


def sigmoid_rampup(step: float, rampup_steps: float) -> float:
    """The sigmoid-shaped ramp-up of Laine & Aila, in [exp(-5), 1].

    ``exp(-5 (1 - t/T)^2)`` for ``0 <= t < T``, 1 for ``t >= T``, and 1 when ``T == 0`` (no ramp-up).
    Negative steps count as step 0.

    Args:
        step: the current iteration ``t`` (0-based).
        rampup_steps: the ramp-up length ``T`` in iterations (may be fractional, e.g.
            ``rampup_fraction * total_iterations``); must be >= 0.

    Raises:
        ValueError: when ``rampup_steps`` is negative.
    """
    if rampup_steps < 0:
        raise ValueError(f"rampup_steps must be >= 0, got {rampup_steps}")
    if rampup_steps == 0 or step >= rampup_steps:
        return 1.0
    phase = 1.0 - max(float(step), 0.0) / float(rampup_steps)
    return float(math.exp(-5.0 * phase * phase))


def consistency_weight(step: float, w_max: float, rampup_steps: float) -> float:
    """The unsupervised-loss weight ``w(t) = w_max * sigmoid_rampup(t, T)`` (DESIGN.md §4).

    Args:
        step: the current iteration ``t`` (0-based).
        w_max: the weight reached at the end of the ramp-up.
        rampup_steps: the ramp-up length ``T`` in iterations (0: ``w_max`` from the start).
    """
    return float(w_max) * sigmoid_rampup(step, rampup_steps)


def poly_lr(base: float, step: float, total: float, power: float = 0.9) -> float:
    """The polynomial ("poly") decay ``base * (1 - t/total)^power``; 0 from ``total`` on.

    Args:
        base: the learning rate at step 0.
        step: the current iteration ``t`` (0-based); negative steps count as 0.
        total: the number of iterations of the schedule; must be > 0.
        power: the decay exponent (0.9 as in DeepLab / nnU-Net).

    Raises:
        ValueError: when ``total`` is not positive.
    """
    if total <= 0:
        raise ValueError(f"total must be > 0, got {total}")
    fraction = min(max(float(step), 0.0) / float(total), 1.0)
    return float(base) * (1.0 - fraction) ** float(power)


def cosine_lr(base: float, step: float, total: float, warmup: float = 0) -> float:
    """Linear warm-up then cosine decay to 0.

    During warm-up (``t < warmup``) the rate is ``base * (t + 1) / warmup``, so the first step
    already moves the weights and step ``warmup - 1`` reaches ``base``. After it the rate is
    ``base * 0.5 * (1 + cos(pi * (t - warmup) / (total - warmup)))``, reaching 0 at ``total``
    and staying there.

    Args:
        base: the peak learning rate.
        step: the current iteration ``t`` (0-based); negative steps count as 0.
        total: the number of iterations of the schedule, warm-up included; must be > 0.
        warmup: warm-up iterations, in ``[0, total)``.

    Raises:
        ValueError: when ``total`` is not positive or ``warmup`` is outside ``[0, total)``.
    """
    if total <= 0:
        raise ValueError(f"total must be > 0, got {total}")
    if not 0 <= warmup < total:
        raise ValueError(f"warmup must be in [0, total={total}), got {warmup}")
    step = max(float(step), 0.0)
    if step < warmup:
        return float(base) * (step + 1.0) / float(warmup)
    fraction = min((step - warmup) / (float(total) - warmup), 1.0)
    return float(base) * 0.5 * (1.0 + math.cos(math.pi * fraction))
