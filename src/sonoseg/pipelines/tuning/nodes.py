"""Tuning nodes: thin adapters over ``sonoseg.tuning``."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import torch

from sonoseg.io.store import SampleStore
from sonoseg.ssl.base import method_class
from sonoseg.training.config import TrainerConfig
from sonoseg.training.data import training_sets
from sonoseg.tuning import (
    TRIAL_FAILURES,
    MlflowTrialRuns,
    TrainingObjective,
    TuningConfig,
    display_storage,
    make_pruner,
    open_study,
    run_worker,
    study_figures,
    study_report,
    trial_training_params,
    tuned_params,
)

logger = logging.getLogger(__name__)


def tune_hyperparameters(
    manifest: pd.DataFrame,
    splits: pd.DataFrame,
    dataset_info: dict[str, Any],
    training: dict[str, Any],
    tuning: dict[str, Any],
    store_dir: str,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Run this worker's share of the study (train split to fit, val split to score). Returns the
    study report, once as it is and once as the ``tuning_<method>`` partition, and the figures as
    ``tuning_<method>_<figure>`` partitions. Processes running this node against one storage share
    the study."""
    import mlflow

    config = TuningConfig.from_params(tuning)
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    space = config.search_space()
    space.check_paths(training, config.method, where=f"tuning.search_spaces.{config.method}")
    base = trial_training_params(training, config.method, config.trial_iterations, config.val_every)
    trainer_config = TrainerConfig.from_params(base)  # a bad base config fails here, not in every trial
    sets = training_sets(manifest, splits, SampleStore(store_dir), trainer_config.input_size,
                         use_all_labels=method_class(config.method).uses_all_labels)  # fmt: skip
    study = open_study(config.storage, config.name, make_pruner(config.pruner, config.trial_iterations), config.method)
    runs = MlflowTrialRuns(study, config.method) if mlflow.active_run() is not None else None
    objective = TrainingObjective(space, base, sets, len(dataset_info["classes"]), config.study_dir,
                                  config.keep_checkpoints, runs)  # fmt: skip
    ran = run_worker(study, objective, config.worker, catch=TRIAL_FAILURES, description=f"tune {config.method}")
    report = study_report(study, space, config.worker.n_trials, display_storage(config.storage))
    logger.info("Study '%s': this worker ran %d trials; the study has %s; best %s",
                config.name, ran, report["states"], report["best"])  # fmt: skip
    if runs is not None and report["best"] is not None:
        mlflow.log_metric("tuning/best_val_dice", report["best"]["value"])
        mlflow.set_tags({"study_name": config.name, "tuning_best_trial": report["best"]["trial_number"]})
    prefix = f"tuning_{config.method}"
    figures = {f"{prefix}_{name}": figure for name, figure in study_figures(study).items()}
    return report, {prefix: report}, figures


def select_tuned_params(report: dict[str, Any]) -> dict[str, Any]:
    """The tuned-params file: method, study, best value, trial number and the params by training path."""
    return tuned_params(report)
