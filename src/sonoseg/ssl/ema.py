"""Exponential-moving-average (mean) teachers."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from sonoseg.ssl.base import Method

__all__ = ["EmaTeacherMethod", "batch_norms", "batch_statistics", "ema_alpha", "ema_update", "make_ema_copy"]


def ema_alpha(step: int, decay: float) -> float:
    """The EMA coefficient ``alpha = min(1 - 1/(step + 1), decay)`` (DESIGN.md §4).

    Step 0 gives 0 (the teacher becomes a copy of the student), step 1 gives 0.5, and large steps
    give ``decay``: early on the teacher is a true average of the students seen so far.

    Args:
        step: the 0-based iteration just completed; must be >= 0.
        decay: the asymptotic coefficient, in [0, 1].

    Raises:
        ValueError: for a negative step or a decay outside [0, 1].
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    return min(1.0 - 1.0 / (step + 1.0), float(decay))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, step: int, decay: float) -> float:
    """Move ``teacher`` towards ``student`` in place: ``t <- alpha * t + (1 - alpha) * s``.

    Parameters and floating-point buffers (BatchNorm running statistics) are averaged with
    ``alpha = ema_alpha(step, decay)``; integer buffers (``num_batches_tracked``) are copied. The
    statistics are averaged, not copied, because an eval-mode teacher normalises its averaged
    weights' activations with them: with the student's latest statistics the teacher drifted from
    the student and, on HC18 at 5 % labels, confidently predicted no head on most unlabelled images,
    which the student then learned (docs/benchmarks.md, SSL benchmark findings, point 12). Parameters and
    buffers are matched by name, so both modules must have the same architecture.

    Args:
        teacher: the EMA module, updated in place (its parameters need no gradient).
        student: the trained module; read only.
        step: the 0-based iteration just completed (see :func:`ema_alpha`).
        decay: the asymptotic EMA coefficient, e.g. 0.99.

    Returns:
        The ``alpha`` used.

    Raises:
        ValueError: when the two modules' parameter or buffer names differ.
    """
    alpha = ema_alpha(step, decay)
    teacher_params = dict(teacher.named_parameters())
    student_params = dict(student.named_parameters())
    if teacher_params.keys() != student_params.keys():
        missing = sorted(set(teacher_params) ^ set(student_params))[:5]
        raise ValueError(f"teacher and student parameters differ (e.g. {missing}); same architecture expected")
    teacher_buffers = dict(teacher.named_buffers())
    student_buffers = dict(student.named_buffers())
    if teacher_buffers.keys() != student_buffers.keys():
        missing = sorted(set(teacher_buffers) ^ set(student_buffers))[:5]
        raise ValueError(f"teacher and student buffers differ (e.g. {missing}); same architecture expected")
    for tensors, sources in ((teacher_params, student_params), (teacher_buffers, student_buffers)):
        for name, t in tensors.items():
            s = sources[name].detach()
            if t.is_floating_point():
                t.mul_(alpha).add_(s.to(t.dtype), alpha=1.0 - alpha)
            else:
                t.copy_(s)
    return alpha


def make_ema_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` to serve as its EMA teacher: no parameter requires a gradient.

    The copy keeps ``module``'s train/eval mode; callers that want a frozen-statistics teacher put it
    in eval mode (``Method.train`` does).

    Args:
        module: the student to copy.
    """
    teacher = copy.deepcopy(module)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``module``, in module order."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``module``'s BatchNorm layers normalise with each batch's own statistics, as the
    student's do in training, and leave their running statistics as they were; everything else keeps its
    mode (an eval-mode teacher keeps its dropout off).

    An eval-mode teacher normalises with running statistics while the student it is compared with normalises
    with batch ones. A consistency loss then also trains the student towards that difference, and the EMA
    teacher follows the student, so the difference can accumulate (docs/benchmarks.md, SSL benchmark
    findings, point 21).

    Args:
        module: the network, usually an EMA teacher in eval mode.
    """
    norms = batch_norms(module)
    saved = [(m.training, m.momentum) for m in norms]
    for m in norms:
        m.train(True)
        m.momentum = 0.0  # running <- (1 - 0) * running + 0 * batch: unchanged
    try:
        yield module
    finally:
        for m, (training, momentum) in zip(norms, saved, strict=True):
            m.train(training)
            m.momentum = momentum


class EmaTeacherMethod(Method):
    """A method whose EMA teachers run in eval mode; ``teacher_norm`` picks how their BatchNorm normalises:
    with its running statistics (``running``) or, like the student's in training, with each batch's own
    (``batch``, see :func:`batch_statistics`). Subclasses run their teachers inside
    :meth:`teacher_normalisation`."""

    DEFAULTS: ClassVar[dict[str, Any]] = {"teacher_norm": "running"}
    TEACHER_NORMS: ClassVar[tuple[str, ...]] = ("running", "batch")

    def __init__(self, settings: dict[str, Any], model: dict[str, Any], num_classes: int) -> None:
        norm = {**self.defaults(), **settings}["teacher_norm"]
        if norm not in self.TEACHER_NORMS:
            raise ValueError(f"training.{self.name}.teacher_norm is {norm!r}: expected one of {', '.join(self.TEACHER_NORMS)}")
        super().__init__(settings, model, num_classes)

    @contextmanager
    def teacher_normalisation(self, *roles: str) -> Iterator[None]:
        """Within the block, the networks of these roles normalise as ``teacher_norm`` says."""
        with ExitStack() as stack:
            if self.settings["teacher_norm"] == "batch":
                for role in roles:
                    stack.enter_context(batch_statistics(self.inner(role)))
            yield
