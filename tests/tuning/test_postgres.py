"""The README's docker-free PostgreSQL recipe, run as written, then a study on it."""

from __future__ import annotations

import optuna
import pytest
from support.postgres import postgres  # noqa: F401  (the fixture: the README recipe's server)
from support.training import tiny_store
from support.tuning import DATASET_INFO, tiny_parameters

from sonoseg.pipelines.tuning.nodes import tune_hyperparameters
from sonoseg.tuning import make_storage


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
