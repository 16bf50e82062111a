"""Evaluation nodes: predict the test split once with the best-on-val checkpoint, score it at the original
resolution (DESIGN.md §5), measure the biometry (§6), draw the figures and log everything to the training run."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sonoseg.evaluation.biometry import Biometry, biometry_errors, measure, structure_labels
from sonoseg.evaluation.metrics import metrics_table, summarise_metrics
from sonoseg.evaluation.plots import bland_altman, contour_comparison, metric_distributions
from sonoseg.evaluation.predict import Predictor
from sonoseg.io.store import SampleStore, manifest_spacing, samples_digest
from sonoseg.training.trainer import choose_device

logger = logging.getLogger(__name__)

BIOMETRY_MEASURES = (("aop_deg", "AoP", "aop_abs_err_deg"), ("hsd", "HSD", "hsd_abs_err"), ("hc", "HC", "hc_abs_err"))


def _evaluated_rows(manifest: pd.DataFrame, splits: pd.DataFrame, split: str) -> pd.DataFrame:
    chosen = splits.loc[splits["split"] == split, ["sample_id"]]
    rows = manifest.merge(chosen, on="sample_id", how="inner", validate="one_to_one")
    rows = rows[rows["mask_path"].map(lambda p: isinstance(p, str))]
    if rows.empty:
        raise ValueError(f"The '{split}' split holds no sample with a mask: nothing to evaluate.")
    return rows.sort_values("sample_id").reset_index(drop=True)


def predict_split(
    manifest: pd.DataFrame, splits: pd.DataFrame, training_summary: dict[str, Any], options: dict[str, Any], store_dir: str
) -> pd.DataFrame:
    """Predict ``evaluation.split`` (test) with the best checkpoint; write one label PNG per sample.

    Returns:
        ``sample_id, prediction_path`` for every predicted sample.
    """
    import cv2
    from tqdm.auto import tqdm

    rows = _evaluated_rows(manifest, splits, options["split"])
    store, out_dir = SampleStore(store_dir), Path(options["predictions_dir"])
    shutil.rmtree(out_dir, ignore_errors=True)  # predictions of an earlier model must not linger
    out_dir.mkdir(parents=True)
    predictor = Predictor.from_checkpoint(training_summary["best_checkpoint"], choose_device(options["device"]))
    images = (np.asarray(store.load(path)) for path in rows["image_path"])
    paths = []
    masks = predictor.predict_many(images, batch_size=options["batch_size"])
    for sample_id, mask in tqdm(zip(rows["sample_id"], masks), total=len(rows), desc="predict test", unit="img"):
        path = out_dir / f"{sample_id}.png"
        if not cv2.imwrite(str(path), mask):
            raise OSError(f"{path}: the predicted mask could not be written")
        paths.append(str(path))
    logger.info("Predicted %d %s samples with %s", len(rows), options["split"], training_summary["best_checkpoint"])
    return pd.DataFrame({"sample_id": rows["sample_id"], "prediction_path": paths})


def _read_prediction(path: str) -> np.ndarray:
    import cv2

    mask = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise OSError(f"{path}: the predicted mask cannot be read")
    return mask


def score_predictions(
    manifest: pd.DataFrame, splits: pd.DataFrame, predictions: pd.DataFrame, dataset_info: dict[str, Any],
    options: dict[str, Any], store_dir: str,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:  # fmt: skip
    """Metrics per case and class, biometry per case (predicted, truth, |Δ|), and the flat summary that
    DVC reads as metrics and the registry's gate compares."""
    rows = _evaluated_rows(manifest, splits, options["split"]).merge(predictions, on="sample_id", validate="one_to_one")
    store = SampleStore(store_dir)
    classes = {str(k): v for k, v in dataset_info["classes"].items() if str(k) != "0"}
    labels = sorted(int(k) for k in classes)
    ps_label, fh_label = structure_labels(dataset_info["classes"])
    cases, biometry_rows = [], []
    for _, row in rows.iterrows():
        truth, prediction = np.asarray(store.load(row["mask_path"])), _read_prediction(row["prediction_path"])
        spacing = manifest_spacing(row)
        cases.append((row["sample_id"], prediction, truth, spacing))
        predicted, true = measure(prediction, spacing, ps_label, fh_label), measure(truth, spacing, ps_label, fh_label)
        biometry_rows.append(_biometry_row(row["sample_id"], predicted, true))
    table = metrics_table(cases, labels)
    biometry = pd.DataFrame(biometry_rows)
    summary = summarise_metrics(table, classes)
    for _, name, error in BIOMETRY_MEASURES:
        values = biometry[error].to_numpy(float)
        measured = values[np.isfinite(values)]
        summary[f"{error}_mean"] = float(measured.mean()) if measured.size else float("nan")
        summary[f"{error}_std"] = float(measured.std()) if measured.size else float("nan")
        summary[f"{error}_cases"] = int(measured.size)
    # JSON has no NaN: an unmeasurable summary (e.g. AoP on a head-only dataset) is null
    summary = {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in summary.items()}
    summary["distance_unit"] = str(table["unit"].iloc[0])
    summary["test_split_sha256"] = samples_digest(rows)
    logger.info("Test: mean Dice %.4f over %d cases (%d empty predictions)", summary["dice_mean"], summary["cases"],
                summary["empty_predictions"])  # fmt: skip
    return table, biometry, summary


def _biometry_row(case_id: str, predicted: Biometry, truth: Biometry) -> dict[str, Any]:
    row: dict[str, Any] = {"case_id": case_id, "unit": truth.unit}
    for field, _, _ in BIOMETRY_MEASURES:
        row[f"{field}_pred"], row[f"{field}_true"] = getattr(predicted, field), getattr(truth, field)
    row.update(biometry_errors(predicted, truth))
    row["note_pred"], row["note_true"] = predicted.note, truth.note
    return row


def _ranked_cases(table: pd.DataFrame) -> list[tuple[str, float]]:
    """Cases by their mean foreground Dice, best first."""
    per_case = table[table["class"] != "union"].groupby("case_id", sort=False)["dice"].mean()
    return list(per_case.sort_values(ascending=False, kind="stable").items())


def report_evaluation(
    metrics_per_case: pd.DataFrame, biometry_per_case: pd.DataFrame, metrics: dict[str, Any], manifest: pd.DataFrame,
    predictions: pd.DataFrame, training_summary: dict[str, Any], dataset_info: dict[str, Any], store_dir: str,
) -> tuple[Any, Any, Any]:  # fmt: skip
    """The three evaluation figures (best/median/worst overlays, metric distributions, Bland–Altman of the
    biometry), all also logged with the metrics and tables to the training run in MLflow."""
    ranked = _ranked_cases(metrics_per_case)
    picks = {"best": ranked[0], "median": ranked[len(ranked) // 2], "worst": ranked[-1]}
    store = SampleStore(store_dir)
    rows = manifest.set_index("sample_id")
    prediction_paths = predictions.set_index("sample_id")["prediction_path"]
    panels = [
        (np.asarray(store.load(rows.at[case, "image_path"])), np.asarray(store.load(rows.at[case, "mask_path"])),
         _read_prediction(prediction_paths[case]), f"{rank}: {case}\nmean Dice {dice:.3f}")
        for rank, (case, dice) in picks.items()
    ]  # fmt: skip
    labels = sorted(int(k) for k in dataset_info["classes"] if str(k) != "0")
    names = {str(k): v for k, v in dataset_info["classes"].items()}
    method = training_summary["method"]
    overlays = contour_comparison(panels, labels, title=f"{method} on test: truth solid, prediction dashed")
    named = metrics_per_case.assign(**{"class": metrics_per_case["class"].map(lambda c: names.get(c, c))})
    distributions = metric_distributions(named, title=f"{method}: test metrics per case ({metrics['cases']} cases)")
    measures = [
        (name, biometry_per_case[f"{field}_pred"], biometry_per_case[f"{field}_true"], "deg" if field == "aop_deg" else str(biometry_per_case["unit"].iloc[0]))
        for field, name, _ in BIOMETRY_MEASURES
        if np.isfinite(biometry_per_case[f"{field}_true"].to_numpy(float)).any()
    ]  # fmt: skip
    agreement = bland_altman(measures, title=f"{method}: biometry from predicted vs true masks")
    _log_to_training_run(training_summary, metrics, metrics_per_case, biometry_per_case,
                         {"overlays": overlays, "metric_distributions": distributions, "bland_altman": agreement})  # fmt: skip
    return overlays, distributions, agreement


def _log_to_training_run(
    training_summary: dict[str, Any], metrics: dict[str, Any], per_case: pd.DataFrame, biometry: pd.DataFrame,
    figures: dict[str, Any],
) -> None:  # fmt: skip
    """Test metrics as ``test/<key>``, the tables and the figures, into the run that trained the model."""
    import mlflow
    from mlflow.entities import Metric

    run_id = training_summary.get("mlflow_run_id")
    if not run_id:
        logger.warning("The training summary names no MLflow run (tracking was off): evaluation is not logged to MLflow")
        return
    client, now = mlflow.MlflowClient(), int(time.time() * 1000)
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    client.log_batch(run_id, metrics=[Metric(f"test/{k}", v, now, 0) for k, v in numeric.items()])
    client.set_tag(run_id, "test_split_sha256", metrics["test_split_sha256"])
    client.log_dict(run_id, metrics, "evaluation/metrics.json")
    client.log_text(run_id, per_case.to_csv(index=False), "evaluation/metrics_per_case.csv")
    client.log_text(run_id, biometry.to_csv(index=False), "evaluation/biometry_per_case.csv")
    for name, figure in figures.items():
        client.log_figure(run_id, figure, f"evaluation/{name}.png")
    logger.info("Logged the test evaluation to MLflow run %s", run_id)
