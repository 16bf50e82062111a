"""Several worker processes on one study: real `kedro run`s sharing a journal, and a killed worker
whose trial the next worker resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from support.kedro_runs import PROJECT_ROOT
from support.tuning import kedro_project, tiny_parameters, write_tiny_store

from sonoseg.tuning import make_storage
from sonoseg.tuning.study import FAIL_REASON, WORKER, retried_trial_number

TESTS = PROJECT_ROOT / "tests"


def environment(cwd: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(TESTS), "KEDRO_LOGGING_CONFIG": str(cwd / "conf" / "logging.yml"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip


def test_two_kedro_runs_share_one_journal_study_for_exactly_n_trials(tmp_path):
    project = kedro_project(tmp_path / "project")
    journal = "data/06_models/tuning/study.journal"
    params = ("training.input_size=32,training.labelled_batch=2,training.unlabelled_batch=2,training.device=cpu,"
              f"tuning.n_trials=6,tuning.trial_iterations=4,tuning.val_every=2,tuning.storage={journal},"
              "tuning.progress=false,tuning.torch_threads=1,tuning.heartbeat_interval=1,tuning.grace_period=10")  # fmt: skip
    command = [sys.executable, "-m", "kedro", "run", "--pipelines", "tuning", "--params", params]
    workers = [subprocess.Popen(command, cwd=project, env=environment(project), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]  # fmt: skip
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    study = optuna.load_study(study_name="sonoseg-hdc", storage=make_storage(str(project / journal)))
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 6 and sorted(t.number for t in trials) == list(range(6))
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    assert len({t.user_attrs[WORKER] for t in trials}) == 2  # both processes ran trials
    report = json.loads((project / "data/08_reporting/tuning_hdc.json").read_text())
    assert report["states"]["COMPLETE"] + report["states"]["PRUNED"] == 6 and report["states"]["FAIL"] == 0
    assert (project / "data/05_model_input/tuned_params.yml").is_file()
    assert (project / "data/08_reporting/tuning_hdc_history.png").stat().st_size > 5_000


def test_a_killed_worker_leaves_a_trial_that_the_next_worker_resumes(tmp_path):
    store = write_tiny_store(tmp_path / "store")
    journal = str(tmp_path / "study.journal")
    training, tuning = tiny_parameters(tmp_path, journal, n_trials=2, trial_iterations=40, val_every=4, pruner="none",
                                       grace_period=2)  # fmt: skip
    config = tmp_path / "worker.json"
    config.write_text(json.dumps({"training": training, "tuning": tuning, "store_dir": str(store),
                                  "report": str(tmp_path / "report.json")}))  # fmt: skip
    command = [sys.executable, "-m", "support.tuning", str(config)]
    checkpoint = tmp_path / "trials" / "sonoseg-hdc" / "trial_0000" / "hdc" / "last.pt"
    first = subprocess.Popen(command, env=environment(PROJECT_ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoint.is_file() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert checkpoint.is_file(), "the first worker never wrote a checkpoint"
    first.send_signal(signal.SIGKILL)
    first.wait()
    study = optuna.load_study(study_name="sonoseg-hdc", storage=make_storage(journal))
    assert [t.state.name for t in study.trials] == ["RUNNING"]  # left behind by the dead worker

    second = subprocess.run(command, env=environment(PROJECT_ROOT), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming hdc from" in second.stderr and str(checkpoint) in second.stderr
    study = optuna.load_study(study_name="sonoseg-hdc", storage=make_storage(journal))
    killed, retry, fresh = study.trials
    assert killed.state.name == "FAIL" and "no heartbeat" in killed.user_attrs[FAIL_REASON]
    assert retry.state.name == "COMPLETE" and retried_trial_number(retry) == 0 and retry.params == killed.params
    assert retry.user_attrs["checkpoint_dir"] == killed.user_attrs["checkpoint_dir"]
    assert fresh.state.name == "COMPLETE" and retried_trial_number(fresh) is None
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["states"] == {"COMPLETE": 2, "PRUNED": 0, "FAIL": 1, "FAIL_SURPLUS": 0, "RUNNING": 0, "WAITING": 0}
