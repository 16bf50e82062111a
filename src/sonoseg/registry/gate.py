"""The promotion gate: does the challenger replace the champion? A pure function of two metrics dicts.

The challenger is promoted when there is no champion, or when, on the same test split (the same
``test_split_sha256``), it beats the champion on ``metric`` by at least ``margin`` and no class's
``<class_metric>_<class>_mean`` is worse than the champion's by more than ``class_tolerance``. Anything
else is refused, with the numbers in the reason. ``higher_is_better`` gives the direction of both the
metric and the class metric (Dice: higher; HD95: lower).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

SPLIT_KEY = "test_split_sha256"


@dataclass(frozen=True)
class PromotionPolicy:
    """What "better" means. ``margin`` and ``class_tolerance`` are in the metric's own units."""

    metric: str = "dice_mean"
    higher_is_better: bool = True
    margin: float = 0.005
    class_tolerance: float = 0.02
    class_metric: str = "dice"

    def __post_init__(self) -> None:
        for name in ("margin", "class_tolerance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"registry.gate.{name} must be a number ≥ 0, got {value!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PromotionPolicy:
        """From the ``registry.gate`` parameters; unknown keys are an error (a typo must not pass silently)."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown registry.gate parameters {unknown}; known: {sorted(known)}")
        return cls(**params)


@dataclass(frozen=True)
class Decision:
    """The gate's verdict, its reason, and the compared values of ``policy.metric``."""

    promote: bool
    reason: str
    challenger_value: float | None = None
    champion_value: float | None = None


def _number(metrics: Mapping[str, Any], key: str) -> float | None:
    """A finite float, or None when the key is missing, null or not a finite number."""
    value = metrics.get(key)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def decide(
    challenger: Mapping[str, Any], champion: Mapping[str, Any] | None, policy: PromotionPolicy, class_names: Iterable[str]
) -> Decision:
    """Promote or refuse the challenger.

    Args:
        challenger: its test metrics (``metrics.json``: ``dice_mean``, ``dice_<class>_mean``, ...,
            ``test_split_sha256``).
        champion: the current champion's test metrics in the same form, or None when there is none.
        policy: the metric, direction, margin and per-class tolerance.
        class_names: the foreground class names whose ``<class_metric>_<name>_mean`` may not regress.
    """
    metric = policy.metric
    new = _number(challenger, metric)
    if new is None:
        return Decision(False, f"the challenger has no finite {metric} ({challenger.get(metric)!r}): nothing to compare")
    if champion is None:
        return Decision(True, f"no champion yet: the challenger ({metric} {new:.4f}) becomes the champion", new)
    old = _number(champion, metric)
    split, champion_split = challenger.get(SPLIT_KEY), champion.get(SPLIT_KEY)
    if not split or split != champion_split:
        return Decision(False, f"not comparable: the challenger was tested on split {str(split)[:12]}…, the champion on "
                               f"{str(champion_split)[:12]}…; re-evaluate one of them on the other's test split", new, old)  # fmt: skip
    if old is None:
        return Decision(False, f"not comparable: the champion has no finite {metric} ({champion.get(metric)!r})", new)
    sign = 1.0 if policy.higher_is_better else -1.0
    gain = sign * (new - old)
    if gain <= 0:
        return Decision(False, f"{metric} {new:.4f} does not beat the champion's {old:.4f} ({gain:+.4f})", new, old)
    if gain < policy.margin:
        return Decision(False, f"{metric} {new:.4f} beats the champion's {old:.4f} by {gain:+.4f}, short of the margin "
                               f"{policy.margin:.4f}", new, old)  # fmt: skip
    regressions = []
    for name in class_names:
        key = f"{policy.class_metric}_{name}_mean"
        ours, theirs = _number(challenger, key), _number(champion, key)
        if ours is None or theirs is None:
            return Decision(False, f"not comparable: {key} is missing or not finite (challenger {challenger.get(key)!r}, "
                                   f"champion {champion.get(key)!r})", new, old)  # fmt: skip
        drop = sign * (theirs - ours)
        if drop > policy.class_tolerance:
            regressions.append(f"{key} {ours:.4f} vs {theirs:.4f} (worse by {drop:.4f})")
    if regressions:
        return Decision(False, f"{metric} improves by {gain:+.4f}, but a class regresses beyond the tolerance "
                               f"{policy.class_tolerance:.4f}: {'; '.join(regressions)}", new, old)  # fmt: skip
    return Decision(True, f"{metric} {new:.4f} beats the champion's {old:.4f} by {gain:+.4f} (margin "
                          f"{policy.margin:.4f}); no class worse by more than {policy.class_tolerance:.4f}", new, old)  # fmt: skip
