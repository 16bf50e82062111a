"""Training node: a thin adapter over ``sonoseg.training``."""

from __future__ import annotations

import logging
import subprocess
from typing import Any

import pandas as pd

from sonoseg.evaluation.plots import learning_curves
from sonoseg.io.store import SampleStore, samples_digest
from sonoseg.ssl.base import method_class
from sonoseg.training.config import TrainerConfig
from sonoseg.training.data import training_sets
from sonoseg.training.trainer import Trainer, summarise
from sonoseg.training.tracking import MlflowTracker

logger = logging.getLogger(__name__)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train_model(
    manifest: pd.DataFrame, splits: pd.DataFrame, dataset_info: dict[str, Any], options: dict[str, Any], store_dir: str
) -> tuple[dict[str, Any], Any]:
    """Train ``training.method`` on the splits; return a summary and the learning-curve figure.

    Within an MLflow run (kedro-mlflow opens one) it also logs per-iteration losses, val Dice, the
    data version, the git commit and the best checkpoint.
    """
    import mlflow

    config = TrainerConfig.from_params(options)
    num_classes = len(dataset_info["classes"])
    sets = training_sets(
        manifest, splits, SampleStore(store_dir), config.input_size, use_all_labels=method_class(config.method).uses_all_labels
    )
    trainer = Trainer(config, options.get(config.method) or {}, num_classes)
    run = mlflow.active_run() if trainer.rank == 0 else None  # under DDP only rank 0 reports
    version, commit = samples_digest(manifest), git_commit()
    if run is not None:
        mlflow.set_tags({"data_version": version, "git_commit": commit, "method": config.method})
        trainer.tracker = MlflowTracker()
    result = trainer.fit(sets)
    if run is not None and result.best_checkpoint.is_file():
        mlflow.log_artifact(str(result.best_checkpoint), artifact_path="checkpoints")
        mlflow.log_metric("best_val_dice", result.best_val_dice)
    summary = {
        "method": config.method,
        "best_val_dice": result.best_val_dice,
        "best_iteration": result.best_iteration,
        "iterations": result.iterations_done,
        "best_checkpoint": str(result.best_checkpoint),
        "last_checkpoint": str(result.last_checkpoint),
        "n_labelled": sets.n_labelled,
        "n_unlabelled": sets.n_unlabelled,
        "n_val": len(sets.val),
        "device": str(trainer.device),
        "data_version": version,
        "git_commit": commit,
        "input_size": config.input_size,
        "mlflow_run_id": run.info.run_id if run is not None else None,
        "losses": summarise(result.history),
        "val_history": result.val_history,
    }
    figure = learning_curves(result.history, result.val_history, title=f"{config.method}: best val Dice {result.best_val_dice:.3f}")
    return summary, figure
