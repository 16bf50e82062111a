"""notebooks/review.ipynb executed headless (nbclient) on a tiny project state: a sample store with splits, and
two registered versions whose runs hold fabricated per-case metrics."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from sonoseg.registry.gate import PromotionPolicy
from sonoseg.registry.register import EvaluatedModel, register_and_promote
from support.kedro_runs import PROJECT_ROOT
from support.registry import CLASSES, fabricated_metrics, temporary_store, training_summary
from support.training import tiny_store, train

NOTEBOOK = PROJECT_ROOT / "notebooks" / "review.ipynb"


def per_case_csv(case_ids: list[str], offset: float) -> str:
    """metrics_per_case.csv: case i has Dice 0.3 + 0.1·i + offset for both classes."""
    rows = [{"case_id": case, "class": cls, "dice": min(1.0, 0.3 + 0.1 * i + offset), "iou": 0.5, "hd95": 3.0,
             "assd": 1.0, "unit": "px", "prediction_empty": False, "truth_empty": False}
            for i, case in enumerate(case_ids) for cls in ("1", "2", "union")]  # fmt: skip
    return pd.DataFrame(rows).to_csv(index=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """data/ as `make run` leaves it, and mlflow.db with champion v1 and challenger v2 (refused by the gate)."""
    store_dir = tmp_path / "data" / "02_intermediate"
    _, result = train("supervised", store_dir, tmp_path / "data" / "06_models")
    manifest, splits, _ = tiny_store(store_dir)  # the same samples again: their manifest and splits
    (tmp_path / "data" / "03_primary").mkdir(parents=True)
    manifest.to_parquet(tmp_path / "data" / "03_primary" / "manifest_validated.parquet")
    splits.to_csv(tmp_path / "data" / "03_primary" / "splits.csv", index=False)
    test_ids = splits.loc[splits["split"] == "test", "sample_id"].tolist()
    (tmp_path / "notebooks").mkdir()
    with temporary_store(tmp_path):
        for dice, offset in ((0.6, 0.0), (0.5, -0.05)):
            with mlflow.start_run() as run:
                mlflow.log_text(per_case_csv(test_ids, offset), "evaluation/metrics_per_case.csv")
            summary = training_summary(result.best_checkpoint, run.info.run_id)
            model = EvaluatedModel.from_reports(summary, fabricated_metrics(dice), {"classes": CLASSES}, 0.3)
            register_and_promote(model, "sonoseg", PromotionPolicy())
    return tmp_path


def execute(project: Path, monkeypatch: pytest.MonkeyPatch):
    import nbclient
    import nbformat

    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the notebook's defaults find the store and data from notebooks/ (sqlite:///../mlflow.db, ..)
    for name in ("MLFLOW_TRACKING_URI", "SONOSEG_MODEL_NAME", "SONOSEG_PROJECT_DIR"):
        monkeypatch.delenv(name, raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(project / "notebooks")}}).execute()  # fmt: skip
    text = "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs)
    images = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if "image/png" in o.get("data", {})]
    return text, images


def test_the_notebook_compares_champion_and_challenger(project, monkeypatch):
    text, images = execute(project, monkeypatch)
    assert "champion: version 1 of sonoseg (supervised" in text
    assert "challenger: version 2 of sonoseg (supervised" in text
    assert "gate on v2: refused" in text
    # Δ = -0.05 on every case: hand-computed from the fabricated tables
    assert "4 test cases; the challenger is better on 0, worse on 4, equal on 0; mean Δ -0.0500" in text
    assert "overlaid test cases: [" in text
    assert len(images) >= 2  # the delta plot and the overlays


@pytest.mark.slow
def test_the_same_version_in_both_roles_is_said_and_still_shown(project, monkeypatch):
    with temporary_store(project):
        mlflow.MlflowClient().set_registered_model_alias("sonoseg", "challenger", 1)
    text, images = execute(project, monkeypatch)
    assert "The champion and the challenger are the same version (v1)" in text
    assert "better on 0, worse on 0, equal on 4" in text and len(images) >= 2
