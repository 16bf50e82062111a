"""The SSL diagnosis: area ratios, empty predictions and poor cases per class, computed by hand on 4x4 maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.scripts import BENCHMARKS, load_script


@pytest.fixture(scope="module")
def diagnosis():
    return load_script(BENCHMARKS / "ssl_diagnosis.py")


def write_case(data: Path, key: str, case: str, truth: np.ndarray, prediction: np.ndarray) -> dict:
    (data / "02_intermediate" / "masks").mkdir(parents=True, exist_ok=True)
    np.save(data / "02_intermediate" / "masks" / f"{case}.npy", truth)
    folder = data / "07_model_output" / "runs" / key
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(prediction.astype(np.uint8)).save(folder / f"{case}.png")
    return {"sample_id": case, "mask_path": f"masks/{case}.npy", "spacing_row_mm": np.nan, "spacing_col_mm": np.nan}


def test_area_ratios_empty_and_poor_cases_by_hand(diagnosis, tmp_path):
    data, results = tmp_path / "work" / "psfhs" / "data", tmp_path / "results"
    truth_a = np.zeros((4, 4), np.uint8)
    truth_a[0, :2] = 1  # class 1: 2 px
    truth_a[2:, :] = 2  # class 2: 8 px
    prediction_a = np.zeros((4, 4), np.uint8)
    prediction_a[0, 0] = 1  # half the class-1 area: Dice 2·1/3
    prediction_a[1:, :] = 2  # 12 px of class 2: ratio 1.5, Dice 2·8/20
    truth_b = truth_a.copy()
    prediction_b = truth_a.copy()
    prediction_b[prediction_b == 1] = 0  # class 1 missed: empty, Dice 0
    rows = [write_case(data, "psfhs_0.01_hdc_seed0_cpu-4000it", "c1", truth_a, prediction_a),
            write_case(data, "psfhs_0.01_hdc_seed0_cpu-4000it", "c2", truth_b, prediction_b)]  # fmt: skip
    pd.DataFrame(rows).to_parquet(data / "02_intermediate" / "manifest.parquet")
    classes = {"0": "background", "1": "pubic_symphysis", "2": "fetal_head"}
    (data / "02_intermediate" / "dataset.json").write_text(json.dumps({"classes": classes}))
    (results / "runs").mkdir(parents=True)
    for key in ("psfhs_0.01_hdc_seed0_cpu-4000it", "psfhs_0.01_supervised_seed0_cpu-4000it"):  # the second has no predictions
        (results / "runs" / f"{key}.json").write_text(json.dumps({"key": key, "setting": {"training.input_size": 4}}))

    assert diagnosis.main(["--workdir", str(tmp_path / "work"), "--cache", str(results / "runs"),
                           "--out", str(results / "ssl_diagnosis")]) == 0  # fmt: skip
    runs = json.loads((results / "ssl_diagnosis.json").read_text())["runs"]
    assert list(runs) == ["psfhs_0.01_hdc_seed0_cpu-4000it"]
    ps, fh = runs["psfhs_0.01_hdc_seed0_cpu-4000it"]["classes"].values()
    assert ps == {"area_ratio": pytest.approx(0.25), "empty_predictions": 1, "dice_below_0.3": 1}  # (0.5 + 0) / 2
    assert fh == {"area_ratio": pytest.approx(1.25), "empty_predictions": 0, "dice_below_0.3": 0}  # (1.5 + 1) / 2
    table = (results / "ssl_diagnosis.md").read_text()
    assert "| psfhs_0.01_hdc_seed0_cpu-4000it | 2 | pubic_symphysis | 0.25 | 1 | 1 |" in table
    # 4x4 structures are too small for an ellipse: no angle is measured, and the tables say so
    assert runs["psfhs_0.01_hdc_seed0_cpu-4000it"]["aop"]["aop_abs_err_deg"] is None
    assert "| truth through 4² input (floor) | – | – | – | – |" in table


def test_a_run_whose_predictions_are_gone_keeps_its_earlier_row_marked(diagnosis, tmp_path):
    data, results = tmp_path / "work" / "psfhs" / "data", tmp_path / "results"
    truth = np.zeros((4, 4), np.uint8)
    truth[2:, :] = 2
    prediction = truth.copy()
    prediction[1, :] = 2  # 12 px for 8: area ratio 1.5
    key = "psfhs_0.05_cps_seed0_cpu-4000it"
    pd.DataFrame([write_case(data, key, "c1", truth, prediction)]).to_parquet(data / "02_intermediate" / "manifest.parquet")
    (data / "02_intermediate" / "dataset.json").write_text(json.dumps({"classes": {"0": "background", "2": "fetal_head"}}))
    (results / "runs").mkdir(parents=True)
    (results / "runs" / f"{key}.json").write_text(json.dumps({"key": key, "setting": {}}))
    args = ["--workdir", str(tmp_path / "work"), "--cache", str(results / "runs"), "--out", str(results / "ssl_diagnosis")]

    assert diagnosis.main(args) == 0
    first = json.loads((results / "ssl_diagnosis.json").read_text())
    assert first["kept_from_earlier"] == [] and "†" not in (results / "ssl_diagnosis.md").read_text()
    for png in (data / "07_model_output" / "runs" / key).glob("*.png"):
        png.unlink()
    (data / "07_model_output" / "runs" / key).rmdir()

    assert diagnosis.main(args) == 0
    second = json.loads((results / "ssl_diagnosis.json").read_text())
    assert second["runs"] == first["runs"] and second["runs"][key]["classes"]["fetal_head"]["area_ratio"] == pytest.approx(1.5)
    assert second["kept_from_earlier"] == [key]
    assert f"| {key} † | 1 | fetal_head | 1.50 | 0 | 0 |" in (results / "ssl_diagnosis.md").read_text()


def test_a_prediction_of_another_size_is_an_error_naming_the_file(diagnosis, tmp_path):
    data = tmp_path / "data"
    row = write_case(data, "k", "c1", np.zeros((4, 4), np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"c1\.png.*differ in shape"):
        diagnosis.diagnose_run(data / "07_model_output" / "runs" / "k", data / "02_intermediate", pd.DataFrame([row]), {1: "ps"})


def draw(ps_angle_deg: float, size: int = 96) -> np.ndarray:
    """A label map: an elongated symphysis (1) at ``ps_angle_deg`` and a round head (2) beside it."""
    import cv2

    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, (60, 60), 22, 2, thickness=-1)
    cv2.ellipse(mask, (22, 28), (16, 5), ps_angle_deg, 0, 360, 1, thickness=-1)
    return mask


def test_aop_error_sources_put_a_rotated_symphysis_on_the_symphysis(diagnosis):
    truth, prediction = draw(30.0), draw(40.0)  # only the symphysis differs, by 10°
    sources = diagnosis.aop_error_sources(prediction, truth, None, ps_label=1, fh_label=2)
    assert np.isfinite(list(sources.values())).all()
    assert sources["true_ps_predicted_fh"] == 0.0  # the true symphysis under the (unchanged) head is the truth
    assert sources["predicted_ps_true_fh"] == sources["aop_abs_err_deg"] > 5.0
    assert sources["ps_axis_direction_err_deg"] == pytest.approx(10.0, abs=1.5)
    assert diagnosis.axis_direction_error(draw(175.0), draw(5.0), 1, None) == pytest.approx(10.0, abs=1.5)  # across 180°


def test_the_resolution_floor_is_zero_at_the_masks_own_size_and_not_below_it(diagnosis, tmp_path):
    np.save(tmp_path / "c1.npy", draw(30.0))
    manifest = pd.DataFrame([{"sample_id": "c1", "mask_path": "c1.npy", "spacing_row_mm": np.nan, "spacing_col_mm": np.nan}])
    assert diagnosis.resolution_floor(["c1"], tmp_path, manifest, 96, 1, 2) == {
        "aop_abs_err_deg": 0.0, "predicted_ps_true_fh": 0.0, "true_ps_predicted_fh": 0.0, "ps_axis_direction_err_deg": 0.0}
    coarse = diagnosis.resolution_floor(["c1"], tmp_path, manifest, 24, 1, 2)
    assert coarse["aop_abs_err_deg"] > 0.0 and coarse["ps_axis_direction_err_deg"] > 0.0
