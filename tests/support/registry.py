"""An MLflow store in a temporary folder, fabricated test metrics, and a registering worker process.

Runnable as a script (``python -m support.registry CONFIG.json``) so a test can register from several
real processes at once."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow

CLASSES = {"0": "background", "1": "pubic_symphysis", "2": "fetal_head"}
SPLIT = "5" * 64


def fabricated_metrics(dice: float, split: str = SPLIT, **overrides: Any) -> dict[str, Any]:
    """A ``metrics.json`` as the evaluation pipeline writes it, every class at Dice ``dice``."""
    metrics: dict[str, Any] = {"dice_mean": dice, "iou_mean": dice * 0.8, "hd95_mean": 4.0, "assd_mean": 1.5}
    for name in ("pubic_symphysis", "fetal_head", "union"):
        metrics.update({f"dice_{name}_mean": dice, f"dice_{name}_std": 0.05, f"iou_{name}_mean": dice * 0.8,
                        f"iou_{name}_std": 0.04, f"hd95_{name}_mean": 4.0, f"hd95_{name}_std": 1.0,
                        f"assd_{name}_mean": 1.5, f"assd_{name}_std": 0.5})  # fmt: skip
    metrics.update({"cases": 4, "empty_predictions": 0, "aop_abs_err_deg_mean": 3.0, "aop_abs_err_deg_std": 1.0,
                    "aop_abs_err_deg_cases": 4, "hsd_abs_err_mean": None, "hsd_abs_err_std": None, "hsd_abs_err_cases": 0,
                    "hc_abs_err_mean": 2.0, "hc_abs_err_std": 0.5, "hc_abs_err_cases": 4, "distance_unit": "px",
                    "test_split_sha256": split})  # fmt: skip
    metrics.update(overrides)
    return metrics


def training_summary(checkpoint: Path, run_id: str | None, method: str = "supervised", commit: str = "0" * 40) -> dict[str, Any]:
    """The training summary fields the registry reads."""
    return {"method": method, "best_checkpoint": str(checkpoint), "data_version": "d" * 64, "git_commit": commit,
            "mlflow_run_id": run_id, "n_labelled": 6, "n_unlabelled": 10, "input_size": 32, "best_val_dice": 0.5}  # fmt: skip


@contextlib.contextmanager
def temporary_store(folder: Path) -> Iterator[str]:
    """Track to ``folder/mlflow.db``, with run artifacts under ``folder`` (MLflow puts them under the working
    directory); everything is reset afterwards."""
    previous, previous_env = Path.cwd(), os.environ.get("MLFLOW_TRACKING_URI")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    os.chdir(folder)
    mlflow.set_tracking_uri(uri)  # MLflow also exports it as MLFLOW_TRACKING_URI for subprocesses
    try:
        yield uri
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)  # forgets it, environment variable included ("" would be a file store)
        if previous_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env
        os.chdir(previous)


def main(config_path: str) -> None:
    """Register one version per entry of ``dice`` (tagged with ``git_commit`` = ``<worker>-<i>``), starting
    at ``start_at`` so that workers overlap; write the promotion records to ``records``."""
    from sonoseg.registry.gate import PromotionPolicy
    from sonoseg.registry.register import EvaluatedModel, register_and_promote

    config = json.loads(Path(config_path).read_text())
    mlflow.set_tracking_uri(config["tracking_uri"])
    policy = PromotionPolicy(margin=0.0)
    time.sleep(max(0.0, config["start_at"] - time.time()))
    records = []
    for i, dice in enumerate(config["dice"]):
        with mlflow.start_run() as run:
            pass
        summary = training_summary(Path(config["checkpoint"]), run.info.run_id, commit=f"{config['worker']}-{i}")
        model = EvaluatedModel.from_reports(summary, fabricated_metrics(dice), {"classes": CLASSES}, 0.3)
        records.append(register_and_promote(model, config["model_name"], policy))
    Path(config["records"]).write_text(json.dumps(records))


if __name__ == "__main__":
    main(sys.argv[1])
