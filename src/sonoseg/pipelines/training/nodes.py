"""Training node: a thin adapter over ``sonoseg.training``."""

from __future__ import annotations

import logging
import subprocess
import time
from typing import Any

import pandas as pd

from sonoseg.evaluation.plots import learning_curves
from sonoseg.io.dvc_hashes import stage_data_hashes
from sonoseg.io.store import SampleStore, samples_digest
from sonoseg.ssl.base import method_class
from sonoseg.training.config import TrainerConfig
from sonoseg.training.data import training_sets
from sonoseg.training.trainer import Trainer, fit_summary
from sonoseg.training.tracking import MlflowTracker
from sonoseg.tuning.report import apply_tuned

logger = logging.getLogger(__name__)

TUNED_PARAMS_FILE = "data/05_model_input/tuned_params.yml"  # where conf/base/catalog.yml keeps it


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train_model(
    manifest: pd.DataFrame,
    splits: pd.DataFrame,
    dataset_info: dict[str, Any],
    options: dict[str, Any],
    store_dir: str,
    tuned: dict[str, Any],
    dvc_pipeline: dict[str, Any],
    dvc_lock: dict[str, Any],
) -> tuple[dict[str, Any], Any, pd.DataFrame]:
    """Train ``training.method`` on the splits; return a summary, the learning-curve figure and the val curve.

    With ``training.use_tuned`` the tuned params (``tuned``, the file the tuning pipeline wrote; ``{}``
    when there is none) are applied over ``options`` first. Within an MLflow run (kedro-mlflow opens
    one) it also logs per-iteration losses, val Dice, the data version, the git commit, the tuned
    values and the best checkpoint. Under ``dvc repro`` (``dvc_pipeline`` and ``dvc_lock`` are the parsed
    dvc.yaml and dvc.lock, ``{}`` without DVC) the DVC hashes of its input data go to the summary and to
    ``dvc.<path>`` tags.
    """
    import mlflow

    tuned_from = None
    if options.get("use_tuned"):
        options = apply_tuned(options, tuned, source=f"the tuned_params dataset ({TUNED_PARAMS_FILE})")
        tuned_from = {"study_name": tuned["study_name"], "trial_number": tuned["trial_number"]}
        logger.info("Training with the params of trial %s of study '%s' (val Dice %.4f): %s",
                    tuned["trial_number"], tuned["study_name"], tuned["best_value"], tuned["params"])  # fmt: skip
    config = TrainerConfig.from_params(options)
    num_classes = len(dataset_info["classes"])
    sets = training_sets(
        manifest, splits, SampleStore(store_dir), config.input_size, use_all_labels=method_class(config.method).uses_all_labels
    )
    trainer = Trainer(config, options.get(config.method) or {}, num_classes)
    run = mlflow.active_run() if trainer.rank == 0 else None  # under DDP only rank 0 reports
    version, commit = samples_digest(manifest), git_commit()
    dvc_data = stage_data_hashes(dvc_pipeline, dvc_lock, "training")
    if run is not None:
        mlflow.set_tags({"data_version": version, "git_commit": commit, "method": config.method})
        mlflow.set_tags({f"dvc.{path}": md5 for path, md5 in dvc_data.items()})
        if tuned_from is not None:
            mlflow.set_tags({"tuned_study": tuned["study_name"], "tuned_trial": tuned["trial_number"]})
            mlflow.log_params({f"tuned.{path}": value for path, value in tuned["params"].items()})
        trainer.tracker = MlflowTracker()
    started = time.perf_counter()
    result = trainer.fit(sets)
    seconds = time.perf_counter() - started
    if run is not None and result.best_checkpoint.is_file():
        mlflow.log_artifact(str(result.best_checkpoint), artifact_path="checkpoints")
        mlflow.log_metric("best_val_dice", result.best_val_dice)
    summary = {
        **fit_summary(trainer, result, sets, seconds),
        "data_version": version,
        "dvc_data": dvc_data,
        "git_commit": commit,
        "tuned_from": tuned_from,
        "mlflow_run_id": run.info.run_id if run is not None else None,
    }
    figure = learning_curves(result.history, result.val_history, title=f"{config.method}: best val Dice {result.best_val_dice:.3f}")
    val_curve = pd.DataFrame(result.val_history, columns=["iteration", "val_dice"])
    return summary, figure, val_curve
