"""Registry node: a thin adapter over ``sonoseg.registry``."""

from __future__ import annotations

from typing import Any

from sonoseg.registry.gate import PromotionPolicy
from sonoseg.registry.register import EvaluatedModel, register_and_promote


def register_model(
    training_summary: dict[str, Any], metrics: dict[str, Any], dataset_info: dict[str, Any], label_ratio: float,
    options: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Register the evaluated model as ``challenger`` of ``registry.model_name``, move ``champion`` if the gate
    says so, and return the promotion record (``data/08_reporting/promotion.json``)."""
    model = EvaluatedModel.from_reports(training_summary, metrics, dataset_info, label_ratio)
    return register_and_promote(
        model,
        model_name=options["model_name"],
        policy=PromotionPolicy.from_params(options.get("gate") or {}),
        lock_path=options.get("lock_path"),
        lock_timeout_s=float(options.get("lock_timeout_s", 600)),
    )
