"""Segmentation metrics per case and per foreground class, at the original resolution (DESIGN.md §5).

Every case gets one row per listed foreground label and one row for ``"union"``: all listed labels
together (labels that are not listed are ignored, in the union too). The definitions are MONAI 1.6.1's
(``compute_dice``, ``compute_iou``, ``compute_hausdorff_distance(percentile=95)``,
``compute_average_surface_distance(symmetric=True)``) and the tests check that the values agree:

- **Dice** = 2|P∩T| / (|P| + |T|) and **IoU** = |P∩T| / |P∪T|, on hard masks.
- **Boundary** of a mask: the pixels that a binary erosion with the 4-connected cross removes, with
  everything outside the image counting as background, so a mask that touches the image border has a
  boundary along it. This is ``monai.metrics.utils.get_mask_edges`` without sub-voxel edges: its crop to
  the union's bounding box (1 px margin, zero padded) changes no edge.
- **Surface distances**: from each boundary pixel of one mask to the nearest boundary pixel of the other,
  Euclidean, in physical coordinates (row × row_mm, column × col_mm) when a spacing is given.
- **HD95** = max(P95 of prediction→truth, P95 of truth→prediction), percentiles with linear interpolation.
- **ASSD** = the mean of both directions' distances taken together (MONAI concatenates the two directed
  distance sets before the mean), so the longer boundary weighs more; not the mean of two directed means.

MONAI takes the percentile of float32 distances at a float32 rank, so where two neighbouring sorted
distances are far apart (a spurious blob) its HD95 can be off the exact value by about 1e-3 px on
256×256 cases; the values here are computed in float64.

Units: distances are in mm when a spacing ``(row_mm, col_mm)`` is given (anisotropic allowed) and in
pixels otherwise; each row names its unit (``"mm"`` or ``"px"``).

Empty-mask policy (MONAI returns NaN or inf here; these rows never hold either):

- prediction and truth both empty: dice 1, iou 1, hd95 0, assd 0;
- exactly one of them empty (an empty prediction against a non-empty truth, or the reverse): dice 0,
  iou 0, and hd95 = assd = the image diagonal in the unit, sqrt((H·row_mm)² + (W·col_mm)²), **never 0**.

Each row records ``prediction_empty`` and ``truth_empty``; :func:`summarise_metrics` counts the empty
predictions against non-empty truths.

Speed: unlike MONAI, which runs an edge crop and a distance computation per metric and direction on
torch tensors, the boundaries are found once per class with array slicing inside the union's bounding
box, and both directions' distances come from k-d trees over the boundary pixels alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

METRICS = ("dice", "iou", "hd95", "assd")
COLUMNS = ["case_id", "class", *METRICS, "unit", "prediction_empty", "truth_empty"]
UNION = "union"


def case_metrics(
    prediction: np.ndarray, truth: np.ndarray, labels: Sequence[int], spacing: tuple[float, float] | None = None
) -> list[dict[str, Any]]:
    """Rows for one case: one per label in ``labels`` then one with class ``"union"``.

    Args:
        prediction: the predicted 2-D label map, at the truth's resolution.
        truth: the ground-truth 2-D label map.
        labels: the foreground labels to score (each > 0).
        spacing: the pixel size ``(row_mm, col_mm)``; ``None`` gives distances in pixels.

    Returns:
        Dicts with the keys class (the label as a string, or ``"union"``), dice, iou, hd95, assd, unit
        (``"mm"`` or ``"px"``), prediction_empty and truth_empty.

    Raises:
        ValueError: the shapes differ, the maps are not 2-D, a label is not a positive integer, or the
            spacing is not two positive numbers.
    """
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if prediction.shape != truth.shape:
        raise ValueError(f"the prediction's shape {prediction.shape} differs from the truth's shape {truth.shape}; "
                         "compare masks at the original resolution")  # fmt: skip
    if truth.ndim != 2:
        raise ValueError(f"expected 2-D label maps, got shape {truth.shape}")
    labels = _check_labels(labels)
    scale = _check_spacing(spacing)
    unit = "px" if spacing is None else "mm"
    diagonal = float(np.hypot(*(np.asarray(truth.shape) * scale)))
    rows, predicted_union, true_union = [], np.zeros(truth.shape, bool), np.zeros(truth.shape, bool)
    for label in labels:
        predicted, true = prediction == label, truth == label
        predicted_union |= predicted
        true_union |= true
        rows.append({"class": str(label), **_pair_metrics(predicted, true, scale, diagonal), "unit": unit})
    rows.append({"class": UNION, **_pair_metrics(predicted_union, true_union, scale, diagonal), "unit": unit})
    return rows


def metrics_table(
    cases: Iterable[tuple[str, np.ndarray, np.ndarray, tuple[float, float] | None]], labels: Sequence[int]
) -> pd.DataFrame:
    """(case_id, prediction, truth, spacing) → one row per case and class with the columns :data:`COLUMNS`.

    Raises:
        ValueError: as :func:`case_metrics`, naming the case.
    """
    rows = []
    for case_id, prediction, truth, spacing in cases:
        try:
            rows += [{"case_id": case_id, **row} for row in case_metrics(prediction, truth, labels, spacing)]
        except ValueError as err:
            raise ValueError(f"case {case_id}: {err}") from err
    return pd.DataFrame(rows, columns=COLUMNS)


def summarise_metrics(table: pd.DataFrame, class_names: Mapping[str, str] | None = None) -> dict[str, float | int]:
    """A flat summary of a :func:`metrics_table`.

    For each metric m and class c (named by ``class_names[c]`` when given, e.g.
    ``{"1": "pubic_symphysis", "2": "fetal_head"}``; ``"union"`` stays ``"union"``): ``f"{m}_{c}_mean"`` and
    ``f"{m}_{c}_std"`` over cases (population std, so one case gives 0 rather than NaN). ``f"{m}_mean"`` is
    the mean of the foreground classes' means (the union excluded; NaN without rows). ``cases`` counts the
    cases and ``empty_predictions`` the (case, class) rows, union excluded, with an empty prediction and a
    non-empty truth. The unit is not numeric and stays in the table.
    """
    names = {str(key): value for key, value in (class_names or {}).items()}
    summary: dict[str, float | int] = {}
    class_means: dict[str, list[float]] = {metric: [] for metric in METRICS}
    for cls, rows in table.groupby("class", sort=False):
        name = UNION if cls == UNION else names.get(cls, cls)
        for metric in METRICS:
            values = rows[metric].to_numpy(float)
            summary[f"{metric}_{name}_mean"] = float(values.mean())
            summary[f"{metric}_{name}_std"] = float(values.std())
            if cls != UNION:
                class_means[metric].append(float(values.mean()))
    for metric in METRICS:
        summary[f"{metric}_mean"] = float(np.mean(class_means[metric])) if class_means[metric] else float("nan")
    summary["cases"] = int(table["case_id"].nunique())
    missed = (table["class"] != UNION) & table["prediction_empty"].astype(bool) & ~table["truth_empty"].astype(bool)
    summary["empty_predictions"] = int(missed.sum())
    return summary


def format_summary(table: pd.DataFrame, class_names: Mapping[str, str] | None = None) -> str:
    """A small text table for a CLI: one line per class with the mean ± std of each metric over cases,
    the distance unit, and the number of empty predictions against non-empty truths."""
    if table.empty:
        return "no cases"
    names = {str(key): value for key, value in (class_names or {}).items()}
    unit = "/".join(sorted(table["unit"].unique()))
    header = ["class", "cases", "dice", "iou", f"hd95 ({unit})", f"assd ({unit})", "empty predictions"]
    lines = [header]
    for cls, rows in table.groupby("class", sort=False):
        missed = rows["prediction_empty"].astype(bool) & ~rows["truth_empty"].astype(bool)
        lines.append([
            UNION if cls == UNION else names.get(cls, cls), str(rows["case_id"].nunique()),
            *(_mean_std(rows[metric], digits) for metric, digits in zip(METRICS, (4, 4, 2, 2))), str(int(missed.sum())),
        ])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def _mean_std(values: pd.Series, digits: int) -> str:
    values = values.to_numpy(float)
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def _check_labels(labels: Sequence[int]) -> list[int]:
    checked = []
    for label in labels:
        if isinstance(label, bool) or not float(label).is_integer() or label <= 0:
            raise ValueError(f"foreground labels must be positive integers, got {label!r} in {list(labels)}")
        checked.append(int(label))
    if not checked:
        raise ValueError("no foreground labels to score")
    if len(set(checked)) != len(checked):
        raise ValueError(f"repeated foreground labels in {checked}")
    return checked


def _check_spacing(spacing: tuple[float, float] | None) -> np.ndarray:
    if spacing is None:
        return np.ones(2)
    scale = np.asarray(spacing, dtype=float)
    if scale.shape != (2,) or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        raise ValueError(f"the spacing must be two positive numbers (row_mm, col_mm), got {spacing!r}")
    return scale


def _pair_metrics(predicted: np.ndarray, true: np.ndarray, scale: np.ndarray, diagonal: float) -> dict[str, Any]:
    """Dice, IoU, HD95, ASSD and the empty flags of two boolean masks."""
    n_predicted, n_true = int(np.count_nonzero(predicted)), int(np.count_nonzero(true))
    flags = {"prediction_empty": n_predicted == 0, "truth_empty": n_true == 0}
    if n_predicted == 0 or n_true == 0:
        agree = n_predicted == n_true  # both empty
        overlap, distance = (1.0, 0.0) if agree else (0.0, diagonal)
        return {"dice": overlap, "iou": overlap, "hd95": distance, "assd": distance, **flags}
    overlap = int(np.count_nonzero(predicted & true))
    # crop both to the union's bounding box: distances are relative, so the offset does not matter
    rows, cols = np.flatnonzero((predicted | true).any(axis=1)), np.flatnonzero((predicted | true).any(axis=0))
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    edges_predicted = np.argwhere(_boundary(predicted[box])) * scale
    edges_true = np.argwhere(_boundary(true[box])) * scale
    to_true = cKDTree(edges_true).query(edges_predicted)[0]
    to_predicted = cKDTree(edges_predicted).query(edges_true)[0]
    return {
        "dice": 2.0 * overlap / (n_predicted + n_true),
        "iou": overlap / (n_predicted + n_true - overlap),
        "hd95": float(max(np.percentile(to_true, 95), np.percentile(to_predicted, 95))),
        "assd": float((to_true.sum() + to_predicted.sum()) / (to_true.size + to_predicted.size)),
        **flags,
    }


def _boundary(mask: np.ndarray) -> np.ndarray:
    """The pixels a 4-connected erosion removes, with background outside the array (scipy's
    ``binary_erosion`` default, which MONAI's ``get_mask_edges`` uses)."""
    padded = np.pad(mask, 1)
    interior = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior
