"""Storage and pruner factories."""

from __future__ import annotations

import optuna
import pytest

from sonoseg.tuning import display_storage, make_pruner, make_storage, open_study


def test_sqlite_url_gives_an_rdb_storage_and_creates_its_folder(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path}/deep/er/optuna.db")
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert (tmp_path / "deep" / "er").is_dir()


@pytest.mark.parametrize("suffix", [".journal", ".log"])
def test_journal_paths_give_a_journal_storage(tmp_path, suffix):
    storage = make_storage(str(tmp_path / "a" / f"study{suffix}"))
    assert isinstance(storage, optuna.storages.JournalStorage)
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    reopened = optuna.load_study(study_name="s", storage=make_storage(str(tmp_path / "a" / f"study{suffix}")))
    assert len(reopened.trials) == 2


@pytest.mark.parametrize("spec", ["redis://localhost/0", "data/study.txt", "postgres-ish"])
def test_other_storages_are_refused_with_the_accepted_forms(spec):
    with pytest.raises(ValueError, match="sqlite:///.*postgresql://.*journal|postgresql://.*\\.log or \\.journal"):
        make_storage(spec)


def test_display_storage_masks_passwords():
    assert display_storage("postgresql://tuner:s3cret@db.lan:5432/optuna") == "postgresql://tuner:***@db.lan:5432/optuna"
    assert display_storage("sqlite:///data/optuna.db") == "sqlite:///data/optuna.db"
    assert display_storage("data/study.journal") == "data/study.journal"


def test_pruners_by_name_or_mapping():
    assert isinstance(make_pruner("none", 100), optuna.pruners.NopPruner)
    median = make_pruner({"name": "median", "median": {"n_startup_trials": 1, "n_warmup_steps": 4}}, 100)
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert median._n_startup_trials == 1 and median._n_warmup_steps == 4
    hyperband = make_pruner({"name": "hyperband", "hyperband": {"min_resource": 5}, "median": {"ignored": 1}}, 60)
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)
    assert hyperband._max_resource == 60  # the trial budget by default


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("random", "expected one of median, hyperband, none"),
        ({"name": "median", "median": {"n_startup": 1}}, "tuning.pruner.median options"),
        ({"name": "median", "percentile": {}}, "unknown keys"),
        (3, "must be a name"),
    ],
)
def test_bad_pruner_settings_are_explained(spec, message):
    with pytest.raises(ValueError, match=message):
        make_pruner(spec, 10)


def test_a_study_of_another_method_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = open_study(storage, "shared", optuna.pruners.NopPruner(), "hdc")
    assert study.user_attrs["method"] == "hdc" and len(study.user_attrs["study_uid"]) == 32
    assert open_study(storage, "shared", optuna.pruners.NopPruner(), "hdc").user_attrs == study.user_attrs
    with pytest.raises(ValueError, match="tunes 'hdc', not 'cps'"):
        open_study(storage, "shared", optuna.pruners.NopPruner(), "cps")
