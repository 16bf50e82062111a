"""Over- and under-segmentation per class in the SSL benchmark's test predictions.

Run: ``.venv/bin/python benchmarks/ssl_diagnosis.py --dataset psfhs`` → ``benchmarks/results/ssl_diagnosis.{json,md}``
(``--cache``/``--out`` for another set of cached runs, e.g. ``benchmarks/results/superseded``).

Dice alone does not say whether a method loses a structure into the background or lets it spread; this
does. For every cached benchmark run (``benchmarks/results/runs/``) whose test predictions are still in
the work directory (``benchmarks/work/<dataset>/data/07_model_output/runs/<key>/``), and for each
foreground class: the mean over test cases of predicted area ÷ true area, the number of empty
predictions and the number of cases with Dice < 0.3. Truth comes from the work directory's ingested store.
A run whose predictions are gone (the work directory is not versioned) keeps the row that an earlier
run of this command wrote to ``OUT.json``, marked † in the tables and listed under ``kept_from_earlier``.

Where the dataset has both the pubic symphysis and the fetal head (PSFHS), it also splits the angle of
progression's error by source: abs ΔAoP with the predicted symphysis over the true head, with the true
symphysis under the predicted head, and the error of the symphysis axis's direction alone. The floor
row measures the truth itself after the round trip through the network's input size (nearest
neighbour down, as training resizes masks, and up, as prediction does): the error that resolution
alone costs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from sonoseg.evaluation.biometry import biometry_errors, fit_ellipse, measure, structure_labels
from sonoseg.evaluation.predict import resize_labels
from sonoseg.io.store import manifest_spacing

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("benchmarks.ssl_diagnosis")
POOR_DICE = 0.3


def case_areas(prediction: np.ndarray, truth: np.ndarray, label: int) -> tuple[int, int, float]:
    """Predicted area, true area and Dice of one class in one case (Dice 1.0 when both are empty)."""
    predicted, true = prediction == label, truth == label
    total = int(predicted.sum() + true.sum())
    dice = 1.0 if total == 0 else 2.0 * float((predicted & true).sum()) / total
    return int(predicted.sum()), int(true.sum()), dice


def diagnose_run(predictions: Path, store: Path, manifest: pd.DataFrame, classes: dict[int, str]) -> dict[str, Any]:
    """Per class: mean area ratio (cases with a true area only), empty predictions and poor cases; with
    both a symphysis and a head class, the mean :func:`aop_error_sources` as ``aop``."""
    rows = manifest.set_index("sample_id")
    ps_label, fh_label = structure_labels(classes)
    files = sorted(predictions.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"{predictions}: no prediction PNGs")
    per_class: dict[str, dict[str, Any]] = {}
    areas: dict[int, list[tuple[int, int, float]]] = {label: [] for label in classes}
    sources = []
    for file in files:
        if file.stem not in rows.index or not isinstance(rows.at[file.stem, "mask_path"], str):
            raise KeyError(f"{file}: case {file.stem!r} has no mask in the manifest")
        truth = np.load(store / rows.at[file.stem, "mask_path"])
        prediction = np.asarray(Image.open(file))
        if prediction.shape != truth.shape:
            raise ValueError(f"{file}: prediction {prediction.shape} and truth {truth.shape} differ in shape")
        for label in classes:
            areas[label].append(case_areas(prediction, truth, label))
        if ps_label is not None and fh_label is not None:
            sources.append(aop_error_sources(prediction, truth, manifest_spacing(rows.loc[file.stem]), ps_label, fh_label))
    for label, name in classes.items():
        values = np.array(areas[label], dtype=float)
        present = values[:, 1] > 0
        per_class[name] = {
            "area_ratio": float(np.mean(values[present, 0] / values[present, 1])) if present.any() else None,
            "empty_predictions": int(np.sum(present & (values[:, 0] == 0))),
            f"dice_below_{POOR_DICE}": int(np.sum(values[:, 2] < POOR_DICE)),
        }
    result: dict[str, Any] = {"cases": len(files), "classes": per_class}
    if sources:
        result["aop"] = mean_sources(sources)
    return result


def combine(symphysis_from: np.ndarray, head_from: np.ndarray, ps_label: int, fh_label: int) -> np.ndarray:
    """One label map with the symphysis of one map drawn over the head of another."""
    combined = np.zeros_like(head_from)
    combined[head_from == fh_label] = fh_label
    combined[symphysis_from == ps_label] = ps_label
    return combined


def axis_direction_error(prediction: np.ndarray, truth: np.ndarray, label: int, spacing: tuple[float, float] | None) -> float:
    """Degrees between the major axes of the predicted and true ellipses of one class (0–90); NaN when
    either cannot be fitted."""
    predicted, true = fit_ellipse(prediction == label, spacing), fit_ellipse(truth == label, spacing)
    if predicted is None or true is None:
        return float("nan")
    difference = abs(predicted.angle_deg - true.angle_deg) % 180.0
    return min(difference, 180.0 - difference)


def aop_error_sources(
    prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] | None, ps_label: int, fh_label: int
) -> dict[str, float]:
    """abs ΔAoP of the prediction, of its symphysis over the true head, of the true symphysis under its
    head, and the symphysis axis's direction error, all in degrees."""
    true = measure(truth, spacing, ps_label, fh_label)

    def aop_error(mask: np.ndarray) -> float:
        return biometry_errors(measure(mask, spacing, ps_label, fh_label), true)["aop_abs_err_deg"]

    return {
        "aop_abs_err_deg": aop_error(prediction),
        "predicted_ps_true_fh": aop_error(combine(prediction, truth, ps_label, fh_label)),
        "true_ps_predicted_fh": aop_error(combine(truth, prediction, ps_label, fh_label)),
        "ps_axis_direction_err_deg": axis_direction_error(prediction, truth, ps_label, spacing),
    }


def mean_sources(rows: list[dict[str, float]]) -> dict[str, float | None]:
    """The mean of each source over the cases where it could be measured (None when none could)."""
    means: dict[str, float | None] = {}
    for name in rows[0]:
        values = np.array([row[name] for row in rows], dtype=float)
        means[name] = float(np.nanmean(values)) if np.isfinite(values).any() else None
    return means


def resolution_floor(
    cases: Sequence[str], store: Path, manifest: pd.DataFrame, input_size: int, ps_label: int, fh_label: int
) -> dict[str, float | None]:
    """:func:`aop_error_sources` of the truth after a nearest-neighbour round trip through ``input_size``²."""
    rows = manifest.set_index("sample_id")
    sources = []
    for case in cases:
        truth = np.load(store / rows.at[case, "mask_path"])
        through_input = resize_labels(resize_labels(truth, (input_size, input_size)), truth.shape)
        sources.append(aop_error_sources(through_input, truth, manifest_spacing(rows.loc[case]), ps_label, fh_label))
    return mean_sources(sources)


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def markdown(
    results: dict[str, dict[str, Any]], command: str, floors: dict[int, dict[str, float | None]], kept: Sequence[str] = ()
) -> str:
    def run(key: str) -> str:
        return f"{key} †" if key in kept else key

    lines = [f"`{command}`", ""]
    if kept:
        lines += [f"† {len(kept)} run(s) whose predictions are no longer in the work directory: their rows are "
                  "the ones an earlier run of this command measured.", ""]  # fmt: skip
    lines += [f"| run | cases | class | area ÷ truth | empty | Dice < {POOR_DICE} |", "|---|---|---|---|---|---|"]
    for key, result in results.items():
        for name, values in result["classes"].items():
            lines.append(f"| {run(key)} | {result['cases']} | {name} | {_number(values['area_ratio'])} | "
                         f"{values['empty_predictions']} | {values[f'dice_below_{POOR_DICE}']} |")  # fmt: skip
    aop_rows = [(run(key), result["aop"]) for key, result in results.items() if "aop" in result]
    aop_rows += [(f"truth through {size}² input (floor)", floor) for size, floor in floors.items()]
    if aop_rows:
        lines += ["", "abs ΔAoP (degrees, mean over test cases) by source, and the symphysis axis's direction error:", "",
                  "| run | abs ΔAoP | predicted PS, true FH | true PS, predicted FH | PS axis direction |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for key, sources in aop_rows:
            lines.append(f"| {key} | " + " | ".join(_number(value) for value in sources.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="psfhs")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "work")
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / "results" / "runs", help="the cached runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ssl_diagnosis", help="writes OUT.json, OUT.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    work = args.workdir / args.dataset / "data"
    manifest = pd.read_parquet(work / "02_intermediate" / "manifest.parquet")
    dataset = json.loads((work / "02_intermediate" / "dataset.json").read_text())
    classes = {int(k): v for k, v in dataset["classes"].items() if int(k) != 0}
    ps_label, fh_label = structure_labels(classes)
    earlier_file = args.out.with_suffix(".json")
    earlier = json.loads(earlier_file.read_text()) if earlier_file.is_file() else {}
    results: dict[str, dict[str, Any]] = {}
    floors: dict[int, dict[str, float | None]] = {}
    kept: list[str] = []
    for entry_file in sorted(args.cache.glob(f"{args.dataset}_*.json")):
        entry = json.loads(entry_file.read_text())
        key = entry["key"]
        predictions = work / "07_model_output" / "runs" / key
        if not predictions.is_dir():
            if key in earlier.get("runs", {}):
                results[key] = earlier["runs"][key]
                kept.append(key)
                logger.info("%s: its predictions are not in %s; kept its row from %s", key, predictions, earlier_file)
            else:
                logger.warning("%s: its predictions are not in %s, skipped", key, predictions)
            continue
        results[key] = diagnose_run(predictions, work / "02_intermediate", manifest, classes)
        input_size = (entry.get("setting") or {}).get("training.input_size")
        if "aop" in results[key] and input_size and input_size not in floors:  # every run tests the same split
            cases = [file.stem for file in sorted(predictions.glob("*.png"))]
            floors[input_size] = resolution_floor(cases, work / "02_intermediate", manifest, input_size, ps_label, fh_label)
    for size, floor in earlier.get("input_size_floor", {}).items():  # the floor depends only on the test split
        floors.setdefault(int(size), floor)
    command = " ".join([".venv/bin/python", "benchmarks/ssl_diagnosis.py", *(sys.argv[1:] if argv is None else argv)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"command": command, "runs": results, "kept_from_earlier": kept, "input_size_floor": floors}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results, command, floors, kept))
    logger.info("Diagnosed %d run(s) → %s", len(results), args.out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
