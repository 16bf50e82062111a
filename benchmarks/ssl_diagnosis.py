"""Over- and under-segmentation per class in the SSL benchmark's test predictions.

Run: ``.venv/bin/python benchmarks/ssl_diagnosis.py --dataset psfhs`` → ``benchmarks/results/ssl_diagnosis.{json,md}``
(``--cache``/``--out`` for another set of cached runs, e.g. ``benchmarks/results/superseded``).

Dice alone does not say whether a method loses a structure into the background or lets it spread; this
does. For every cached benchmark run (``benchmarks/results/runs/``) whose test predictions are still in
the work directory (``benchmarks/work/<dataset>/data/07_model_output/runs/<key>/``), and for each
foreground class: the mean over test cases of predicted area ÷ true area, the number of empty
predictions and the number of cases with Dice < 0.3. Truth comes from the work directory's ingested store.
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
    """Per class: mean area ratio (cases with a true area only), empty predictions and poor cases."""
    masks = manifest.set_index("sample_id")["mask_path"]
    files = sorted(predictions.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"{predictions}: no prediction PNGs")
    per_class: dict[str, dict[str, Any]] = {}
    rows = {label: [] for label in classes}
    for file in files:
        if file.stem not in masks.index or not isinstance(masks[file.stem], str):
            raise KeyError(f"{file}: case {file.stem!r} has no mask in the manifest")
        truth = np.load(store / masks[file.stem])
        prediction = np.asarray(Image.open(file))
        if prediction.shape != truth.shape:
            raise ValueError(f"{file}: prediction {prediction.shape} and truth {truth.shape} differ in shape")
        for label in classes:
            rows[label].append(case_areas(prediction, truth, label))
    for label, name in classes.items():
        values = np.array(rows[label], dtype=float)
        present = values[:, 1] > 0
        per_class[name] = {
            "area_ratio": float(np.mean(values[present, 0] / values[present, 1])) if present.any() else None,
            "empty_predictions": int(np.sum(present & (values[:, 0] == 0))),
            f"dice_below_{POOR_DICE}": int(np.sum(values[:, 2] < POOR_DICE)),
        }
    return {"cases": len(files), "classes": per_class}


def markdown(results: dict[str, dict[str, Any]], command: str) -> str:
    lines = [f"`{command}`", "", f"| run | cases | class | area ÷ truth | empty | Dice < {POOR_DICE} |", "|---|---|---|---|---|---|"]
    for key, result in results.items():
        for name, values in result["classes"].items():
            ratio = "–" if values["area_ratio"] is None else f"{values['area_ratio']:.2f}"
            lines.append(f"| {key} | {result['cases']} | {name} | {ratio} | {values['empty_predictions']} | "
                         f"{values[f'dice_below_{POOR_DICE}']} |")  # fmt: skip
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
    results: dict[str, dict[str, Any]] = {}
    for entry_file in sorted(args.cache.glob(f"{args.dataset}_*.json")):
        key = json.loads(entry_file.read_text())["key"]
        predictions = work / "07_model_output" / "runs" / key
        if not predictions.is_dir():
            logger.warning("%s: its predictions are not in %s, skipped", key, predictions)
            continue
        results[key] = diagnose_run(predictions, work / "02_intermediate", manifest, classes)
    command = " ".join([".venv/bin/python", "benchmarks/ssl_diagnosis.py", *(sys.argv[1:] if argv is None else argv)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "runs": results}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results, command))
    logger.info("Diagnosed %d run(s) → %s", len(results), args.out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
