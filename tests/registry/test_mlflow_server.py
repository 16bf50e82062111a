"""A shared MLflow server as documented: PostgreSQL backend (the README recipe), S3 artefacts (moto), over HTTP.

The server holds the only credentials (PGPASSWORD and the S3 key pair in its environment); the client here has
neither, so its uploads can only reach the bucket through the server's artefact proxy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import psycopg2
import pytest
from support.postgres import free_port, postgres  # noqa: F401  (postgres: the fixture)

from sonoseg.registry.register import CHAMPION, _champion

BUCKET, PREFIX = "sonoseg-mlflow-server", "mlflow"
MODEL = "sonoseg-server-test"
CLIENT_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL",
                  "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "PGPASSWORD")  # fmt: skip


def _log_tail(path: Path, limit: int = 3000) -> str:
    return path.read_text(errors="replace")[-limit:] if path.exists() else "(no log)"


def _wait_for_health(process: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float = 60.0) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never proxy 127.0.0.1
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited with {process.returncode}:\n{_log_tail(log)}")
        try:
            with opener.open(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    pytest.fail(f"mlflow server did not answer {url}/health within {timeout_s:.0f} s:\n{_log_tail(log)}")


@contextlib.contextmanager
def mlflow_server(backend_uri: str, destination: str, env: dict[str, str], workdir: Path) -> Iterator[tuple[str, Path]]:
    """``mlflow server`` with those stores on a free 127.0.0.1 port: its URL and log file. Its whole process
    group is stopped on exit."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
               "--artifacts-destination", destination, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    log = workdir / "mlflow-server.log"
    with open(log, "wb") as out:  # cwd=workdir: any local default (./mlartifacts) stays under tmp_path
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   cwd=workdir, start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_health(process, url, log)
        yield url, log
    finally:
        # uvicorn runs workers as children: signal the group, not only the parent
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def test_runs_models_and_artefacts_land_in_postgres_and_s3_through_the_server(tmp_path, postgres, moto_s3, monkeypatch):
    pg_port = postgres["PGPORT"]
    # the documented command, run as written: a database for MLflow beside the recipe's `optuna`
    subprocess.run(["createdb", "-h", "127.0.0.1", "-p", pg_port, "-U", "sonoseg", "mlflow"], env=postgres, check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    moto_s3.client().create_bucket(Bucket=BUCKET)
    server_env = {
        **os.environ,
        "PGPASSWORD": postgres["PGPASSWORD"],  # libpq reads it: the backend URI below carries no password
        "AWS_ACCESS_KEY_ID": moto_s3.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": moto_s3.aws_secret_access_key,
        "AWS_DEFAULT_REGION": moto_s3.region_name,
        "MLFLOW_S3_ENDPOINT_URL": moto_s3.endpoint_url,
        "NO_PROXY": "127.0.0.1,localhost",
        # no GenAI job runner (about eight huey processes): sonoseg needs tracking, registry and artefacts only
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    for name in CLIENT_SECRETS:  # the client knows only the server's URL
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)  # the registry follows the tracking URI
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    model_dir = tmp_path / "model"  # the least MLflow 3 registers from runs:/: a folder with an MLmodel file
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text("artifact_path: model\nflavors: {}\n")
    (model_dir / "weights.txt").write_text("not really a model\n")

    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed: name psycopg2
    backend = f"postgresql+psycopg2://sonoseg@127.0.0.1:{pg_port}/mlflow"
    with mlflow_server(backend, f"s3://{BUCKET}/{PREFIX}", server_env, tmp_path) as (url, log):
        try:
            # no set_registry_uri: it exports MLFLOW_REGISTRY_URI and set_registry_uri(None) leaves that
            # behind, pointing later tests at this dead server; set_tracking_uri(None) clears its variable
            mlflow.set_tracking_uri(url)
            experiment_id = mlflow.create_experiment("server-test")
            with mlflow.start_run(experiment_id=experiment_id) as run:
                mlflow.log_param("method", "hdc")
                mlflow.log_metric("val_dice", 0.625, step=3)
                mlflow.log_artifacts(str(model_dir), artifact_path="model")
            run_id = run.info.run_id
            client = mlflow.MlflowClient()
            version = mlflow.register_model(f"runs:/{run_id}/model", MODEL).version
            assert _champion(client, MODEL) is None  # sonoseg's gate understands the server's "no such alias"
            client.set_registered_model_alias(MODEL, CHAMPION, version)
            assert int(_champion(client, MODEL).version) == int(version)
            # by default MLflow 3.17 downloads S3 artefacts from a presigned URL the server hands out (the client
            # must reach the S3 endpoint); with MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=false the bytes come
            # through the server itself
            for proxied in (False, True):
                if proxied:
                    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
                else:
                    monkeypatch.delenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", raising=False)
                fetched = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model/weights.txt",
                                                              dst_path=str(tmp_path / f"fetched-{proxied}"))  # fmt: skip
                assert Path(fetched).read_text() == "not really a model\n"
            served = f"GET /api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/model/weights.txt "
            presigned = f"GET /api/2.0/mlflow-artifacts/presigned/{experiment_id}/{run_id}/artifacts/model/weights.txt "
            assert log.read_text().count(served) == 1 and log.read_text().count(presigned) == 1, _log_tail(log)
        finally:
            mlflow.set_tracking_uri(None)

    # PostgreSQL itself holds the run, its param and metric, the version and its alias
    with contextlib.closing(psycopg2.connect(host="127.0.0.1", port=pg_port, user="sonoseg", dbname="mlflow",
                                             password=postgres["PGPASSWORD"])) as db, db.cursor() as cur:  # fmt: skip
        cur.execute("SELECT key, value FROM params WHERE run_uuid = %s", (run_id,))
        assert cur.fetchall() == [("method", "hdc")]
        cur.execute("SELECT key, value, step FROM metrics WHERE run_uuid = %s", (run_id,))
        assert cur.fetchall() == [("val_dice", 0.625, 3)]
        cur.execute("SELECT artifact_location FROM experiments WHERE experiment_id = %s", (int(experiment_id),))
        assert cur.fetchone()[0] == f"mlflow-artifacts:/{experiment_id}"  # proxied, not a direct s3:// location
        cur.execute("SELECT version, run_id FROM model_versions WHERE name = %s", (MODEL,))
        assert cur.fetchall() == [(int(version), run_id)]
        cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s", (MODEL,))
        assert cur.fetchall() == [(CHAMPION, int(version))]
    # and the artefact object lies in the bucket under the configured prefix
    listing = moto_s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/")
    keys = [item["Key"] for item in listing.get("Contents", [])]
    assert f"{PREFIX}/{experiment_id}/{run_id}/artifacts/model/weights.txt" in keys, keys
