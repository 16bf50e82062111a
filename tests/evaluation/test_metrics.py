"""Segmentation metrics: hand-computed tiny cases, the empty-mask policy, the summary, and a cross-check
against MONAI's implementation on random and awkward masks (DESIGN.md §5)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from sonoseg.evaluation.metrics import COLUMNS, case_metrics, format_summary, metrics_table, summarise_metrics

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
METRICS = ("dice", "iou", "hd95", "assd")


def by_class(rows: list[dict]) -> dict[str, dict]:
    return {row["class"]: row for row in rows}


def square(shape: tuple[int, int], top: int, left: int, size: int, label: int = 1) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[top : top + size, left : left + size] = label
    return mask


# --- hand-computed cases -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spacing", "distance", "unit"),
    [(None, 5.0, "px"), ((0.5, 2.0), math.hypot(3 * 0.5, 4 * 2.0), "mm")],
)
def test_two_single_pixels_are_their_offset_apart(spacing, distance, unit):
    truth, prediction = np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8)
    truth[2, 3], prediction[5, 7] = 1, 1  # 3 rows and 4 columns apart

    row = by_class(case_metrics(prediction, truth, [1], spacing))["1"]

    assert row["dice"] == 0.0 and row["iou"] == 0.0
    assert row["hd95"] == pytest.approx(distance) and row["assd"] == pytest.approx(distance)
    assert row["unit"] == unit
    assert row["prediction_empty"] is False and row["truth_empty"] is False


def test_square_against_a_shifted_square():
    truth = square((12, 12), 2, 2, 4)
    prediction = square((12, 12), 2, 4, 4)  # two columns to the right: 4×2 pixels overlap

    row = by_class(case_metrics(prediction, truth, [1]))["1"]

    assert row["dice"] == pytest.approx(2 * 8 / (16 + 16))
    assert row["iou"] == pytest.approx(8 / 24)
    # Each 12-pixel ring is, pixel by pixel, 2,1,0,0 (top), 2,1,0,0 (bottom), 2,2 (far side), 1,1 (inside
    # the other square) from the other ring: mean 12/12 = 1; sorted, P95 falls between two 2s.
    assert row["assd"] == pytest.approx(1.0)
    assert row["hd95"] == pytest.approx(2.0)


def test_identical_masks_score_perfectly_even_when_they_fill_the_image():
    full = np.ones((8, 10), np.uint8)
    row = by_class(case_metrics(full, full, [1]))["1"]
    assert (row["dice"], row["iou"], row["hd95"], row["assd"]) == (1.0, 1.0, 0.0, 0.0)


def test_both_empty_is_a_perfect_score():
    empty = np.zeros((10, 10), np.uint8)
    row = by_class(case_metrics(empty, empty, [1]))["1"]
    assert (row["dice"], row["iou"], row["hd95"], row["assd"]) == (1.0, 1.0, 0.0, 0.0)
    assert row["prediction_empty"] is True and row["truth_empty"] is True


@pytest.mark.parametrize("empty_side", ["prediction", "truth"])
def test_one_empty_side_gets_zero_overlap_and_the_image_diagonal(empty_side):
    filled, empty = square((30, 40), 5, 5, 6), np.zeros((30, 40), np.uint8)
    prediction, truth = (empty, filled) if empty_side == "prediction" else (filled, empty)

    row = by_class(case_metrics(prediction, truth, [1], spacing=(0.5, 0.25)))["1"]

    diagonal = math.sqrt((30 * 0.5) ** 2 + (40 * 0.25) ** 2)  # 18.03 mm
    assert (row["dice"], row["iou"]) == (0.0, 0.0)
    assert row["hd95"] == pytest.approx(diagonal) and row["assd"] == pytest.approx(diagonal)
    assert row["prediction_empty"] is (empty_side == "prediction")
    assert row["truth_empty"] is (empty_side == "truth")


def test_union_row_pools_the_listed_labels_only():
    truth = np.zeros((10, 10), np.uint8)
    truth[2:5, 2:8], truth[5:8, 2:8] = 1, 2
    prediction = np.where(truth == 1, 2, np.where(truth == 2, 1, 0)).astype(np.uint8)  # classes swapped
    prediction[0, 0] = 3  # not listed: ignored, in the union too

    rows = case_metrics(prediction, truth, [1, 2])

    assert [row["class"] for row in rows] == ["1", "2", "union"]
    table = by_class(rows)
    assert table["1"]["dice"] == 0.0 and table["2"]["dice"] == 0.0
    assert (table["union"]["dice"], table["union"]["hd95"], table["union"]["assd"]) == (1.0, 0.0, 0.0)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\)"):
        case_metrics(np.zeros((3, 4), np.uint8), np.zeros((4, 3), np.uint8), [1])


@pytest.mark.parametrize(
    ("labels", "spacing", "message"),
    [([0, 1], None, "positive integers"), ([], None, "no foreground"), ([1], (1.0, -1.0), "spacing")],
)
def test_bad_labels_and_spacing_are_refused(labels, spacing, message):
    mask = np.ones((4, 4), np.uint8)
    with pytest.raises(ValueError, match=message):
        case_metrics(mask, mask, labels, spacing)


def test_metrics_table_has_one_row_per_case_and_class_and_names_a_failing_case():
    truth = square((12, 12), 2, 2, 4)
    table = metrics_table([("a", truth, truth, None), ("b", np.zeros_like(truth), truth, (1.0, 1.0))], [1])

    assert list(table.columns) == COLUMNS
    assert list(zip(table["case_id"], table["class"])) == [("a", "1"), ("a", "union"), ("b", "1"), ("b", "union")]
    assert list(table["unit"]) == ["px", "px", "mm", "mm"]
    with pytest.raises(ValueError, match="case bad"):
        metrics_table([("bad", truth, truth[:4], None)], [1])


def test_summary_means_stds_names_and_empty_prediction_count():
    table = pd.DataFrame(
        [  # case, class, dice, iou, hd95, assd, unit, prediction_empty, truth_empty
            ("a", "1", 0.8, 0.6, 2.0, 1.0, "px", False, False),
            ("a", "2", 1.0, 1.0, 0.0, 0.0, "px", True, True),  # both empty: not a missed structure
            ("a", "union", 0.8, 0.6, 2.0, 1.0, "px", False, False),
            ("b", "1", 0.0, 0.0, 10.0, 10.0, "px", True, False),  # missed
            ("b", "2", 0.6, 0.4, 4.0, 3.0, "px", False, False),
            ("b", "union", 0.5, 0.3, 10.0, 5.0, "px", True, False),  # the union is not counted
        ],
        columns=COLUMNS,
    )

    summary = summarise_metrics(table, {"1": "pubic_symphysis", 2: "fetal_head"})

    assert summary["dice_pubic_symphysis_mean"] == pytest.approx(0.4)
    assert summary["dice_pubic_symphysis_std"] == pytest.approx(0.4)  # population std of 0.8 and 0.0
    assert summary["hd95_fetal_head_mean"] == pytest.approx(2.0)
    assert summary["assd_union_mean"] == pytest.approx(3.0)
    assert summary["dice_mean"] == pytest.approx((0.4 + 0.8) / 2)  # foreground classes only
    assert summary["hd95_mean"] == pytest.approx((6.0 + 2.0) / 2)
    assert summary["cases"] == 2 and summary["empty_predictions"] == 1
    assert "unit" not in summary
    text = format_summary(table, {"1": "pubic_symphysis", "2": "fetal_head"})
    assert "hd95 (px)" in text and "pubic_symphysis" in text
    assert "0.4000 ± 0.4000" in text


def test_summary_without_names_keeps_the_label_values():
    truth = square((12, 12), 2, 2, 4)
    summary = summarise_metrics(metrics_table([("a", truth, truth, None)], [1]))
    assert summary["dice_1_mean"] == 1.0 and summary["dice_union_mean"] == 1.0 and summary["dice_1_std"] == 0.0


# --- cross-check against MONAI -------------------------------------------------------------------------


def monai_metrics(prediction: np.ndarray, truth: np.ndarray, labels: list[int], spacing) -> dict[str, np.ndarray]:
    """MONAI's four metrics for each label then the union (NaN or inf where MONAI is undefined)."""
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_iou,
    )

    def one_hot(mask: np.ndarray) -> torch.Tensor:
        channels = [mask == label for label in labels] + [np.isin(mask, labels)]
        return torch.from_numpy(np.stack(channels)[None].astype(np.float32))

    y_pred, y = one_hot(prediction), one_hot(truth)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on every empty channel
        values = {
            "dice": compute_dice(y_pred, y, include_background=True),
            "iou": compute_iou(y_pred, y, include_background=True),
            "hd95": compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=spacing),
            "assd": compute_average_surface_distance(y_pred, y, include_background=True, symmetric=True, spacing=spacing),
        }  # fmt: skip
    return {name: value[0].numpy().astype(float) for name, value in values.items()}


def random_blobs(rng: np.random.Generator, shape: tuple[int, int], labels: int) -> np.ndarray:
    """Smooth random blobs, one threshold per label; later labels overwrite earlier ones."""
    mask = np.zeros(shape, np.uint8)
    for label in range(1, labels + 1):
        field = ndimage.gaussian_filter(rng.random(shape), sigma=rng.uniform(1.5, 4))
        mask[field > np.quantile(field, rng.uniform(0.75, 0.95))] = label
    return mask


def edge_cases() -> list[tuple[str, np.ndarray, np.ndarray, list[int], tuple[float, float] | None]]:
    shape = (40, 56)
    one_pixel = np.zeros(shape, np.uint8)
    one_pixel[20, 30] = 1
    border = np.zeros(shape, np.uint8)
    border[:15, :] = 1  # touches three image borders
    border[25:, 40:] = 2  # a corner
    border_prediction = np.zeros(shape, np.uint8)
    border_prediction[:12, 5:] = 1
    border_prediction[30:, 35:] = 2
    line, shifted_line = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    line[10, 5:50] = 1
    shifted_line[13, 8:40] = 1
    line[5:35, 20] = 2  # a vertical line that crosses the first
    shifted_line[5:35, 24] = 2
    diagonal = np.eye(40, 56, dtype=np.uint8)  # 8-connected only: every pixel is a boundary
    speckle = (np.random.default_rng(7).random(shape) > 0.7).astype(np.uint8)
    return [
        ("one pixel vs blob", one_pixel, square(shape, 5, 5, 12), [1], None),
        ("one pixel vs itself, anisotropic", one_pixel, one_pixel, [1], (0.4, 1.3)),
        ("border", border_prediction, border, [1, 2], None),
        ("border, anisotropic", border_prediction, border, [1, 2], (0.25, 0.8)),
        ("thin lines", shifted_line, line, [1, 2], (0.5, 0.5)),
        ("diagonal line vs shifted", np.roll(diagonal, 3, axis=1), diagonal, [1], None),
        ("speckle vs square", speckle, square(shape, 10, 10, 20), [1], (1.1, 0.6)),
        ("one class missing", border_prediction * (border_prediction == 1), border, [1, 2], None),
    ]


def random_cases() -> list[tuple[str, np.ndarray, np.ndarray, list[int], tuple[float, float] | None]]:
    cases = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        shape = (32, 48) if seed % 2 else (64, 64)
        spacing = None if seed % 3 == 0 else (float(rng.uniform(0.1, 1.0)), float(rng.uniform(0.1, 1.0)))
        truth = random_blobs(rng, shape, 3)
        prediction = np.roll(truth, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
        prediction = np.where(random_blobs(rng, shape, 1) > 0, rng.integers(0, 4), prediction).astype(np.uint8)
        cases.append((f"seed {seed}", prediction, truth, [1, 2, 3], spacing))
    return cases


@pytest.mark.parametrize(("name", "prediction", "truth", "labels", "spacing"), edge_cases() + random_cases(),
                         ids=lambda value: value if isinstance(value, str) else None)  # fmt: skip
def test_values_equal_monai_wherever_monai_is_defined(name, prediction, truth, labels, spacing):
    ours = case_metrics(prediction, truth, labels, spacing)
    reference = monai_metrics(prediction, truth, labels, spacing)

    compared = 0
    for metric in METRICS:
        for index, row in enumerate(ours):
            expected = reference[metric][index]
            if np.isfinite(expected):  # MONAI is NaN/inf with an empty side: our policy is tested above
                assert row[metric] == pytest.approx(expected, abs=1e-4), (name, row["class"], metric)
                compared += 1
            else:
                assert row["prediction_empty"] or row["truth_empty"], (name, row["class"], metric)
    assert compared >= len(METRICS) * len(labels)  # at least the classes present on both sides


@pytest.mark.realdata
def test_real_psfhs_labels_equal_monai():
    from sonoseg.io.decode import read_array, to_label_2d

    files = sorted((SHARED_DATA / "psfhs" / "label_mha").glob("*.mha"))[::200]
    if not files:
        pytest.skip(f"{SHARED_DATA / 'psfhs'} is absent")
    for index, path in enumerate(files):
        truth = to_label_2d(read_array(path)[0], str(path))
        prediction = ndimage.grey_dilation(np.roll(truth, (index + 1, -2), axis=(0, 1)), size=(3, 3))
        ours = case_metrics(prediction, truth, [1, 2])
        reference = monai_metrics(prediction, truth, [1, 2], None)
        for metric in METRICS:
            np.testing.assert_allclose([row[metric] for row in ours], reference[metric], atol=1e-4, err_msg=path.name)
