import io
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from sonoseg.console import main


def square(size: int, top: int, left: int, side: int, label: int = 1) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[top : top + side, left : left + side] = label
    return mask


def write_png(path: Path, mask: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), mask)
    return path


def write_mha(path: Path, mask: np.ndarray, spacing_row_col: tuple[float, float]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(mask)
    image.SetSpacing((spacing_row_col[1], spacing_row_col[0]))  # ITK spacing is (x = col, y = row)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def pairs(tmp_path):
    """Case a: a perfect prediction; case b: the truth square shifted right by 2 columns."""
    truth_a, truth_b = square(16, 4, 4, 4), square(16, 4, 4, 4, label=2)
    write_png(tmp_path / "pred" / "a.png", truth_a)
    write_png(tmp_path / "truth" / "a.png", truth_a)
    write_png(tmp_path / "pred" / "b.png", square(16, 4, 6, 4, label=2))
    write_mha(tmp_path / "truth" / "b.mha", truth_b, (0.5, 0.25))  # pairs by stem across formats
    return tmp_path


def test_metrics_writes_the_contract_csv_with_hand_computed_values(pairs, capsys):
    out = pairs / "out" / "metrics.csv"
    assert main(["metrics", str(pairs / "pred"), str(pairs / "truth"), "--out", str(out)]) == 0
    table = pd.read_csv(out, dtype={"class": str})
    assert list(table.columns) == ["case_id", "class", "dice", "iou", "hd95", "assd", "unit"]
    assert len(table) == 2 * 3  # two cases × (labels 1, 2 and the union)
    rows = table.set_index(["case_id", "class"])
    assert rows.loc[("a", "1"), "dice"] == 1.0 and rows.loc[("a", "1"), "hd95"] == 0.0
    assert rows.loc[("a", "1"), "unit"] == "px"
    # a 4×4 square shifted by 2 columns overlaps in 4×2 pixels: Dice 2·8/32, IoU 8/24
    assert rows.loc[("b", "2"), "dice"] == pytest.approx(0.5)
    assert rows.loc[("b", "2"), "iou"] == pytest.approx(1 / 3)
    assert rows.loc[("b", "2"), "unit"] == "mm"  # the truth .mha carries its spacing
    assert rows.loc[("b", "2"), "hd95"] == pytest.approx(2 * 0.25)  # 2 columns of 0.25 mm
    # label 1 is absent from both masks of case b: both empty counts as perfect
    assert rows.loc[("b", "1"), "dice"] == 1.0
    summary = capsys.readouterr().out
    assert "2 cases; 0 empty predictions" in summary


def test_metrics_spacing_option_overrides_the_files(pairs):
    out = pairs / "m.csv"
    assert main(["metrics", str(pairs / "pred"), str(pairs / "truth"), "--spacing", "2", "3", "--out", str(out)]) == 0
    rows = pd.read_csv(out, dtype={"class": str}).set_index(["case_id", "class"])
    assert rows.loc[("b", "2"), "hd95"] == pytest.approx(2 * 3.0)
    assert set(rows["unit"]) == {"mm"}


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda root: (root / "pred" / "b.png").unlink(), r"no prediction for 1 truth file\(s\): .*b\.mha"),
        (lambda root: write_png(root / "pred" / "b.png", square(20, 4, 4, 4, 2)), r"b\.png: size \(20, 20\) differs"),
        (lambda root: write_png(root / "pred" / "b.png", square(16, 4, 4, 4, 7)), r"b\.png: unknown label\(s\) \[7\]"),
        (lambda root: (root / "pred" / "b.png").write_bytes(b"not a png"), r"b\.png: cannot decode"),
    ],
    ids=["missing", "size", "label", "unreadable"],
)
def test_metrics_bad_input_names_the_file_and_exits_2(pairs, caplog, breakage, message):
    breakage(pairs)
    assert main(["metrics", str(pairs / "pred"), str(pairs / "truth"), "--out", str(pairs / "m.csv")]) == 2
    assert any(re.search(message, r.getMessage()) for r in caplog.records), caplog.text
    assert not (pairs / "m.csv").exists()


def scene() -> np.ndarray:
    """A head (label 2) below and right of a horizontal symphysis (label 1), drawn with OpenCV."""
    mask = np.zeros((128, 128), np.uint8)
    cv2.ellipse(mask, (80, 80), (30, 24), 0, 0, 360, 2, -1)
    cv2.ellipse(mask, (40, 30), (14, 3), 0, 0, 360, 1, -1)
    return mask


def test_biometry_prints_the_contract_csv(tmp_path, capsys):
    both = write_png(tmp_path / "both.png", scene())
    head_only = write_png(tmp_path / "head.png", (scene() == 2).astype(np.uint8))
    assert main(["biometry", str(both), str(head_only), "--fh-label", "2"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table.columns) == ["file", "aop_deg", "hsd", "hc", "unit", "note"]
    first, second = table.iloc[0], table.iloc[1]
    assert np.isfinite(first["aop_deg"]) and first["unit"] == "px"
    # from the inferior end (54, 30) straight down to the head: x = 54 meets it at y = 80 − 24·√(1 − (26/30)²)
    assert first["hsd"] == pytest.approx(80 - 24 * np.sqrt(1 - (26 / 30) ** 2) - 30, abs=1.0)
    # Ramanujan's perimeter of the 30 × 24 px semi-axes head, within the rasterisation error
    a, b = 30.0, 24.0
    h = ((a - b) / (a + b)) ** 2
    assert first["hc"] == pytest.approx(np.pi * (a + b) * (1 + 3 * h / (10 + np.sqrt(4 - 3 * h))), abs=2.0)
    # the head-only mask written with label 1 has no label 2 head and no symphysis
    assert np.isnan(second["hc"]) and np.isnan(second["aop_deg"]) and isinstance(second["note"], str)


def test_the_console_script_is_installed_and_answers_help():
    script = Path(sys.executable).with_name("sonoseg")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert all(command in result.stdout for command in ("metrics", "biometry", "predict"))


def test_predict_with_a_checkpoint_writes_masks_and_biometry(tmp_path, capsys):
    from support.training import train

    _, result = train("supervised", tmp_path / "store", tmp_path / "models")
    image = write_png(tmp_path / "images" / "scan.png", np.random.default_rng(0).integers(0, 256, (40, 56), dtype=np.uint8))
    out = tmp_path / "out"
    assert main(["predict", "--model", str(result.best_checkpoint), str(image), "--out", str(out)]) == 0
    table = pd.read_csv(out / "biometry.csv")
    assert list(table.columns[:2]) == ["file", "mask_path"] and len(table) == 1
    mask = cv2.imread(table["mask_path"][0], cv2.IMREAD_UNCHANGED)
    assert mask.shape == (40, 56) and mask.max() <= 2
    assert "scan.png" in capsys.readouterr().out


def test_predict_names_a_bad_image_and_exits_2(tmp_path, caplog):
    from support.training import train

    _, result = train("supervised", tmp_path / "store", tmp_path / "models")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["predict", "--model", str(result.best_checkpoint), str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "bad.png" in caplog.text
