"""A tuning worker for tests and benchmarks: ``python -m support.tuning CONFIG.json`` runs the tuning
node (``tune_hyperparameters``, without Kedro's session) on a tiny synthetic store, so tests can start
several at once and kill one."""

from __future__ import annotations

import copy
import json
import logging
import sys
from pathlib import Path
from typing import Any

from support.kedro_runs import base_parameters

DATASET_INFO = {"classes": ["background", "ps", "fh"]}
# A small hdc space for tests: a conditional entry, and no VAT (its extra passes only cost time here).
TINY_HDC_SPACE = {
    "lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
    "hdc.lambda_pix": {"type": "float", "low": 0.1, "high": 3.0, "log": True},
    "hdc.perturbation": {"type": "categorical", "choices": ["uniform", "dropout"]},
    "hdc.perturbation_strength": {"depends_on": "hdc.perturbation", "cases": {
        "uniform": {"type": "float", "low": 0.1, "high": 0.6}, "dropout": {"type": "float", "low": 0.1, "high": 0.7}}},
}  # fmt: skip


def tiny_parameters(root: Path, storage: str, **tuning: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``training`` and ``tuning`` parameters sized for the tiny store (32 px, 2 + 2 per batch) with
    trials of 6 iterations validated every 2, the tiny hdc space, fast heartbeats, one torch thread,
    and everything written under ``root``; ``tuning`` keys override."""
    params = base_parameters()
    training = {**params["training"], "input_size": 32, "labelled_batch": 2, "unlabelled_batch": 2, "device": "cpu",
                "output_dir": str(root / "models")}  # fmt: skip
    base = {**params["tuning"], "n_trials": 4, "trial_iterations": 6, "val_every": 2, "storage": storage,
            "trials_dir": str(root / "trials"), "progress": False, "heartbeat_interval": 0.5, "grace_period": 3,
            "torch_threads": 1, "search_spaces": {"hdc": TINY_HDC_SPACE}}  # fmt: skip
    return training, copy.deepcopy({**base, **tuning})


def main(config_path: str) -> None:
    """Run the node with the JSON config's ``training``, ``tuning`` and ``store_dir`` (a tiny_store)."""
    import pandas as pd

    from sonoseg.pipelines.tuning.nodes import tune_hyperparameters

    logging.basicConfig(level=logging.WARNING, force=True)  # over any handler an import installed
    logging.getLogger("sonoseg.training.trainer").setLevel(logging.INFO)  # "Resuming ..." shows a resumed trial
    config = json.loads(Path(config_path).read_text())
    store = Path(config["store_dir"])
    manifest = pd.read_parquet(store / "manifest.parquet")
    splits = pd.read_csv(store / "splits.csv")
    report, _, _ = tune_hyperparameters(manifest, splits, DATASET_INFO, config["training"], config["tuning"], str(store))
    Path(config["report"]).write_text(json.dumps(report))


def write_tiny_store(root: Path) -> Path:
    """A :func:`~support.training.tiny_store` with its manifest and splits saved beside it, for workers."""
    from support.training import tiny_store

    manifest, splits, _ = tiny_store(root)
    manifest.to_parquet(root / "manifest.parquet")
    splits.to_csv(root / "splits.csv", index=False)
    return root



def kedro_project(root: Path) -> Path:
    """A copy of the project's code and configuration with the tiny store in place of the data
    pipelines' outputs, so ``kedro run --pipelines tuning`` can run there at once."""
    import shutil

    import mlflow

    from support.kedro_runs import copy_project

    copy_project(root)
    store = write_tiny_store(root / "data" / "02_intermediate")  # ingestion.store_dir
    (root / "data" / "03_primary").mkdir()
    shutil.copy(store / "manifest.parquet", root / "data" / "03_primary" / "manifest_validated.parquet")
    shutil.copy(store / "splits.csv", root / "data" / "03_primary" / "splits.csv")
    (store / "dataset.json").write_text(json.dumps(DATASET_INFO))
    # MLflow creates its tables and the experiment on first use; workers that start together race to
    # do it (the README says to start the first worker alone when mlflow.db is new)
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}").create_experiment("sonoseg")
    return root


if __name__ == "__main__":
    main(sys.argv[1])
