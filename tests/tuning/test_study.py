"""The study runner with cheap objectives: the budget, failures, Ctrl-C, dead workers and races."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from sonoseg.training.trainer import TrainingDiverged
from sonoseg.tuning import WorkerSettings, open_study, run_worker, study_counts
from sonoseg.tuning.study import FAIL_REASON, HEARTBEAT, WORKER, retried_trial_number

FAST = {"heartbeat_interval": 0.1, "grace_period": 1.0, "progress": False}


@pytest.fixture
def study(tmp_path) -> optuna.Study:
    return open_study(f"sqlite:///{tmp_path}/optuna.db", "s", optuna.pruners.NopPruner(), "hdc")


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def test_the_budget_counts_complete_and_pruned_trials_and_failures_do_not_use_it(study):
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number in (1, 4):
            raise TrainingDiverged(f"loss is NaN at iteration {trial.number}")
        if trial.number == 2:
            raise optuna.TrialPruned()
        return x

    ran = run_worker(study, objective, WorkerSettings(n_trials=5, **FAST), catch=(TrainingDiverged,))
    assert ran == 7
    assert states(study) == ["COMPLETE", "FAIL", "PRUNED", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[1].user_attrs[FAIL_REASON] == "TrainingDiverged: loss is NaN at iteration 1"
    assert all(t.user_attrs[WORKER].endswith(f":{__import__('os').getpid()}") for t in study.trials)
    assert run_worker(study, objective, WorkerSettings(n_trials=5, **FAST)) == 0  # nothing left to do


def test_a_hopeless_study_stops_at_max_failed_trials(study):
    def objective(trial: optuna.Trial) -> float:
        raise TrainingDiverged("NaN")

    assert run_worker(study, objective, WorkerSettings(n_trials=10, max_failed_trials=3, **FAST), catch=(TrainingDiverged,)) == 3
    assert study_counts(study).failed == 3


def test_a_bug_fails_its_trial_with_the_reason_and_stops_the_worker(study):
    def objective(trial: optuna.Trial) -> float:
        raise KeyError("nope")

    with pytest.raises(KeyError):
        run_worker(study, objective, WorkerSettings(n_trials=3, **FAST), catch=(TrainingDiverged,))
    assert states(study) == ["FAIL"] and study.trials[0].user_attrs[FAIL_REASON] == "KeyError: 'nope'"


def test_a_nan_objective_value_fails_the_trial_and_the_study_goes_on(study):
    values = iter([float("nan"), 0.5, 0.7])
    run_worker(study, lambda trial: next(values), WorkerSettings(n_trials=2, **FAST))
    assert states(study) == ["FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[0].user_attrs[FAIL_REASON] == "the objective is nan"


def test_ctrl_c_fails_the_trial_queues_a_retry_and_the_next_worker_resumes_it(study):
    seen: list[tuple[int, float, str | None]] = []

    def interrupted(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr("checkpoint_dir", "trials/trial_0000")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_worker(study, interrupted, WorkerSettings(n_trials=2, **FAST))
    assert states(study) == ["FAIL", "WAITING"]
    assert study.trials[0].user_attrs[FAIL_REASON].startswith("interrupted")

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        seen.append((trial.number, x, trial.user_attrs.get("checkpoint_dir")))
        return x

    run_worker(study, objective, WorkerSettings(n_trials=2, **FAST))
    first_x = study.trials[0].params["x"]
    assert seen[0] == (1, first_x, "trials/trial_0000")  # same params, same folder: it resumes there
    assert retried_trial_number(study.trials[1]) == 0
    assert states(study) == ["FAIL", "COMPLETE", "COMPLETE"]


@pytest.mark.parametrize("silent_before_the_worker_starts", [0.0, FAST["grace_period"] + 0.1])
def test_a_dead_workers_trial_is_failed_after_the_grace_period_and_retried(study, silent_before_the_worker_starts):
    started = time.monotonic()  # before ask: the grace period runs from the trial's start, not from after it
    dead = study.ask()  # a trial whose worker died: RUNNING, and no heartbeat ever comes
    dead_x = dead.suggest_float("x", 0, 1)
    time.sleep(silent_before_the_worker_starts)
    run_worker(study, lambda trial: trial.suggest_float("x", 0, 1), WorkerSettings(n_trials=2, **FAST))
    assert time.monotonic() - started >= FAST["grace_period"]  # it waited for the dead trial, then took it over
    assert states(study) == ["FAIL", "COMPLETE", "COMPLETE"]
    assert "no heartbeat" in study.trials[0].user_attrs[FAIL_REASON]
    # Stale before the worker's first trial (as under load), the retry is trial 1, else trial 2;
    # either way exactly one trial retries it, with its params, and completes.
    retries = [t for t in study.trials if retried_trial_number(t) == 0]
    assert [(t.state, t.params["x"]) for t in retries] == [(TrialState.COMPLETE, dead_x)]


def test_a_trial_that_loses_the_race_for_the_budget_closes_itself_as_surplus(study):
    study.ask()  # another worker's live trial holds the whole budget (n_trials=1) ...
    study.enqueue_trial({"x": 0.5})  # ... when this worker takes a trial anyway, as after a race
    run_worker(study, lambda trial: trial.suggest_float("x", 0, 1), WorkerSettings(n_trials=1, **FAST))
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["surplus"] is True and "x" not in trials[1].params  # never trained
    counts = study_counts(study)
    assert (counts.complete, counts.surplus, counts.failed) == (1, 1, 1)


def test_running_trials_send_heartbeats(study):
    def objective(trial: optuna.Trial) -> float:
        time.sleep(0.6)
        return 1.0

    run_worker(study, objective, WorkerSettings(n_trials=1, **FAST))
    trial = study.trials[0]
    assert trial.user_attrs[HEARTBEAT] - trial.datetime_start.timestamp() >= 0.4


def test_settings_refuse_a_heartbeat_slower_than_the_grace_period():
    with pytest.raises(ValueError, match="below tuning.grace_period"):
        WorkerSettings(n_trials=3, heartbeat_interval=60, grace_period=30)
