"""Whole-project runs through the real CLIs: `kedro run` (default job, environments, credentials from
conf/local) and tests/integration/test_dvc_flow.py runs `dvc repro`."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from support.kedro_runs import copy_project
from support.layouts import write_psfhs
from support.scripts import BENCHMARKS, load_script

SMALL_SYNTHETIC = (
    "ingestion.synthetic.n_images=40,ingestion.synthetic.generator.size=64,"
    "ingestion.progress=false,validation.progress=false,splitting.label_ratio=0.3,"
    "training.iterations=6,training.val_every=3,training.checkpoint_every=3,training.progress=false"
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's configuration and code, so runs write nowhere in the checkout."""
    root = copy_project(tmp_path / "project")
    for layer in ("01_raw", "02_intermediate", "03_primary", "08_reporting"):
        (root / "data" / layer).mkdir(parents=True)
    return root


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "KEDRO_LOGGING_CONFIG": str(cwd / "conf" / "logging.yml"), **(env or {})}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    result = subprocess.run(args, cwd=cwd, env=environment, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def kedro(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_cli([sys.executable, "-m", "kedro", *args], cwd, env)


def test_default_kedro_run_produces_data_and_a_tracked_model(project):
    params = f"{SMALL_SYNTHETIC},training.hdc.pix_dice=0.5"
    kedro("run", "--params", params, cwd=project)
    manifest = pd.read_parquet(project / "data/02_intermediate/manifest.parquet")
    splits = pd.read_csv(project / "data/03_primary/splits.csv")
    assert len(manifest) == 40 and set(splits["sample_id"]) == set(manifest["sample_id"])
    assert (project / "data/08_reporting/validation.json").is_file()
    assert (project / "data/08_reporting/quarantine.csv").is_file()
    assert (project / "data/08_reporting/gx_data_docs/index.html").is_file()
    assert (project / "data/08_reporting/validation_preview.png").stat().st_size > 10_000
    assert (project / "data/06_models/checkpoints/hdc/best.pt").is_file() and (project / "data/06_models/checkpoints/hdc/last.pt").is_file()
    summary = json.loads((project / "data/08_reporting/training_summary.json").read_text())
    assert summary["method"] == "hdc" and summary["iterations"] == 6
    # the benchmark's cache resolves the settings a run would train with as this run did
    bench = load_script(BENCHMARKS / "ssl_benchmark.py")
    settings_now = bench.method_settings_now(project / "conf", None, dict(p.split("=", 1) for p in params.split(",")), "hdc")
    assert summary["method_settings"] == settings_now and settings_now["pix_dice"] == 0.5

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("sonoseg").experiment_id])
    assert run.data.params["training.method"] == "hdc"
    assert run.data.tags["data_version"] == summary["data_version"]
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", run.data.tags["git_commit"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/dice")] == [3, 6]
    assert len(client.get_metric_history(run.info.run_id, "train/total")) == 6
    assert run.data.metrics["best_val_dice"] == pytest.approx(summary["best_val_dice"])
    artifacts = {a.path for folder in ("checkpoints", "plots") for a in client.list_artifacts(run.info.run_id, folder)}
    assert artifacts == {"checkpoints/best.pt", "plots/learning_curve.png"}

    # evaluation on test, logged to the training run, then registration: the first model becomes champion
    metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())
    assert run.data.metrics["test/dice_mean"] == pytest.approx(metrics["dice_mean"])
    for figure in ("evaluation_overlays", "metric_distributions", "biometry_agreement"):
        assert (project / f"data/08_reporting/{figure}.png").stat().st_size > 10_000
    promotion = json.loads((project / "data/08_reporting/promotion.json").read_text())
    assert promotion["decision"] == "promoted" and promotion["champion_version_after"] == 1
    champion = client.get_model_version_by_alias("sonoseg", "champion")
    assert int(champion.version) == 1 and champion.run_id == run.info.run_id


def test_environment_presets_the_source_and_params_point_anywhere(project, tmp_path):
    write_psfhs(tmp_path / "psfhs", n=3)
    kedro("run", "--env", "psfhs", "--pipelines", "ingestion", "--params", f"ingestion.path={tmp_path / 'psfhs'}", cwd=project)
    manifest = pd.read_parquet(project / "data/02_intermediate/manifest.parquet")
    assert manifest["source"].unique().tolist() == ["psfhs"] and len(manifest) == 3
    # soft merge: the environment changed source and path only; the store kept its base location
    assert (project / "data/02_intermediate/images").is_dir()


def test_s3_credentials_come_from_conf_local_and_never_reach_logs_or_outputs(project, tmp_path, moto_s3):
    write_psfhs(tmp_path / "psfhs", n=2)
    client = moto_s3.client()
    client.create_bucket(Bucket="integration")
    for path in sorted((tmp_path / "psfhs").rglob("*.mha")):
        client.upload_file(str(path), "integration", f"raw/{path.relative_to(tmp_path / 'psfhs').as_posix()}")
    secret = moto_s3.aws_secret_access_key
    (project / "conf/local/credentials.yml").write_text(
        "s3:\n"
        f"  aws_access_key_id: {moto_s3.aws_access_key_id}\n"
        f"  aws_secret_access_key: {secret}\n"
        f"  endpoint_url: {moto_s3.endpoint_url}\n"
        f"  region_name: {moto_s3.region_name}\n"
    )
    clean_env = {k: "" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    params = "ingestion.source=s3,ingestion.path=s3://integration/raw,ingestion.s3.layout=psfhs"
    result = kedro("run", "--pipelines", "ingestion", "--params", params, cwd=project, env=clean_env)
    manifest = pd.read_parquet(project / "data/02_intermediate/manifest.parquet")
    assert len(manifest) == 2
    assert secret not in result.stdout + result.stderr
    for path in (project / "data").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".parquet", ".yml", ".log"):
            assert secret.encode() not in path.read_bytes(), path


def test_s3_without_credentials_fails_with_the_fix_in_the_message(project):
    env = {k: "" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    args = [sys.executable, "-m", "kedro", "run", "--pipelines", "ingestion", "--params",
            "ingestion.source=s3,ingestion.path=s3://bucket/raw"]  # fmt: skip
    result = subprocess.run(args, cwd=project, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "No S3 credentials were found" in result.stdout + result.stderr
    assert "conf/local/credentials.yml" in result.stdout + result.stderr
