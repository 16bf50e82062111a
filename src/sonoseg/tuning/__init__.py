"""Hyperparameter tuning with Optuna (no Kedro): search spaces keyed by training parameter paths,
storages for one or many workers, a budgeted multi-worker study runner with heartbeats and retries,
the training objective with pruning, and the study's report, figures and tuned-params file."""

from sonoseg.tuning.config import TuningConfig
from sonoseg.tuning.objective import (
    TRIAL_FAILURES,
    MlflowTrialRuns,
    PruningTracker,
    TrainingObjective,
    trial_training_params,
)
from sonoseg.tuning.report import apply_tuned, study_figures, study_report, tuned_params
from sonoseg.tuning.space import ParamSpec, SearchSpace, apply_params
from sonoseg.tuning.storage import display_storage, make_storage
from sonoseg.tuning.study import (
    StudyCounts,
    WorkerSettings,
    fail_stale_trials,
    make_pruner,
    open_study,
    run_worker,
    study_counts,
)

__all__ = [
    "TRIAL_FAILURES",
    "MlflowTrialRuns",
    "ParamSpec",
    "PruningTracker",
    "SearchSpace",
    "StudyCounts",
    "TrainingObjective",
    "TuningConfig",
    "WorkerSettings",
    "apply_params",
    "apply_tuned",
    "display_storage",
    "fail_stale_trials",
    "make_pruner",
    "make_storage",
    "open_study",
    "run_worker",
    "study_counts",
    "study_figures",
    "study_report",
    "trial_training_params",
    "tuned_params",
]
