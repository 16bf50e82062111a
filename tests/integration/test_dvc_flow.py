"""The whole flow under DVC, for real, in a temporary git repository holding a copy of the project on a tiny
synthetic config: `dvc repro` to a registered model, no-op re-runs, a changed param, the DVC hashes in MLflow,
push and pull through a real local S3 server (moto), determinism in a fresh clone, and `sonoseg sweep`.

One repository is reproduced once for the module (about a minute); tests that change it run last or work on
a clone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.kedro_runs import PROJECT_ROOT, copy_project

GIT_IDENTITY = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                for what, value in (("NAME", "sonoseg test"), ("EMAIL", "test@example.org"))}  # fmt: skip
STAGES = ("ingestion", "validation", "splitting", "training", "evaluation", "registry")
TINY = {  # parameters file → (old, new) text replacements
    "parameters_ingestion.yml": [("n_images: 320", "n_images: 24"), ("size: 128", "size: 64"), ("progress: true", "progress: false")],
    "parameters_validation.yml": [("progress: true", "progress: false")],
    "parameters_splitting.yml": [("label_ratio: 0.05", "label_ratio: 0.3")],
    "parameters_training.yml": [("iterations: 400", "iterations: 6"), ("checkpoint_every: 100", "checkpoint_every: 3"),
                                ("val_every: 50", "val_every: 3"), ("progress: true", "progress: false")],
}  # fmt: skip


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, stdout_only: bool = False) -> str:
    environment = {**os.environ, "KEDRO_LOGGING_CONFIG": str(cwd / "conf" / "logging.yml"), **GIT_IDENTITY, **(env or {})}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    result = subprocess.run(args, cwd=cwd, env=environment, capture_output=True, text=True, timeout=500)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout if stdout_only else result.stdout + result.stderr


def ran_stages(output: str) -> set[str]:
    return {stage for stage in STAGES if f"Running stage '{stage}'" in output}


def locked_outs(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def clone(repo: Path, target: Path) -> Path:
    run(["git", "clone", "-q", str(repo), str(target)], target.parent)
    return target


@pytest.fixture(scope="module")
def flow(tmp_path_factory) -> tuple[Path, str]:
    """A git repository holding the project on the tiny config, after its first `dvc repro` (committed);
    and that run's output."""
    repo = copy_project(tmp_path_factory.mktemp("flow") / "project",
                        ("pyproject.toml", "dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"))
    shutil.copytree(PROJECT_ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("config.local", "tmp", "cache"))
    for keep in PROJECT_ROOT.glob("data/*/.gitkeep"):  # the layer folders git tracks, as in a clone
        (repo / keep.relative_to(PROJECT_ROOT)).parent.mkdir(parents=True)
        (repo / keep.relative_to(PROJECT_ROOT)).touch()
    for name, replacements in TINY.items():
        path = repo / "conf" / "base" / name
        text = path.read_text()
        for old, new in replacements:
            assert old in text, (name, old)
            text = text.replace(old, new)
        path.write_text(text)
    run(["git", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "project"], repo)
    output = run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "first repro"], repo)
    return repo, output


def test_dvc_repro_runs_the_whole_flow_to_a_champion_then_has_nothing_to_do(flow):
    repo, first = flow
    assert ran_stages(first) == set(STAGES)  # tuning is frozen: opt-in
    promotion = json.loads((repo / "data/08_reporting/promotion.json").read_text())
    assert promotion["decision"] == "promoted" and promotion["champion_version_after"] == 1
    assert "dice_mean" in json.loads((repo / "data/08_reporting/metrics.json").read_text())

    second = run(["dvc", "repro"], repo)
    assert ran_stages(second) == set() and "Data and pipelines are up to date" in second
    assert "data/08_reporting/metrics.json" in run(["dvc", "metrics", "show", "--json"], repo)


def test_the_training_run_and_the_model_version_record_the_dvc_hashes_of_their_data(flow):
    import mlflow

    repo, _ = flow
    outs = locked_outs(repo)
    summary = json.loads((repo / "data/08_reporting/training_summary.json").read_text())
    for path in ("data/03_primary/splits.csv", "data/03_primary/manifest_validated.parquet", "data/02_intermediate/images"):
        assert summary["dvc_data"][path] == outs[path], path
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    run_tags = client.get_run(summary["mlflow_run_id"]).data.tags
    version_tags = client.get_model_version_by_alias("sonoseg", "champion").tags
    for tags in (run_tags, version_tags):
        assert {k: v for k, v in tags.items() if k.startswith("dvc.")} == {f"dvc.{p}": md5 for p, md5 in summary["dvc_data"].items()}


def test_dvc_push_and_pull_through_a_local_s3_server_restore_the_results_in_a_fresh_clone(flow, moto_s3, tmp_path):
    repo, _ = flow
    moto_s3.client().create_bucket(Bucket="dvc-roundtrip")
    remote = {"url": "s3://dvc-roundtrip/cache", "endpointurl": moto_s3.endpoint_url, "region": moto_s3.region_name}
    keys = {"AWS_ACCESS_KEY_ID": moto_s3.aws_access_key_id, "AWS_SECRET_ACCESS_KEY": moto_s3.aws_secret_access_key}
    for option, value in remote.items():  # the committed remote 'storage', pointed here in .dvc/config.local
        run(["dvc", "remote", "modify", "--local", "storage", option, value], repo)
    run(["dvc", "push"], repo, env=keys)  # credentials from the environment
    stored = moto_s3.client().list_objects_v2(Bucket="dvc-roundtrip", Prefix="cache/")
    assert stored["KeyCount"] > 10

    fresh = clone(repo, tmp_path / "fresh")
    for option, value in {**remote, "access_key_id": keys["AWS_ACCESS_KEY_ID"],
                          "secret_access_key": keys["AWS_SECRET_ACCESS_KEY"]}.items():  # credentials from local config
        run(["dvc", "remote", "modify", "--local", "storage", option, value], fresh)
    no_keys = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    run(["dvc", "pull"], fresh, env=no_keys)
    assert ran_stages(run(["dvc", "repro"], fresh)) == set()
    for report in ("metrics.json", "promotion.json", "training_summary.json"):
        assert (fresh / "data/08_reporting" / report).read_bytes() == (repo / "data/08_reporting" / report).read_bytes()
    assert run(["git", "status", "--porcelain"], fresh) == ""  # the secret went to the git-ignored config.local only
    tracked = run(["git", "ls-files"], fresh, stdout_only=True).split()
    assert not [p for p in tracked if moto_s3.aws_secret_access_key.encode() in (fresh / p).read_bytes()]


def test_the_same_seed_and_data_give_identical_splits_metrics_and_dvc_hashes(flow, tmp_path):
    repo, _ = flow
    fresh = clone(repo, tmp_path / "again")
    assert ran_stages(run(["dvc", "repro", "--force"], fresh)) == set(STAGES)  # from scratch: a new cache
    before, after = locked_outs(repo), locked_outs(fresh)
    data_outs = [p for p in before if p.startswith(("data/02_", "data/03_"))]
    assert {p: after[p] for p in data_outs} == {p: before[p] for p in data_outs}
    assert after["data/03_primary/splits.csv"] == before["data/03_primary/splits.csv"]
    assert after["data/06_models/checkpoints"] == before["data/06_models/checkpoints"]
    assert (fresh / "data/08_reporting/metrics.json").read_text() == (repo / "data/08_reporting/metrics.json").read_text()


def test_sweep_runs_seeds_as_dvc_experiments_and_reports_mean_and_std(flow):
    repo, _ = flow
    params = (repo / "conf/base/parameters_training.yml").read_text()
    run([sys.executable, "-m", "sonoseg.console", "sweep", "--set", "training.method=supervised", "--repeats", "2",
         "--name", "seeds", "--no-progress"], repo)  # fmt: skip
    report = json.loads((repo / "data/08_reporting/sweep.json").read_text())
    (row,) = report["results"]
    assert row["training.method"] == "supervised" and row["seeds"] == [0, 1]

    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, stdout_only=True))
    per_seed = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for revision in experiment["revs"]:
                metrics = revision["data"]["metrics"]["data/08_reporting/metrics.json"]["data"]
                per_seed[revision["name"]] = metrics["dice_mean"]
    expected = [per_seed["seeds-method_supervised-seed0"], per_seed["seeds-method_supervised-seed1"]]
    assert row["dice_mean_per_seed"] == expected
    assert row["dice_mean"] == pytest.approx(sum(expected) / 2)
    assert row["dice_mean_std_over_seeds"] == pytest.approx(abs(expected[0] - expected[1]) / 2**0.5)
    assert "| supervised | 2 |" in (repo / "data/08_reporting/sweep.md").read_text()
    # the workspace is back as it was
    assert (repo / "conf/base/parameters_training.yml").read_text() == params
    assert ran_stages(run(["dvc", "repro"], repo)) == set()


def test_a_changed_param_reruns_only_the_stages_after_it(flow):
    repo, _ = flow  # changes the repository: the module's last test
    params = repo / "conf/base/parameters_training.yml"
    params.write_text(params.read_text().replace("seed: 0", "seed: 3"))
    assert {"training", "evaluation"} <= ran_stages(run(["dvc", "repro"], repo)) <= {"training", "evaluation", "registry"}
    registry = repo / "conf/base/parameters_registry.yml"
    registry.write_text(registry.read_text().replace("margin: 0.005", "margin: 0.01"))
    assert ran_stages(run(["dvc", "repro"], repo)) == {"registry"}
    # a tuning result (data/05_model_input/tuned_params.yml) is a dependency of training
    (repo / "data/05_model_input/tuned_params.yml").write_text("{}\n")
    changed = json.loads(run(["dvc", "status", "--json"], repo, stdout_only=True))
    assert set(changed) == {"training"} and "data/05_model_input" in json.dumps(changed["training"])
