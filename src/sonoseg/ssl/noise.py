"""Input and feature perturbations: HDC's noisy decoder, CCT-style baselines and mean-teacher noise.

Every function takes an optional ``torch.Generator``. Random numbers are drawn on the generator's
device (a CPU generator gives the same numbers whatever device the tensors are on) and then moved
to the tensor's device and dtype; without a generator they come from the global RNG of the tensor's
device. Functions return new tensors and never modify their input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "PERTURBATIONS",
    "Perturbation",
    "attention_guided_dropout",
    "feature_dropout2d",
    "gaussian_input_noise",
    "make_perturbation",
    "uniform_multiplicative",
    "vat_direction",
]


def _uniform(shape: Sequence[int], like: Tensor, generator: torch.Generator | None, low: float = 0.0, high: float = 1.0) -> Tensor:
    """Uniform numbers in ``[low, high)`` with ``like``'s device and floating dtype (see the module notes)."""
    dtype = like.dtype if like.is_floating_point() else torch.float32
    if generator is None:
        values = torch.rand(tuple(shape), device=like.device, dtype=torch.float32)
    else:
        values = torch.rand(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32)
    return (values * (high - low) + low).to(device=like.device, dtype=dtype)


def _normal(shape: Sequence[int], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal numbers with ``like``'s device and floating dtype (see the module notes)."""
    dtype = like.dtype if like.is_floating_point() else torch.float32
    if generator is None:
        values = torch.randn(tuple(shape), device=like.device, dtype=torch.float32)
    else:
        values = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32)
    return values.to(device=like.device, dtype=dtype)


def uniform_multiplicative(x: Tensor, strength: float = 0.3, generator: torch.Generator | None = None) -> Tensor:
    """CCT's feature noise: ``x * (1 + u)`` with ``u ~ U(-strength, strength)`` drawn per element.

    Each output element stays within ``strength * |x|`` of the input.

    Args:
        x: features ``(N, C, H, W)`` (any shape works).
        strength: the noise amplitude, >= 0 (0.3 in CCT and HDC).
        generator: the random source (optional).

    Raises:
        ValueError: for a negative strength.
    """
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    return x * (1.0 + _uniform(x.shape, x, generator, -strength, strength))


def feature_dropout2d(x: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Channel dropout (``nn.Dropout2d`` in training mode): each ``(sample, channel)`` map is zeroed
    with probability ``p``, the others are scaled by ``1 / (1 - p)``.

    Args:
        x: features ``(N, C, H, W)``.
        p: the drop probability, in [0, 1] (``p = 1`` zeroes everything).
        generator: the random source (optional).

    Raises:
        ValueError: for ``p`` outside [0, 1] or an input that is not 4-D.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if x.ndim != 4:
        raise ValueError(f"feature_dropout2d expects (N, C, H, W), got shape {tuple(x.shape)}")
    if p == 0.0:
        return x.clone()
    if p == 1.0:
        return torch.zeros_like(x)
    keep = (_uniform((x.shape[0], x.shape[1], 1, 1), x, generator) >= p).to(x.dtype)
    return x * keep / (1.0 - p)


def attention_guided_dropout(
    x: Tensor, drop_range: tuple[float, float] = (0.7, 0.9), generator: torch.Generator | None = None
) -> Tensor:
    """CCT's ``FeatureDropout``: drop the most attended regions.

    The attention map is the channel mean of ``x``. Per sample a threshold ``gamma * max(attention)``
    is drawn with ``gamma ~ U(drop_range)``; every position whose attention reaches the threshold is
    zeroed in all channels, the rest is kept unchanged (no rescaling, as in CCT).

    Args:
        x: features ``(N, C, H, W)``.
        drop_range: the interval ``(low, high)`` of ``gamma``, with ``0 <= low <= high``.
        generator: the random source (optional).

    Raises:
        ValueError: for a malformed ``drop_range`` or an input that is not 4-D.
    """
    low, high = (float(v) for v in drop_range)
    if not 0.0 <= low <= high:
        raise ValueError(f"drop_range must be (low, high) with 0 <= low <= high, got {drop_range}")
    if x.ndim != 4:
        raise ValueError(f"attention_guided_dropout expects (N, C, H, W), got shape {tuple(x.shape)}")
    attention = x.mean(dim=1, keepdim=True)
    peak = attention.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    gamma = _uniform((x.shape[0], 1, 1, 1), attention, generator, low, high)
    keep = (attention < peak * gamma).to(x.dtype)
    return x * keep


def _l2_normalise_per_sample(d: Tensor, fallback: Tensor | None = None) -> Tensor:
    """``d`` scaled to unit L2 norm per sample. Dividing by the largest magnitude first keeps tiny
    gradients (about ``xi²``) representable; a sample whose ``d`` is all zero takes ``fallback``."""
    shape = (-1, *([1] * (d.ndim - 1)))
    d = d / d.flatten(1).abs().amax(dim=1).clamp_min(torch.finfo(d.dtype).tiny).view(shape)
    norms = d.flatten(1).norm(dim=1)
    unit = d / norms.clamp_min(torch.finfo(d.dtype).tiny).view(shape)
    if fallback is not None:
        unit = torch.where((norms > 0).view(shape), unit, fallback)
    return unit


def vat_direction(
    forward_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    xi: float = 0.1,
    eps: float = 2.0,
    iterations: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The virtual adversarial perturbation of features ``x`` (VAT, as in CCT's ``VATDecoder``).

    Starting from a random unit direction ``d`` (per sample), ``iterations`` power-iteration steps
    set ``d`` to the normalised gradient of ``KL(p(x) ‖ p(x + xi·d))``, where ``p`` is the softmax of
    ``forward_fn``'s logits and ``p(x)`` is held fixed. Gradients are taken with
    ``torch.autograd.grad`` with respect to ``d`` only, so no parameter ``.grad`` is touched; the
    extra forward passes do update BatchNorm running statistics when ``forward_fn`` is in train mode.

    Args:
        forward_fn: maps features like ``x`` to logits ``(N, K, ...)`` (the decoder plus head).
        x: features ``(N, C, H, W)``; treated as a constant (detached).
        xi: the finite-difference step of the power iteration (the norm of ``xi·d`` per sample). CCT
            uses 1e-6, which in float32 leaves the logits' change below rounding for realistic feature
            sizes, so the direction is noise; 0.1 keeps it measurable.
        eps: the norm of the returned perturbation, per sample.
        iterations: power-iteration steps, >= 1.
        generator: the random source of the initial direction (optional).

    Returns:
        ``r_adv`` with the shape of ``x``: ``eps`` times a per-sample unit direction, detached.
        Perturb with ``x + r_adv``.

    Raises:
        ValueError: for ``iterations < 1``.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    base = x.detach()
    with torch.enable_grad():
        with torch.no_grad():
            target = torch.softmax(forward_fn(base).float(), dim=1)
        d = _l2_normalise_per_sample(_uniform(base.shape, base, generator, -0.5, 0.5))
        for _ in range(iterations):
            d = d.detach().requires_grad_(True)
            log_p_hat = F.log_softmax(forward_fn(base + xi * d).float(), dim=1)
            distance = F.kl_div(log_p_hat, target, reduction="batchmean")
            (grad,) = torch.autograd.grad(distance, d)
            d = _l2_normalise_per_sample(grad, fallback=d.detach())
    return (eps * d).detach()


def gaussian_input_noise(
    x: Tensor, sigma: float = 0.1, clip: float = 0.2, generator: torch.Generator | None = None
) -> Tensor:
    """Mean-teacher input noise: ``x + clamp(n, -clip, clip) * std(x_i)``, ``n ~ N(0, sigma^2)`` per element.

    ``sigma`` and ``clip`` are in units of each image's own intensity standard deviation (over its
    channels and pixels), the units of the mean-teacher implementations that z-score their inputs and
    add noise of σ 0.1 clipped to ±0.2 (DESIGN.md §4). Our images lie in [0, 1] with a per-image
    standard deviation near 0.19 on PSFHS: there, σ 0.1 in intensity units shrank a trained model's
    predicted head by a third, and a mean teacher learning from such a teacher lost the head
    (docs/benchmarks.md, SSL benchmark findings, point 16). A constant image gets no noise.

    Args:
        x: images ``(N, C, H, W)`` (any shape with a sample axis first and at least one more).
        sigma: the noise standard deviation in image standard deviations, >= 0.
        clip: the bound on each noise value in image standard deviations, >= 0.
        generator: the random source (optional).

    Raises:
        ValueError: for a negative sigma or clip.
    """
    if sigma < 0 or clip < 0:
        raise ValueError(f"sigma and clip must be >= 0, got sigma={sigma}, clip={clip}")
    image_std = x.flatten(1).std(1, correction=0).reshape(-1, *([1] * (x.ndim - 1)))
    return x + (_normal(x.shape, x, generator) * sigma).clamp(-clip, clip) * image_std


class Perturbation:
    """A named, configured feature perturbation; build one with :func:`make_perturbation`.

    Call it as ``perturb(x, generator=None, forward_fn=None)``. ``forward_fn`` (features -> logits)
    is needed by ``vat`` only, given here or to :func:`make_perturbation`; the other kinds ignore it.
    Instances are picklable and deep-copyable (EMA teachers copy the network that holds them) as
    long as their ``forward_fn`` is.

    Args:
        name: one of :data:`PERTURBATIONS`.
        options: the keyword arguments of the underlying function.
        forward_fn: the default ``forward_fn`` for ``vat``.
    """

    def __init__(self, name: str, options: dict[str, Any], forward_fn: Callable[[Tensor], Tensor] | None = None) -> None:
        self.name = name
        self.options = dict(options)
        self.forward_fn = forward_fn

    def __call__(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        forward_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        if self.name == "none":
            return x
        if self.name == "uniform":
            return uniform_multiplicative(x, generator=generator, **self.options)
        if self.name == "dropout":
            return feature_dropout2d(x, generator=generator, **self.options)
        if self.name == "attention":
            return attention_guided_dropout(x, generator=generator, **self.options)
        fn = forward_fn if forward_fn is not None else self.forward_fn
        if fn is None:
            raise ValueError(
                "the 'vat' perturbation needs forward_fn (features -> logits, e.g. the noisy decoder and "
                "its head): pass it to make_perturbation or when calling the perturbation"
            )
        return x + vat_direction(fn, x, generator=generator, **self.options)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in sorted(self.options.items()))
        return f"Perturbation({self.name!r}{', ' if options else ''}{options})"


# name -> (the options it accepts, the option that ``strength`` sets or None when ignored)
_OPTIONS: dict[str, tuple[frozenset[str], str | None]] = {
    "none": (frozenset(), None),
    "uniform": (frozenset({"strength"}), "strength"),
    "dropout": (frozenset({"p"}), "p"),
    "attention": (frozenset({"drop_range"}), None),
    "vat": (frozenset({"xi", "eps", "iterations"}), "eps"),
}
PERTURBATIONS: tuple[str, ...] = tuple(_OPTIONS)
"""The names :func:`make_perturbation` accepts."""


def make_perturbation(name: str, forward_fn: Callable[[Tensor], Tensor] | None = None, **kwargs: Any) -> Perturbation:
    """A feature perturbation by name, for HDC's noisy decoder and CCT-style baselines.

    ``strength`` is accepted by every kind, so one tunable "noise level" serves them all: it is
    ``uniform``'s amplitude, ``dropout``'s ``p`` and ``vat``'s ``eps``, and it is ignored by ``none``
    and ``attention`` (whose knob is ``drop_range``). A kind-specific keyword wins over ``strength``.

    Args:
        name: ``none`` (identity), ``uniform`` (:func:`uniform_multiplicative`), ``dropout``
            (:func:`feature_dropout2d`), ``attention`` (:func:`attention_guided_dropout`) or ``vat``
            (``x + vat_direction(forward_fn, x, ...)``).
        forward_fn: for ``vat``, the features -> logits function (decoder and head); it can instead be
            passed at call time, which is how a network owning the perturbation supplies its decoder.
        kwargs: ``strength`` and the chosen function's own options (``p``, ``drop_range``, ``xi``,
            ``eps``, ``iterations``).

    Returns:
        A :class:`Perturbation`, called as ``perturb(x, generator=None, forward_fn=None)``.

    Raises:
        ValueError: for an unknown name or an option the kind does not take.
    """
    if name not in _OPTIONS:
        raise ValueError(f"unknown perturbation '{name}': expected one of {', '.join(PERTURBATIONS)}")
    accepted, strength_key = _OPTIONS[name]
    options = dict(kwargs)
    strength = options.pop("strength", None)
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(f"perturbation '{name}' takes {sorted(accepted | {'strength'})}, got unknown {sorted(unknown)}")
    if strength is not None and strength_key is not None:
        options.setdefault(strength_key, strength)
    return Perturbation(name, options, forward_fn)
