"""Registration and promotion against a real sqlite registry: tags, model card, aliases, the gate both ways,
the training run the model is logged into, the lock, and two processes registering at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from filelock import FileLock

from sonoseg.registry.gate import PromotionPolicy
from sonoseg.registry.register import (
    EvaluatedModel,
    default_lock_path,
    metrics_from_tags,
    register_and_promote,
    registry_lock,
)
from support.registry import CLASSES, SPLIT, fabricated_metrics, training_summary

TESTS_DIR = Path(__file__).resolve().parents[1]


def evaluated(checkpoint: Path, dice: float, run_id: str | None = None, **metric_overrides) -> EvaluatedModel:
    summary = training_summary(checkpoint, run_id)
    return EvaluatedModel.from_reports(summary, fabricated_metrics(dice, **metric_overrides), {"classes": CLASSES, "source": "synthetic"}, 0.3)


def new_run() -> str:
    with mlflow.start_run() as run:
        return run.info.run_id


def test_the_gate_promotes_then_refuses_and_records_why(checkpoint, store):
    client = mlflow.MlflowClient()
    first = register_and_promote(evaluated(checkpoint, 0.60, new_run()), "sonoseg", PromotionPolicy())
    assert (first["challenger_version"], first["champion_version_before"], first["champion_version_after"]) == (1, None, 1)
    assert first["decision"] == "promoted" and "no champion yet" in first["reason"]

    better = register_and_promote(evaluated(checkpoint, 0.70, new_run()), "sonoseg", PromotionPolicy())
    assert (better["challenger_version"], better["champion_version_before"], better["champion_version_after"]) == (2, 1, 2)
    assert better["decision"] == "promoted" and (better["challenger_value"], better["champion_value"]) == (0.70, 0.60)

    worse = register_and_promote(evaluated(checkpoint, 0.703, new_run()), "sonoseg", PromotionPolicy(margin=0.005))
    assert (worse["challenger_version"], worse["champion_version_after"], worse["decision"]) == (3, 2, "refused")
    assert "short of the margin 0.0050" in worse["reason"]
    assert int(client.get_model_version_by_alias("sonoseg", "champion").version) == 2
    assert int(client.get_model_version_by_alias("sonoseg", "challenger").version) == 3

    version = client.get_model_version("sonoseg", "3")
    assert version.tags["promotion.decision"] == "refused" and version.tags["promotion.reason"] == worse["reason"]
    assert version.tags["promotion.compared_with"] == "v2"
    assert client.get_model_version("sonoseg", "2").tags["promotion.decision"] == "promoted"
    assert "Not promoted" in version.description and worse["reason"] in version.description
    json.dumps(worse, allow_nan=False)  # the record is promotion.json


def test_version_tags_and_model_card(checkpoint, store):
    metrics = {"dice_fetal_head_mean": 0.41, "dice_fetal_head_std": 0.2, "empty_predictions": 3, "hd95_pubic_symphysis_mean": 9.5}
    register_and_promote(evaluated(checkpoint, 0.62, new_run(), **metrics), "sonoseg", PromotionPolicy())
    version = mlflow.MlflowClient().get_model_version("sonoseg", "1")
    tags = version.tags
    assert {k: tags[k] for k in ("method", "label_ratio", "dataset", "data_sha256", "git_commit", "test_split_sha256")} == {
        "method": "supervised", "label_ratio": "0.3", "dataset": "synthetic", "data_sha256": "d" * 64,
        "git_commit": "0" * 40, "test_split_sha256": SPLIT,
    }  # fmt: skip
    assert tags["test.dice_mean"] == "0.62" and tags["test.cases"] == "4" and tags["test.hsd_abs_err_mean"] == "null"
    assert tags["test.distance_unit"] == "px" and "test.test_split_sha256" not in tags
    card = version.description
    for part in ("**Data.** Dataset `synthetic`", "pubic_symphysis (1), fetal_head (2)", "6 labelled and 10 unlabelled",
                 "label ratio 0.3", "**Method.** `supervised`", "| fetal_head | 0.4100 ± 0.2000 |",
                 "**Known failure cases.**", "3 empty predictions", "Weakest class: fetal_head (Dice 0.4100",
                 "Largest boundary error: pubic_symphysis (HD95 9.50 px)", "HSD was measurable on 0 of 4",
                 "**Promotion** (with no champion before it). Promoted to `champion`"):  # fmt: skip
        assert part in card, part


def test_a_champion_tested_on_another_split_is_not_replaced(checkpoint, store):
    register_and_promote(evaluated(checkpoint, 0.5, new_run()), "sonoseg", PromotionPolicy())
    record = register_and_promote(evaluated(checkpoint, 0.9, new_run(), test_split_sha256="f" * 64), "sonoseg", PromotionPolicy())
    assert record["decision"] == "refused" and record["reason"].startswith("not comparable")
    assert int(mlflow.MlflowClient().get_model_version_by_alias("sonoseg", "champion").version) == 1


def test_metrics_survive_the_round_trip_through_tags(checkpoint):
    model = evaluated(checkpoint, 0.55)
    back = metrics_from_tags(model.tags())
    assert back == {k: float(v) if isinstance(v, int) else v for k, v in model.metrics.items()}


def test_the_model_goes_into_the_training_run_whether_active_resumed_or_missing(checkpoint, store):
    client = mlflow.MlflowClient()
    with mlflow.start_run() as training:  # as in one `kedro run` of the whole default pipeline
        register_and_promote(evaluated(checkpoint, 0.5, training.info.run_id), "sonoseg", PromotionPolicy())
        assert mlflow.active_run().info.run_id == training.info.run_id  # left active for kedro-mlflow to end
    assert client.get_model_version("sonoseg", "1").run_id == training.info.run_id

    finished = new_run()  # `kedro run --pipelines registry` later: no active run, the training run is resumed
    register_and_promote(evaluated(checkpoint, 0.5, finished), "sonoseg", PromotionPolicy())
    assert client.get_model_version("sonoseg", "2").run_id == finished
    assert mlflow.active_run() is None and client.get_run(finished).info.status == "FINISHED"

    with mlflow.start_run() as other:  # another run is active: it stays so, and the training run gets no parent
        register_and_promote(evaluated(checkpoint, 0.5, finished), "sonoseg", PromotionPolicy())
        assert mlflow.active_run().info.run_id == other.info.run_id
    assert client.get_model_version("sonoseg", "3").run_id == finished
    assert "mlflow.parentRunId" not in client.get_run(finished).data.tags

    record = register_and_promote(evaluated(checkpoint, 0.5, None), "sonoseg", PromotionPolicy())  # tracking was off
    assert client.get_run(record["run_id"]).info.run_name == "register-supervised"


def test_reports_missing_fields_and_a_missing_checkpoint_are_clear_errors(checkpoint, store, tmp_path):
    with pytest.raises(ValueError, match=r"metrics lacks \['test_split_sha256'\]"):
        EvaluatedModel.from_reports(training_summary(checkpoint, None), {"dice_mean": 0.5}, {"classes": CLASSES}, 0.3)
    with pytest.raises(ValueError, match=r"training_summary lacks \['best_checkpoint'"):
        EvaluatedModel.from_reports({}, fabricated_metrics(0.5), {"classes": CLASSES}, 0.3)
    with pytest.raises(FileNotFoundError, match="gone.pt"):
        register_and_promote(evaluated(tmp_path / "gone.pt", 0.5), "sonoseg", PromotionPolicy())


def test_the_lock_lives_beside_a_sqlite_store_and_times_out_with_its_path(tmp_path):
    assert default_lock_path("sqlite:///mlflow.db") == Path("mlflow.db.registry.lock")
    assert default_lock_path(f"sqlite:///{tmp_path}/x/m.db") == tmp_path / "x" / "m.db.registry.lock"
    remote = default_lock_path("http://tracking:5000")
    assert remote.name.startswith("sonoseg-registry-") and remote == default_lock_path("http://tracking:5000")
    lock = tmp_path / "held.lock"
    with FileLock(str(lock)):  # another holder (flock locks are per open file, so this blocks even in-process)
        with pytest.raises(TimeoutError, match="held.lock: another registration held the registry lock"):
            with registry_lock(lock, timeout_s=0.2):
                pass


def test_two_processes_registering_at_once_leave_consistent_aliases(checkpoint, store, tmp_path):
    dice = {"a": [0.50, 0.72, 0.61, 0.66], "b": [0.55, 0.58, 0.80, 0.70]}
    mlflow.MlflowClient().search_experiments()  # the store exists before (training created it)
    start_at = time.time() + 8  # both workers have imported everything by then and start together
    workers = []
    for name, values in dice.items():
        config = tmp_path / f"{name}.json"
        config.write_text(json.dumps({"tracking_uri": store, "checkpoint": str(checkpoint), "model_name": "sonoseg",
                                      "worker": name, "dice": values, "start_at": start_at,
                                      "records": str(tmp_path / f"{name}.records.json")}))  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
        workers.append(subprocess.Popen([sys.executable, "-m", "support.registry", str(config)], cwd=tmp_path, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))  # fmt: skip
    for worker in workers:
        output, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0, output[-3000:]

    client = mlflow.MlflowClient()
    versions = sorted(client.search_model_versions("name='sonoseg'"), key=lambda v: int(v.version))
    # every registration is there exactly once, numbered 1..8
    assert [int(v.version) for v in versions] == list(range(1, 9))
    commits = [v.tags["git_commit"] for v in versions]
    assert sorted(commits) == sorted(f"{w}-{i}" for w, values in dice.items() for i in range(len(values)))
    value = {int(v.version): float(v.tags["test.dice_mean"]) for v in versions}
    # the aliases point at existing versions: the challenger is the last registered, the champion the best
    champion = client.get_model_version_by_alias("sonoseg", "champion")
    assert int(client.get_model_version_by_alias("sonoseg", "challenger").version) == 8
    assert value[int(champion.version)] == 0.80
    # each decision was taken against the champion of the moment: the running best in version order
    best = -1.0
    for v in versions:
        assert v.tags["promotion.decision"] == ("promoted" if value[int(v.version)] > best else "refused"), v.version
        best = max(best, value[int(v.version)])
    records = [r for name in dice for r in json.loads((tmp_path / f"{name}.records.json").read_text())]
    assert sorted(r["challenger_version"] for r in records) == list(range(1, 9))
