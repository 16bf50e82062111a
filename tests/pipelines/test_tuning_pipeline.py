"""The tuning pipeline on an in-memory catalog, the tuned-params file, and training that reads it."""

from __future__ import annotations

import optuna
import pytest
import torch
from support.kedro_runs import run_in_memory
from support.training import tiny_store
from support.tuning import DATASET_INFO, tiny_parameters

from sonoseg.datasets import OptionalYAMLDataset
from sonoseg.pipelines.training.nodes import train_model
from sonoseg.pipelines.tuning import create_pipeline


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A 4-trial hdc study on the tiny store with lr 0.003, 10, 0.001, 10: an lr of 10 wrecks the
    network at once (val Dice 0 at the first validation, against about 0.14 for the others), so the
    median pruner (one startup trial) prunes those two trials there, deterministically."""
    root = tmp_path_factory.mktemp("tuning")
    manifest, splits, store = tiny_store(root / "store")
    storage = f"sqlite:///{root}/optuna.db"
    training, tuning = tiny_parameters(root, storage, pruner={"name": "median", "median": {"n_startup_trials": 1}})
    tuning["search_spaces"]["hdc"]["lr"] = {"type": "categorical", "choices": [0.001, 0.003, 10.0]}
    study = optuna.create_study(study_name="sonoseg-hdc", storage=storage, direction="maximize")
    for lr in (0.003, 10.0, 0.001, 10.0):
        study.enqueue_trial({"lr": lr})  # the other values come from the sampler
    inputs = {"validated_manifest": manifest, "splits": splits, "dataset_info": DATASET_INFO, "params:training": training,
              "params:tuning": tuning, "params:ingestion.store_dir": str(root / "store")}  # fmt: skip
    outputs = run_in_memory(create_pipeline(), inputs)
    return root, manifest, splits, training, outputs


def test_a_four_trial_study_prunes_hopeless_trials_and_reports(tuned):
    root, _, _, _, outputs = tuned
    report = outputs["tuning_report"]
    assert report["states"]["COMPLETE"] + report["states"]["PRUNED"] == 4
    assert report["states"]["PRUNED"] >= 2 and report["states"]["FAIL"] == 0
    rows = report["trials"]
    assert [row["params"]["lr"] for row in rows] == [0.003, 10.0, 0.001, 10.0]
    assert rows[0]["state"] == "COMPLETE" and rows[0]["value"] > 0.05
    for row in (rows[1], rows[3]):  # stopped at the first validation, after 2 of 6 iterations
        assert row["state"] == "PRUNED" and row["last_step"] == 2 and row["last_reported"] == 0.0 and row["value"] is None
    assert report["best"]["params"]["lr"] in (0.003, 0.001) and report["best"]["value"] > 0.05
    assert report["method"] == "hdc" and report["n_trials_budget"] == 4
    assert outputs["tuning_reports"] == {"tuning_hdc": report}
    assert set(outputs["tuning_figures"]) == {"tuning_hdc_history", "tuning_hdc_importances",
                                               "tuning_hdc_parallel_coordinate"}  # fmt: skip
    assert not any((root / "trials").rglob("*.pt"))  # finished trials leave no checkpoints behind


def test_the_best_params_file_holds_method_study_value_trial_and_training_paths(tuned, tmp_path):
    *_, outputs = tuned
    best = outputs["tuned_params"]
    report = outputs["tuning_report"]
    assert best["method"] == "hdc" and best["study_name"] == "sonoseg-hdc"
    assert best["best_value"] == report["best"]["value"] and best["trial_number"] == report["best"]["trial_number"]
    assert set(best["params"]) >= {"lr", "hdc.lambda_pix", "hdc.perturbation", "hdc.perturbation_strength"}
    dataset = OptionalYAMLDataset(filepath=str(tmp_path / "tuned_params.yml"))
    assert dataset.load() == {}  # no file yet: training without tuning still loads its inputs
    dataset.save(best)
    assert dataset.load() == best


def test_training_applies_the_tuned_params_when_use_tuned(tuned, tmp_path):
    root, manifest, splits, training, outputs = tuned
    best = outputs["tuned_params"]
    options = {**training, "use_tuned": True, "iterations": 2, "val_every": 2, "checkpoint_every": 2,
               "progress": False, "output_dir": str(tmp_path / "models")}  # fmt: skip
    summary, _, _ = train_model(manifest, splits, DATASET_INFO, options, str(root / "store"), best, {}, {})
    assert summary["tuned_from"] == {"study_name": "sonoseg-hdc", "trial_number": best["trial_number"]}
    settings = torch.load(tmp_path / "models" / "hdc" / "last.pt", weights_only=False)["settings"]
    for path, value in best["params"].items():
        if path.startswith("hdc."):
            assert settings[path.removeprefix("hdc.")] == value, path
    # and without use_tuned the file is ignored
    plain = {**options, "use_tuned": False, "output_dir": str(tmp_path / "plain")}
    summary, _, _ = train_model(manifest, splits, DATASET_INFO, plain, str(root / "store"), best, {}, {})
    assert summary["tuned_from"] is None


def test_use_tuned_without_a_file_or_for_another_method_is_a_clear_error(tuned):
    root, manifest, splits, training, outputs = tuned
    options = {**training, "use_tuned": True}
    with pytest.raises(ValueError, match="tuned_params.yml.*missing or empty.*kedro run --pipelines tuning"):
        train_model(manifest, splits, DATASET_INFO, options, str(root / "store"), {}, {}, {})
    with pytest.raises(ValueError, match="tuned for 'hdc' but training.method is 'cps'"):
        train_model(manifest, splits, DATASET_INFO, {**options, "method": "cps"}, str(root / "store"), outputs["tuned_params"], {}, {})


def test_tuning_is_registered_but_left_out_of_the_default_pipeline(monkeypatch):
    from sonoseg import pipeline_registry
    from sonoseg.pipelines.training import create_pipeline as training_pipeline

    found = {"training": training_pipeline(), "tuning": create_pipeline()}
    monkeypatch.setattr(pipeline_registry, "find_pipelines", lambda raise_errors: dict(found))
    pipelines = pipeline_registry.register_pipelines()
    assert pipelines["tuning"] is found["tuning"]
    assert {n.name for n in pipelines["__default__"].nodes} == {"train_model"}
