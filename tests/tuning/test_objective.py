"""The training objective's pruning tracker, and trials as nested MLflow runs under one parent per study."""

from __future__ import annotations

import mlflow
import optuna
import pytest
from support.training import tiny_store
from support.tuning import DATASET_INFO, tiny_parameters

from sonoseg.pipelines.tuning.nodes import tune_hyperparameters
from sonoseg.tuning import PruningTracker


class Recorder:
    def __init__(self) -> None:
        self.logged: list[tuple[dict, int]] = []
        self.flushes = 0

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.logged.append((metrics, step))

    def flush(self) -> None:
        self.flushes += 1


def test_pruning_tracker_reports_val_dice_and_raises_when_the_pruner_says_so():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    trial = study.ask()
    inner = Recorder()
    tracker = PruningTracker(trial, inner)
    tracker.log_metrics({"train/total": 1.3}, 1)  # losses are not forwarded: too many rows for many trials
    tracker.log_metrics({"val/dice": 0.8}, 2)
    with pytest.raises(optuna.TrialPruned, match="val Dice 0.2000 at iteration 4"):
        tracker.log_metrics({"val/dice": 0.2}, 4)
    assert inner.logged == [({"val/dice": 0.8}, 2), ({"val/dice": 0.2}, 4)] and inner.flushes == 1
    assert study.trials[0].intermediate_values == {2: 0.8, 4: 0.2}


@pytest.fixture
def tracking(tmp_path):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("tuning-test")
    yield mlflow.MlflowClient()
    mlflow.set_tracking_uri(previous)


def test_trials_are_nested_runs_under_the_first_workers_run_of_the_study(tmp_path, tracking):
    manifest, splits, _ = tiny_store(tmp_path / "store")

    def worker(storage: str, n_trials: int) -> str:
        training, tuning = tiny_parameters(tmp_path, storage, n_trials=n_trials, pruner="none")
        with mlflow.start_run() as run:  # what kedro-mlflow opens around the node
            tune_hyperparameters(manifest, splits, DATASET_INFO, training, tuning, str(tmp_path / "store"))
        return run.info.run_id

    first = worker(f"sqlite:///{tmp_path}/a.db", 2)
    later = worker(f"sqlite:///{tmp_path}/a.db", 3)  # a second worker, or a resume: one more trial
    fresh = worker(f"sqlite:///{tmp_path}/b.db", 1)  # a new study under the same name: its own parent
    experiment = tracking.get_experiment_by_name("tuning-test").experiment_id
    trials = tracking.search_runs([experiment], "tags.trial_number != ''", order_by=["attributes.start_time ASC"])
    assert [(r.data.tags["mlflow.parentRunId"], r.data.tags["trial_number"]) for r in trials] == [
        (first, "0"), (first, "1"), (first, "2"), (fresh, "0")]  # fmt: skip
    for run in trials:
        assert run.data.tags["study_name"] == "sonoseg-hdc" and run.data.tags["state"] == "COMPLETE"
        assert run.info.status == "FINISHED" and float(run.data.params["lr"]) > 0
        history = tracking.get_metric_history(run.info.run_id, "val/dice")
        assert [m.step for m in history] == [2, 4, 6]
        assert run.data.metrics["val_dice_best"] == max(m.value for m in history)
    parent = tracking.get_run(first)
    assert parent.data.tags["study_name"] == "sonoseg-hdc" and "tuning/best_val_dice" in parent.data.metrics
    assert tracking.get_run(later).data.tags["tuning_parent_of"] == parent.data.tags["tuning_parent_of"]
