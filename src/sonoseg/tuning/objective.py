"""The tuning objective: train the method with one trial's values on the train split and return its
best val Dice (the score that picks ``best.pt``). Test data never enters.

Each trial trains in its own folder (``<trials_dir>/trial_NNNN``), which a retried trial inherits,
so a trial whose worker was killed resumes from its ``last.pt``. The val Dice of every validation
goes to the trial (``trial.report``) and the pruner may stop the trial there.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from sonoseg.training.config import TrainerConfig
from sonoseg.training.data import TrainingSets
from sonoseg.training.tracking import MlflowTracker, NullTracker, Tracker
from sonoseg.training.trainer import Trainer, TrainingDiverged
from sonoseg.tuning.space import SearchSpace, apply_params
from sonoseg.tuning.study import STUDY_UID

__all__ = ["TRIAL_FAILURES", "MlflowTrialRuns", "PruningTracker", "TrainingObjective", "trial_training_params"]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint_dir"  # user attribute; copied into retries, so they resume the same folder
# Exceptions that fail one trial (recorded with the reason) while the study goes on.
TRIAL_FAILURES: tuple[type[BaseException], ...] = (TrainingDiverged, torch.OutOfMemoryError)


def trial_training_params(training: Mapping[str, Any], method: str, iterations: int, val_every: int) -> dict[str, Any]:
    """The ``training`` parameters a trial starts from: the method, the trial budget, validation (and a
    checkpoint, for resume) every ``val_every`` iterations, no per-trial progress bar."""
    return {
        **dict(training),
        "method": method,
        "iterations": iterations,
        "val_every": val_every,
        "checkpoint_every": val_every,
        "progress": False,
    }


class PruningTracker:
    """Forwards metrics to ``inner``; reports val Dice to the trial and raises ``TrialPruned`` when the
    pruner says so. The trainer stays unaware of Optuna."""

    def __init__(self, trial: optuna.Trial, inner: Tracker | None = None) -> None:
        self.trial = trial
        self.inner = inner or NullTracker()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if "val/dice" not in metrics:
            return  # per-iteration losses of many trials would swamp the tracking store
        self.inner.log_metrics(metrics, step)
        self.trial.report(metrics["val/dice"], step)
        if self.trial.should_prune():
            self.inner.flush()
            raise optuna.TrialPruned(f"val Dice {metrics['val/dice']:.4f} at iteration {step}")

    def flush(self) -> None:
        self.inner.flush()


class MlflowTrialRuns:
    """Each trial as an MLflow run nested under one parent run per study.

    Every worker tags its active run (kedro-mlflow's run of ``kedro run --pipelines tuning``) with
    ``tuning_parent_of=<study name>:<study uid>``; the parent of every trial is the earliest run so
    tagged in the experiment. So N workers, and a study resumed later, keep all trials under one
    parent, the first worker's run, while a new study that reuses a name gets its own. Trial runs
    carry the tags ``study_name``, ``trial_number`` and ``method``, the trial's values as params, val
    Dice per validation, and the Optuna outcome (``state``).
    """

    PARENT_TAG = "tuning_parent_of"

    def __init__(self, study: optuna.Study, method: str) -> None:
        import mlflow

        active = mlflow.active_run()
        if active is None:
            raise RuntimeError("MlflowTrialRuns needs an active MLflow run (the parent tuning run)")
        self.client = mlflow.MlflowClient()
        self.study, self.method = study, method
        self.own_run_id = active.info.run_id
        self.experiment_id = active.info.experiment_id

    def parent_run_id(self) -> str:
        """Tag this worker's run with the study's key (read now: see ``open_study``), then the earliest such run."""
        key = f"{self.study.study_name}:{self.study.user_attrs.get(STUDY_UID, '')}"
        self.client.set_tag(self.own_run_id, self.PARENT_TAG, key)
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{self.PARENT_TAG} = '{key}'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        return runs[0].info.run_id

    def start(self, trial: optuna.Trial, values: Mapping[str, Any]) -> str:
        from mlflow.entities import Param
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        name = self.study.study_name
        tags = {MLFLOW_PARENT_RUN_ID: self.parent_run_id(), "study_name": name,
                "trial_number": str(trial.number), "method": self.method}  # fmt: skip
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=f"{name}-trial-{trial.number}")
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in values.items()])
        return run.info.run_id

    def end(self, run_id: str, state: str, value: float | None, reason: str | None) -> None:
        if value is not None:
            self.client.log_metric(run_id, "val_dice_best", value)
        self.client.set_tag(run_id, "state", state)
        if reason:
            self.client.set_tag(run_id, "reason", reason[:5000])
        status = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "INTERRUPTED": "KILLED"}.get(state, "FAILED")
        self.client.set_terminated(run_id, status)


@dataclass
class TrainingObjective:
    """Optuna objective: train with the trial's values, return the best val Dice.

    Args:
        space: the method's search space.
        training: the trial's starting ``training`` parameters (:func:`trial_training_params`).
        sets: train and val sets (built once per worker).
        num_classes: classes, background included.
        trials_dir: each trial trains in ``trials_dir/trial_NNNN``.
        keep_checkpoints: keep finished trials' folders (default: removed; an interrupted or killed
            trial's folder stays for its retry).
        runs: MLflow trial runs, or None to log nothing.
    """

    space: SearchSpace
    training: dict[str, Any]
    sets: TrainingSets
    num_classes: int
    trials_dir: Path
    keep_checkpoints: bool = False
    runs: MlflowTrialRuns | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        values = self.space.suggest(trial)
        params = apply_params(self.training, values)
        folder = trial.user_attrs.get(CHECKPOINT_DIR) or str(Path(self.trials_dir) / f"trial_{trial.number:04d}")
        trial.set_user_attr(CHECKPOINT_DIR, folder)
        params["output_dir"] = folder
        config = TrainerConfig.from_params(params)
        run_id = self.runs.start(trial, values) if self.runs is not None else None
        tracker = PruningTracker(trial, MlflowTracker(run_id=run_id) if run_id else None)
        outcome, value, reason = "FAIL", None, None
        try:
            trainer = Trainer(config, params.get(config.method) or {}, self.num_classes, tracker=tracker)
            value = trainer.fit(self.sets).best_val_dice
            outcome = "COMPLETE"
            return value
        except optuna.TrialPruned as pruned:
            outcome, reason = "PRUNED", str(pruned)
            raise
        except KeyboardInterrupt:
            outcome = "INTERRUPTED"
            raise
        except BaseException as error:
            reason = f"{type(error).__name__}: {error}"
            if isinstance(error, torch.OutOfMemoryError) and torch.cuda.is_available():
                torch.cuda.empty_cache()  # leave the next trial the memory this one held
            raise
        finally:
            if run_id is not None:
                self.runs.end(run_id, outcome, value, reason)
            if outcome != "INTERRUPTED" and not self.keep_checkpoints:
                shutil.rmtree(folder, ignore_errors=True)
