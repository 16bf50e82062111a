"""The README's docker-free PostgreSQL recipe, run as written, then a study on it."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from support.kedro_runs import PROJECT_ROOT
from support.training import tiny_store
from support.tuning import DATASET_INFO, tiny_parameters

from sonoseg.pipelines.tuning.nodes import tune_hyperparameters
from sonoseg.tuning import make_storage

pytestmark = pytest.mark.skipif(shutil.which("initdb") is None, reason="PostgreSQL's initdb is not on PATH")


def readme_recipe() -> str:
    text = (PROJECT_ROOT / "README.md").read_text()
    match = re.search(r"<!-- postgres-recipe-start[^>]*-->\s*```bash\n(.*?)```\s*<!-- postgres-recipe-end -->", text, re.S)
    assert match, "README.md lost its marked PostgreSQL recipe"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def postgres(tmp_path) -> Iterator[dict[str, str]]:
    """The recipe's environment (PGDIR, PGPORT, PGPASSWORD) with the server started; stopped afterwards.
    initdb refuses to run as root, so as root the recipe runs as the ``postgres`` user in a folder it owns."""
    as_owner: list[str] = []
    folder = tmp_path / "pg"
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run initdb as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser")
        as_owner = ["runuser", "-u", "postgres", "--"]
        folder = Path(tempfile.mkdtemp(prefix="sonoseg-pg-"))
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    env = {**os.environ, "PGDIR": str(folder), "PGPORT": str(free_port()), "PGPASSWORD": "tuning-test-secret"}
    result = subprocess.run([*as_owner, "bash", "-euo", "pipefail", "-c", readme_recipe()], env=env, cwd=folder,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    try:
        assert result.returncode == 0, f"the README recipe failed:\n{result.stdout}\n{result.stderr}"
        yield env
    finally:
        subprocess.run([*as_owner, "pg_ctl", "-D", f"{folder}/data", "stop", "-m", "fast"], env=env,
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


def test_a_study_runs_on_the_readme_postgres_with_the_password_outside_the_url(tmp_path, postgres, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", postgres["PGPASSWORD"])  # libpq reads it; the URL stays secret-free
    url = f"postgresql://sonoseg@127.0.0.1:{postgres['PGPORT']}/optuna"
    manifest, splits, _ = tiny_store(tmp_path / "store")
    training, tuning = tiny_parameters(tmp_path, url, n_trials=2, pruner="none")
    report, _, _ = tune_hyperparameters(manifest, splits, DATASET_INFO, training, tuning, str(tmp_path / "store"))
    assert report["storage"] == url and report["states"]["COMPLETE"] == 2
    study = optuna.load_study(study_name="sonoseg-hdc", storage=make_storage(url))  # a fresh connection
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    monkeypatch.setenv("PGPASSWORD", "wrong")
    with pytest.raises(Exception, match="password authentication failed"):
        optuna.load_study(study_name="sonoseg-hdc", storage=make_storage(url))
