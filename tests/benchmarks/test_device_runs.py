"""device_runs.py: the parameters a run gets, and pack → train → import on a tiny synthetic store, on the CPU."""

from __future__ import annotations

import argparse
import json
import sys

import mlflow
import pandas as pd
import pytest
from support.scripts import BENCHMARKS, load_script

from sonoseg.io.readers import SyntheticReader
from sonoseg.io.store import SampleStore, ingest


@pytest.fixture(scope="module")
def device_runs():
    sys.path.insert(0, str(BENCHMARKS))
    return load_script(BENCHMARKS / "device_runs.py")


def test_parameters_merge_base_env_and_run_params_as_kedro_does(device_runs, tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "psfhs").mkdir()
    (tmp_path / "base" / "parameters_training.yml").write_text("training:\n  lr: 0.001\n  hdc: {pix_dice: 0.0, beta: 0.3}\n")
    (tmp_path / "base" / "parameters_ingestion.yml").write_text("ingestion:\n  store_dir: data/02_intermediate\n  source: synthetic\n")
    (tmp_path / "psfhs" / "parameters_ingestion.yml").write_text("ingestion:\n  source: psfhs\n")
    params = device_runs.kedro_parameters("psfhs", {"training.hdc.pix_dice": "1.0", "training.seed": 2, "training.amp": "off"}, conf=tmp_path)
    assert params["training"] == {"lr": 0.001, "hdc": {"pix_dice": 1.0, "beta": 0.3}, "seed": 2, "amp": "off"}
    assert params["ingestion"] == {"store_dir": "data/02_intermediate", "source": "psfhs"}  # soft merge: one key changes


def test_runs_are_parsed_and_bad_ones_named(device_runs):
    assert device_runs.parse_runs("0.05:infodiv:0, 0.1:cotrain:2") == [(0.05, "infodiv", 0), (0.1, "cotrain", 2)]
    with pytest.raises(argparse.ArgumentTypeError, match="expected ratio:method:seed"):
        device_runs.parse_runs("0.05:infodiv")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown method 'unimatch'"):
        device_runs.parse_runs("0.05:unimatch:0")


@pytest.fixture(scope="module")
def pack_dir(device_runs, tmp_path_factory):
    """A synthetic store in a Kedro-like layout, packed with its split at ratio 0.25."""
    work = tmp_path_factory.mktemp("work") / "psfhs"
    store = work / "data" / "02_intermediate"
    manifest, _ = ingest(SyntheticReader(16, {"size": 32, "seed": 0}), SampleStore(store), progress=False)
    (store / "dataset.json").write_text(json.dumps({"classes": {"0": "background", "1": "pubic_symphysis", "2": "fetal_head"}}))
    (work / "data" / "03_primary").mkdir(parents=True)
    manifest.to_parquet(work / "data" / "03_primary" / "manifest_validated.parquet")
    split = ["labelled"] * 4 + ["unlabelled"] * 6 + ["val"] * 3 + ["test"] * 3
    splits = tmp_path_factory.mktemp("splits") / "splits.csv"
    pd.DataFrame({"sample_id": manifest["sample_id"], "split": split}).to_csv(splits, index=False)
    out = tmp_path_factory.mktemp("pack")
    info = device_runs.pack_store(work, [0.25], out, {0.25: splits})
    assert info["dataset"] == "psfhs" and info["ratios"] == ["0.25"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest_validated.parquet", "pack.json", "splits_0.25.csv", "store.tar.xz"]
    return out


def train_args(pack_dir, out, runs, deadline_s=600, parallel=2):
    return argparse.Namespace(
        pack=pack_dir, runs=runs, out=out, work=out.parent / "device_work", device="cpu", budget="cpu", iterations=4,
        input_size=32, batch=2, parallel=parallel, deadline_s=deadline_s, overrides={}, command_line="python3 benchmarks/device_runs.py train",
    )  # fmt: skip


def test_train_then_import_logs_runs_to_mlflow_and_the_cache_without_their_time(device_runs, pack_dir, tmp_path):
    out = tmp_path / "out"
    assert device_runs.train(train_args(pack_dir, out, [(0.25, "supervised", 0), (0.25, "mean_teacher", 1)])) == 0
    report = json.loads((out / "device_runs.json").read_text())
    assert report["variant"].startswith("cpu-4it") and {r["status"] for r in report["runs"].values()} == {"done"}
    assert sorted(p.name for p in out.iterdir()) == ["device_runs.json", "device_runs.tar.gz"]

    cache, uri = tmp_path / "results" / "runs", f"sqlite:///{tmp_path / 'mlflow.db'}"
    keys = device_runs.import_runs(out, cache, uri, tmp_path / "work")
    assert len(keys) == 2
    entries = [json.loads((cache / f"{k}.json").read_text()) for k in keys]
    teacher = next(e for e in entries if e["method"] == "mean_teacher")
    assert (teacher["seed"], teacher["label_ratio"], teacher["iterations"]) == (1, 0.25, 4)
    assert teacher["trained_on"]["device"] == "cpu" and teacher["training"]["n_labelled"] == 4
    assert teacher["benchmark_command"] == "python3 benchmarks/device_runs.py train"
    assert 0.0 <= teacher["metrics"]["dice_mean"] <= 1.0 and teacher["metrics"]["cases"] == 3

    run = mlflow.MlflowClient(uri).get_run(teacher["mlflow_run_id"])
    assert run.data.tags["benchmark"] == "ssl_benchmark" and run.data.tags["method"] == "mean_teacher"
    assert run.data.metrics["test/dice_mean"] == pytest.approx(teacher["metrics"]["dice_mean"])
    assert run.data.params["training.method"] == "mean_teacher" and run.data.params["training.amp"] == "off"
    curve = mlflow.MlflowClient(uri).get_metric_history(teacher["mlflow_run_id"], "train/total")
    assert sorted(m.step for m in curve) == [1, 2, 3, 4]
    val_curve = mlflow.MlflowClient(uri).get_metric_history(teacher["mlflow_run_id"], "val/dice")
    assert [(v["iteration"], v["val_dice"]) for v in teacher["training"]["val_history"]] == [(m.step, m.value) for m in val_curve]
    assert set(teacher["training"]["losses"]) >= {"total_first", "total_last", "consistency_last"}

    predictions = tmp_path / "work" / "psfhs" / "data" / "07_model_output" / "runs" / teacher["key"]
    assert len(list(predictions.glob("*.png"))) == 3  # where ssl_diagnosis.py looks for a Kedro run's
    assert device_runs.import_runs(out, cache, uri, tmp_path / "work") == []  # cached keys are left alone
    rows = device_runs.bench.aggregate(entries)[("psfhs", "0.25", report["variant"])]
    assert rows["mean_teacher"]["dice_mean"] == pytest.approx(teacher["metrics"]["dice_mean"])
    assert rows["mean_teacher"]["seconds_per_iter_ratio"] is None  # another machine's time is not compared
    assert rows["mean_teacher"]["trained_on"] == {1: "cpu"}


def test_runs_past_the_deadline_are_stopped_reported_and_not_imported(device_runs, pack_dir, tmp_path):
    out = tmp_path / "out"
    runs = [(0.25, "supervised", 0), (0.25, "supervised", 1)]
    assert device_runs.train(train_args(pack_dir, out, runs, deadline_s=1, parallel=1)) == 1
    statuses = json.loads((out / "device_runs.json").read_text())["runs"]
    assert sorted(v["status"] for v in statuses.values()) == ["not started (deadline)", "stopped at the deadline"]
    assert device_runs.import_runs(out, tmp_path / "runs", f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "work") == []


def test_last_progress_reads_the_latest_bar_update_of_a_log(device_runs, tmp_path):
    log = tmp_path / "run.log"
    assert device_runs.last_progress(log) is None  # no log yet
    log.write_text("INFO Resuming infodiv at iteration 500\rtrain infodiv:  12%|#2 | 500/4000 [00:00<?, ?it/s]"
                   "\rtrain infodiv:  45%|####5 | 1800/4000 [02:00<02:26, 15.0it/s]\n")  # fmt: skip
    assert device_runs.last_progress(log) == "1800/4000 [02:00<02:26, 15.0it/s]"
    log.write_text("INFO started\n")
    assert device_runs.last_progress(log) is None
