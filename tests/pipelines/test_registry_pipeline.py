"""The registry pipeline on an in-memory catalog: a tiny trained model, fabricated test metrics, a real sqlite
MLflow store in tmp_path. The gate promotes the first model and refuses a worse one."""

import mlflow
import pytest
import yaml

from sonoseg.pipelines.registry.pipeline import create_pipeline
from support.kedro_runs import PROJECT_ROOT, base_parameters, param_datasets, run_in_memory
from support.registry import CLASSES, fabricated_metrics, temporary_store, training_summary
from support.training import train


@pytest.fixture
def registered(tmp_path):
    _, result = train("supervised", tmp_path / "store", tmp_path / "models")
    with temporary_store(tmp_path):
        with mlflow.start_run() as run:
            pass
        params = base_parameters()

        def register(dice: float) -> dict:
            inputs = {"training_summary": training_summary(result.best_checkpoint, run.info.run_id),
                      "metrics": fabricated_metrics(dice), "dataset_info": {"source": "synthetic", "classes": CLASSES},
                      **param_datasets(params)}  # fmt: skip
            return run_in_memory(create_pipeline(), inputs)["promotion"]

        yield register, params, run.info.run_id


def test_the_first_model_becomes_champion_and_a_worse_one_stays_challenger(registered):
    register, params, run_id = registered
    name = params["registry"]["model_name"]
    assert name == "sonoseg"
    first = register(0.6)
    assert first["decision"] == "promoted" and first["challenger_version"] == first["champion_version_after"] == 1
    assert first["run_id"] == run_id and first["model_uri"] == "models:/sonoseg/1"
    second = register(0.5)
    assert second["decision"] == "refused" and second["champion_version_after"] == 1 and second["challenger_version"] == 2
    assert "0.5000 does not beat the champion's 0.6000" in second["reason"]
    client = mlflow.MlflowClient()
    assert int(client.get_model_version_by_alias(name, "champion").version) == 1
    version = client.get_model_version_by_alias(name, "challenger")
    assert int(version.version) == 2 and version.tags["label_ratio"] == str(params["splitting"]["label_ratio"])
    assert version.run_id == run_id


def test_the_gate_and_the_outputs_are_configured():
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_registry.yml").read_text())["registry"]
    assert params["gate"]["metric"] == "dice_mean" and params["gate"]["higher_is_better"] is True
    assert params["gate"]["margin"] >= 0 and params["gate"]["class_tolerance"] >= 0
    catalog = yaml.safe_load((PROJECT_ROOT / "conf/base/catalog.yml").read_text())
    assert catalog["promotion"]["filepath"] == "data/08_reporting/promotion.json"
    mlflow_conf = yaml.safe_load((PROJECT_ROOT / "conf/base/mlflow.yml").read_text())
    # run alone, the registry opens no run of its own: it logs into the training run
    assert "registry" in mlflow_conf["tracking"]["disable_tracking"]["pipelines"]
    assert create_pipeline().inputs() == {"training_summary", "metrics", "dataset_info", "params:splitting.label_ratio",
                                          "params:registry"}  # fmt: skip
