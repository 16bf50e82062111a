"""What a study leaves behind: a JSON report, three figures, and the tuned-params file that training
reads (``training.use_tuned: true``)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from sonoseg.tuning.space import SearchSpace, apply_params
from sonoseg.tuning.study import FAIL_REASON, HEARTBEAT, SURPLUS, retried_trial_number, study_counts

__all__ = ["apply_tuned", "study_figures", "study_report", "tuned_params"]

_INTERNAL_ATTRS = {HEARTBEAT, FAIL_REASON, SURPLUS}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def study_report(study: optuna.Study, space: SearchSpace, n_trials: int, storage: str) -> dict[str, Any]:
    """Best value and params, trial counts by state, and one row per trial (params as training paths)."""
    counts = study_counts(study)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        rows.append({
            "number": trial.number,
            "state": trial.state.name,
            "value": _finite(trial.value) if trial.state == TrialState.COMPLETE else None,
            "last_reported": _finite(trial.intermediate_values.get(trial.last_step)) if trial.last_step is not None else None,
            "last_step": trial.last_step,
            "duration_s": duration,
            "params": space.training_values(trial.params),
            # a retry inherits its failed original's user attributes, the reason included
            "fail_reason": trial.user_attrs.get(FAIL_REASON) if trial.state == TrialState.FAIL else None,
            "retry_of": retried_trial_number(trial),
            "user_attrs": {k: v for k, v in trial.user_attrs.items() if k not in _INTERNAL_ATTRS},
        })  # fmt: skip
    best = None
    if counts.complete:
        trial = study.best_trial
        best = {"value": trial.value, "trial_number": trial.number, "params": space.training_values(trial.params)}
    return {
        "study_name": study.study_name,
        "method": study.user_attrs.get("method"),
        "storage": storage,
        "objective": "val Dice, best over the trial's validations (maximised)",
        "n_trials_budget": n_trials,
        "states": {"COMPLETE": counts.complete, "PRUNED": counts.pruned, "FAIL": counts.failed,
                   "FAIL_SURPLUS": counts.surplus, "RUNNING": counts.running, "WAITING": counts.waiting},  # fmt: skip
        "best": best,
        "trials": rows,
    }


def tuned_params(report: Mapping[str, Any]) -> dict[str, Any]:
    """The tuned-params file's content from a study report; an error when no trial completed."""
    if report.get("best") is None:
        raise ValueError(
            f"study '{report['study_name']}' has no complete trial ({report['states']}): nothing to write to the "
            "tuned-params file; see the fail reasons in the tuning report"
        )
    return {
        "method": report["method"],
        "study_name": report["study_name"],
        "storage": report["storage"],
        "best_value": report["best"]["value"],
        "trial_number": report["best"]["trial_number"],
        "params": dict(report["best"]["params"]),
    }


def apply_tuned(training: Mapping[str, Any], tuned: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``training`` with the tuned params applied; ``source`` names the file in errors."""
    if not tuned:
        raise ValueError(
            f"training.use_tuned is true but {source} is missing or empty: run `kedro run --pipelines tuning` "
            "first, or set training.use_tuned=false"
        )
    if tuned.get("method") != training.get("method") or "params" not in tuned:
        raise ValueError(
            f"{source} holds params tuned for '{tuned.get('method')}' but training.method is "
            f"'{training.get('method')}': tune this method or set training.method={tuned.get('method')}"
        )
    try:
        return apply_params(training, tuned["params"])
    except KeyError as error:
        raise ValueError(f"{source}: {error.args[0]}") from None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window (workers run headless)
    import matplotlib.pyplot as plt

    return plt


def _placeholder(title: str, message: str):
    figure, axes = _pyplot().subplots(figsize=(6, 3.5))
    axes.axis("off")
    axes.set_title(title)
    axes.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return figure


def study_figures(study: optuna.Study) -> dict[str, Any]:
    """``history``, ``importances`` and ``parallel_coordinate`` figures; a figure that says why when
    the study cannot support one yet (importances need two complete trials sharing a parameter)."""
    _pyplot()  # the Agg backend, before Optuna imports pyplot
    from optuna.visualization import matplotlib as plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    figures: dict[str, Any] = {}
    makers = {"history": (plots.plot_optimization_history, 1), "importances": (plots.plot_param_importances, 2),
              "parallel_coordinate": (plots.plot_parallel_coordinate, 2)}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # small studies draw "few trials per regime" and "identical ylims" warnings: the figures are still right
        warnings.simplefilter("ignore", UserWarning)
        for name, (make, needed) in makers.items():
            title = name.replace("_", " ")
            if len(complete) < needed:
                figures[name] = _placeholder(title, f"needs {needed} complete trial(s); the study has {len(complete)}")
                continue
            try:
                axes = make(study)
            except (ValueError, RuntimeError) as error:  # e.g. no parameter common to the complete trials
                figures[name] = _placeholder(title, f"not available: {error}")
                continue
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.set_size_inches(9, 5)
            figure.tight_layout()
            figures[name] = figure
    return figures
