"""The packaged pyfunc: loaded back by alias from a real sqlite registry, it predicts raw images of any size
and dtype as the checkpoint's own Predictor does; ``mlflow models predict`` works on a PNG and a PSFHS .mha."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from sonoseg.evaluation.biometry import measure
from sonoseg.evaluation.predict import Predictor
from sonoseg.registry.gate import PromotionPolicy
from sonoseg.registry.pyfunc import OUTPUT_COLUMNS, log_segmentation_model, predict_files
from sonoseg.registry.register import EvaluatedModel, register_and_promote
from support.layouts import textured_image, write_mha, write_png
from support.registry import CLASSES, fabricated_metrics, temporary_store, training_summary

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def register(checkpoint: Path, name: str = "sonoseg") -> dict:
    with mlflow.start_run() as run:
        pass
    model = EvaluatedModel.from_reports(training_summary(checkpoint, run.info.run_id), fabricated_metrics(0.5), {"classes": CLASSES}, 0.3)
    return register_and_promote(model, name, PromotionPolicy())


def decode(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.fixture(scope="module")
def champion(checkpoint, tmp_path_factory):
    """The champion, loaded by alias once for the module (the loaded model no longer needs the store)."""
    with temporary_store(tmp_path_factory.mktemp("registry")):
        register(checkpoint)
        return mlflow.pyfunc.load_model("models:/sonoseg@champion")


def test_loaded_by_alias_it_predicts_a_png_path_raw_pixels_and_a_float_image(checkpoint, champion, tmp_path):
    predictor = Predictor.from_checkpoint(checkpoint)
    png = textured_image((50, 70), 1)
    write_png(tmp_path / "frame.png", png)
    small = textured_image((20, 30), 2)  # another size, uint8 values as JSON integers
    floating = np.random.default_rng(3).random((40, 44)).astype(np.float32) * 7 - 2
    frame = pd.DataFrame({"path": [str(tmp_path / "frame.png"), None, None],
                          "pixels": [None, small.tolist(), floating.tolist()]})  # fmt: skip
    out = champion.predict(frame)
    assert list(out.columns) == ["mask_png", "height", "width", "aop_deg", "hsd", "hc", "unit", "note"]
    assert out[["height", "width"]].values.tolist() == [[50, 70], [20, 30], [40, 44]]
    for mask_png, image in zip(out["mask_png"], [png, small, floating]):
        mask = decode(mask_png)
        # the preprocessing inside the model is the Predictor's: the same labels, pixel for pixel
        np.testing.assert_array_equal(mask, predictor.predict(image))
        assert mask.dtype == np.uint8 and mask.max() <= 2
    expected = measure(decode(out.loc[0, "mask_png"]))
    assert out.loc[0, "unit"] == "px" and out.loc[0, "note"] == expected.note
    np.testing.assert_allclose(out.loc[0, ["aop_deg", "hsd", "hc"]].to_numpy(float), [expected.aop_deg, expected.hsd, expected.hc])


def test_integer_pixels_mean_uint8_and_floats_are_scaled_by_their_own_range(checkpoint, champion):
    predictor = Predictor.from_checkpoint(checkpoint)
    image = textured_image((32, 32), 4)
    out = champion.predict(pd.DataFrame({"pixels": [image.tolist(), (image / 255.0 * 3.0).tolist()]}))
    np.testing.assert_array_equal(decode(out.loc[0, "mask_png"]), predictor.predict(image))
    np.testing.assert_array_equal(decode(out.loc[1, "mask_png"]), predictor.predict(image.astype(np.float32) * 3.0))


def test_encoded_bytes_png_sniffed_and_mha_named_with_its_spacing(champion, tmp_path):
    image = textured_image((36, 48), 5)
    write_png(tmp_path / "a.png", image)
    write_mha(tmp_path / "b.mha", np.stack([image] * 3), spacing=(0.3, 0.2, 1.0))  # x, y, plane: PSFHS-like
    frame = pd.DataFrame({"image": [(tmp_path / "a.png").read_bytes(), (tmp_path / "b.mha").read_bytes(), None],
                          "format": [None, "mha", None], "path": [None, None, str(tmp_path / "b.mha")]})  # fmt: skip
    out = champion.predict(frame)
    np.testing.assert_array_equal(decode(out.loc[0, "mask_png"]), decode(out.loc[1, "mask_png"]))
    assert out["unit"].tolist() == ["px", "mm", "mm"]  # the .mha's own spacing makes the biometry millimetres
    assert out.loc[1, "mask_png"] == out.loc[2, "mask_png"]
    pd.testing.assert_series_equal(out.loc[1, ["hc", "note"]], out.loc[2, ["hc", "note"]], check_names=False)


def test_output_dir_writes_one_mask_png_per_row(champion, tmp_path):
    image = textured_image((30, 30), 6)
    write_png(tmp_path / "in" / "case.png", image)
    rows = pd.DataFrame({"path": [str(tmp_path / "in" / "case.png"), str(tmp_path / "in" / "case.png"), None],
                         "pixels": [None, None, image.tolist()]})  # fmt: skip
    out = champion.predict(rows, params={"output_dir": str(tmp_path / "masks")})
    assert "mask_png" not in out.columns
    assert [Path(p).name for p in out["mask_path"]] == ["case_mask.png", "case_row1_mask.png", "row2_mask.png"]
    masks = [cv2.imread(p, cv2.IMREAD_UNCHANGED) for p in out["mask_path"]]
    assert masks[0].shape == (30, 30)
    np.testing.assert_array_equal(masks[0], masks[2])


def test_predict_files_from_a_checkpoint_or_a_registered_model_agree(checkpoint, store, tmp_path):
    register(checkpoint)
    images = [tmp_path / "a.png", tmp_path / "b.mha"]
    write_png(images[0], textured_image((30, 40), 8))
    write_mha(images[1], textured_image((24, 24), 9), spacing=(0.5, 0.5))
    from_checkpoint = predict_files(str(checkpoint), images, tmp_path / "from_pt")
    registered = predict_files("models:/sonoseg@champion", images, tmp_path / "from_registry", tracking_uri=store)
    assert list(from_checkpoint.columns) == ["file", "mask_path", *OUTPUT_COLUMNS]
    assert from_checkpoint["file"].tolist() == [str(p) for p in images] and from_checkpoint["unit"].tolist() == ["px", "mm"]
    for ours, theirs in zip(from_checkpoint["mask_path"], registered["mask_path"]):
        assert Path(ours).parent == tmp_path / "from_pt"
        np.testing.assert_array_equal(cv2.imread(ours, cv2.IMREAD_UNCHANGED), cv2.imread(theirs, cv2.IMREAD_UNCHANGED))
    pd.testing.assert_frame_equal(from_checkpoint.drop(columns="mask_path"), registered.drop(columns="mask_path"))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"path": "a.png", "pixels": [[1, 2], [3, 4]]}, r"row 0: give exactly one of \['path', 'image', 'pixels'\], got \['path', 'pixels'\]"),
        ({"path": None, "format": "png"}, "row 0: give exactly one of .* got none"),
        ({"path": "/nowhere/missing.png"}, "row 0: /nowhere/missing.png: cannot open file"),
        ({"pixels": [[1, 2], [3]]}, "row 0: 'pixels' must be a rectangular 2-D array"),
        ({"pixels": [1, 2, 3]}, r"row 0: 'pixels' must be a non-empty rectangular 2-D array of numbers, got shape \(3,\)"),
        ({"image": b"\x00\x01garbage"}, "row 0: the 'image' bytes are of no format recognised"),
        ({"image": b"\x00\x01garbage", "format": "docx"}, "row 0: format 'docx' is not one of"),
        ({"image": "!!not base64"}, "row 0: 'image' is a string but not base64"),
        ({"image": b"\x89PNG broken", "format": "png"}, "row 0: .*row0.png: cannot decode image"),
    ],
)
def test_bad_rows_are_named_with_the_problem(champion, row, message):
    with pytest.raises(ValueError, match=message):
        champion.predict(pd.DataFrame([row]))


def test_no_known_input_column_is_an_error(champion):
    with pytest.raises(ValueError, match=r"it needs one of \['path', 'image', 'pixels'\]"):
        champion.predict(pd.DataFrame({"file": ["a.png"]}))


def test_signature_input_example_and_a_slim_checkpoint(checkpoint, store, tmp_path):
    with mlflow.start_run():
        info = log_segmentation_model(checkpoint, CLASSES)
    model = mlflow.pyfunc.load_model(info.model_uri)
    schema = model.metadata.get_input_schema()
    assert schema.input_names() == ["path", "image", "format", "pixels"] and not any(c.required for c in schema.inputs)
    assert [p.name for p in model.metadata.get_params_schema().params] == ["output_dir"]
    assert "mask_png" in model.metadata.get_output_schema().input_names()
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "model")))
    example = json.loads((local / "serving_input_example.json").read_text())
    assert example["dataframe_split"]["columns"] == ["pixels"]
    packed = torch.load(local / "artifacts" / "model.pt", weights_only=False)
    assert "optimizer" not in packed and "history" not in packed and packed["input_size"] == 32
    assert (local / "artifacts" / "model.pt").stat().st_size < checkpoint.stat().st_size
    assert json.loads((local / "artifacts" / "classes.json").read_text()) == CLASSES
    assert (local / "code" / "sonoseg" / "registry" / "pyfunc.py").is_file()  # no installed project needed
    assert not list(local.rglob("__pycache__"))
    requirements = (local / "requirements.txt").read_text()
    assert "torch==" in requirements and "+cpu" not in requirements


def models_predict(uri: str, input_path: Path, content_type: str, tracking_uri: str, cwd: Path) -> list[dict]:
    """``mlflow models predict`` in a subprocess, as a user runs it; its JSON predictions."""
    output = input_path.with_suffix(".out.json")
    args = [str(Path(sys.executable).with_name("mlflow")), "models", "predict", "-m", uri, "-i", str(input_path),
            "-t", content_type, "-o", str(output), "--env-manager", "local"]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(output.read_text())["predictions"]


def test_mlflow_models_predict_cli_on_a_png_by_path_and_as_base64_json(checkpoint, store, tmp_path):
    register(checkpoint)
    image = textured_image((45, 60), 7)
    write_png(tmp_path / "scan.png", image)
    records = [{"path": str(tmp_path / "scan.png")},
               {"image": base64.b64encode((tmp_path / "scan.png").read_bytes()).decode()}]  # fmt: skip
    (tmp_path / "input.json").write_text(json.dumps({"dataframe_records": records}))
    predictions = models_predict("models:/sonoseg@champion", tmp_path / "input.json", "json", store, tmp_path)
    expected = Predictor.from_checkpoint(checkpoint).predict(image)
    assert len(predictions) == 2
    for prediction in predictions:
        assert (prediction["height"], prediction["width"], prediction["unit"]) == (45, 60, "px")
        np.testing.assert_array_equal(decode(base64.b64decode(prediction["mask_png"])), expected)


@pytest.mark.slow
def test_mlflow_models_predict_cli_on_a_csv_of_paths(checkpoint, store, tmp_path):
    register(checkpoint)
    write_png(tmp_path / "scan.png", textured_image((45, 60), 7))
    (tmp_path / "input.csv").write_text(f"path\n{tmp_path / 'scan.png'}\n")
    (prediction,) = models_predict("models:/sonoseg@challenger", tmp_path / "input.csv", "csv", store, tmp_path)
    assert (prediction["height"], prediction["width"]) == (45, 60)
    assert decode(base64.b64decode(prediction["mask_png"])).shape == (45, 60)


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "psfhs" / "image_mha").is_dir(), reason="../shared/data/psfhs is absent")
def test_mlflow_models_predict_cli_on_a_real_psfhs_mha(checkpoint, store, tmp_path):
    register(checkpoint)
    path = sorted((SHARED_DATA / "psfhs" / "image_mha").glob("*.mha"))[0]
    (tmp_path / "input.json").write_text(json.dumps({"dataframe_records": [{"path": str(path)}]}))
    (prediction,) = models_predict("models:/sonoseg@champion", tmp_path / "input.json", "json", store, tmp_path)
    assert (prediction["height"], prediction["width"]) == (256, 256)
    from sonoseg.io.decode import read_array

    planes, _ = read_array(path)  # 3 × 256 × 256, three identical planes
    expected = Predictor.from_checkpoint(checkpoint).predict(planes)
    np.testing.assert_array_equal(decode(base64.b64decode(prediction["mask_png"])), expected)
