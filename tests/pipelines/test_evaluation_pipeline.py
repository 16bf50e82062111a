"""The evaluation pipeline on an in-memory catalog: a tiny trained model, the test split, a real sqlite
MLflow store for the training run it logs into."""

import json

import cv2
import matplotlib.figure
import mlflow
import numpy as np
import pandas as pd
import pytest

from sonoseg.pipelines.evaluation.pipeline import create_pipeline
from support.kedro_runs import base_parameters, param_datasets, run_in_memory
from support.training import tiny_store, train

CLASSES = {"0": "background", "1": "pubic_symphysis", "2": "fetal_head"}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("evaluation")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        manifest, splits, store = tiny_store(tmp_path / "store")
        _, result = train("supervised", tmp_path / "store", tmp_path / "models")
        experiment = mlflow.create_experiment("evaluation", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            pass
        summary = {"method": "supervised", "best_checkpoint": str(result.best_checkpoint), "mlflow_run_id": run.info.run_id}
        params = base_parameters()
        params["evaluation"]["predictions_dir"] = str(tmp_path / "predictions")
        params["evaluation"]["device"] = "cpu"
        params["ingestion"]["store_dir"] = str(store.root)
        inputs = {"validated_manifest": manifest, "splits": splits, "training_summary": summary,
                  "dataset_info": {"classes": CLASSES}, **param_datasets(params)}  # fmt: skip
        outputs = run_in_memory(create_pipeline(), inputs)
        yield outputs, manifest, splits, run.info.run_id, tmp_path
    finally:
        mlflow.set_tracking_uri(None)


def test_only_the_test_split_is_predicted_at_the_original_size(evaluated):
    outputs, manifest, splits, _, tmp_path = evaluated
    predictions = outputs["test_predictions"]
    test_ids = set(splits.loc[splits["split"] == "test", "sample_id"])
    assert set(predictions["sample_id"]) == test_ids and len(test_ids) == 4
    for path in predictions["prediction_path"]:
        mask = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        assert mask.shape == (32, 32) and mask.dtype == np.uint8 and mask.max() <= 2


def test_metrics_summary_and_tables(evaluated):
    outputs, manifest, splits, _, _ = evaluated
    per_case, biometry, metrics = outputs["metrics_per_case"], outputs["biometry_per_case"], outputs["metrics"]
    assert len(per_case) == 4 * 3 and set(per_case["class"]) == {"1", "2", "union"}
    assert metrics["cases"] == 4
    for key in ("dice_mean", "dice_pubic_symphysis_mean", "dice_fetal_head_std", "hd95_union_mean", "empty_predictions"):
        assert key in metrics
    foreground = per_case[per_case["class"] != "union"]
    assert metrics["dice_mean"] == pytest.approx(foreground.groupby("class")["dice"].mean().mean())
    assert len(biometry) == 4 and {"aop_deg_pred", "aop_deg_true", "aop_abs_err_deg", "hc_abs_err"} <= set(biometry)
    assert metrics["distance_unit"] == "px"
    assert len(metrics["test_split_sha256"]) == 64
    json.dumps(metrics, allow_nan=False)  # DVC reads it: strict JSON, NaN written as null


def test_figures_and_the_training_run_receive_everything(evaluated):
    outputs, _, _, run_id, _ = evaluated
    for name in ("evaluation_overlays", "metric_distributions", "biometry_agreement"):
        assert isinstance(outputs[name], matplotlib.figure.Figure)
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.data.metrics["test/dice_mean"] == pytest.approx(outputs["metrics"]["dice_mean"])
    assert run.data.tags["test_split_sha256"] == outputs["metrics"]["test_split_sha256"]
    logged = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert logged == {f"evaluation/{name}" for name in (
        "metrics.json", "metrics_per_case.csv", "biometry_per_case.csv", "overlays.png",
        "metric_distributions.png", "bland_altman.png")}  # fmt: skip
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation/metrics_per_case.csv"))
    assert len(table) == len(outputs["metrics_per_case"])
