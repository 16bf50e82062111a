"""Val Dice of every method on the default synthetic data in the default (CPU) training budget.

Run after the data half of the default job (``make run`` or ``kedro run --pipelines ingestion,validation,splitting``):
``.venv/bin/python benchmarks/synthetic_methods.py``. Each method trains with the settings of
``conf/base/parameters_training.yml`` on the same splits; results go to
``benchmarks/results/synthetic_methods.json`` and ``.md``. Checkpoints go to a temporary folder, so the
project's ``data/06_models`` is left alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["supervised", "fully_supervised", "mean_teacher", "fixmatch", "cps", "hdc", "infodiv", "simcvd", "cotrain"]
logger = logging.getLogger("benchmarks.synthetic_methods")


def main() -> None:
    from sonoseg.io.store import SampleStore
    from sonoseg.ssl.base import method_class
    from sonoseg.training.config import TrainerConfig
    from sonoseg.training.data import training_sets
    from sonoseg.training.trainer import Trainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=METHODS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    params = yaml.safe_load((ROOT / "conf/base/parameters_training.yml").read_text())["training"]
    store_dir = yaml.safe_load((ROOT / "conf/base/parameters_ingestion.yml").read_text())["ingestion"]["store_dir"]
    manifest = pd.read_parquet(ROOT / "data/03_primary/manifest_validated.parquet")
    splits = pd.read_csv(ROOT / "data/03_primary/splits.csv")
    classes = json.loads((ROOT / "data/02_intermediate/dataset.json").read_text())["classes"]
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for method in args.methods:
            config = TrainerConfig.from_params({**params, "method": method, "output_dir": out, "progress": False})
            sets = training_sets(manifest, splits, SampleStore(ROOT / store_dir), config.input_size,
                                 method_class(method).uses_all_labels)  # fmt: skip
            started = time.perf_counter()
            result = Trainer(config, params.get(method) or {}, len(classes)).fit(sets)
            rows.append({
                "method": method, "best_val_dice": result.best_val_dice, "best_iteration": result.best_iteration,
                "final_val_dice": result.val_history[-1]["val_dice"], "iterations": result.iterations_done,
                "n_labelled": sets.n_labelled, "n_unlabelled": sets.n_unlabelled, "n_val": len(sets.val),
                "seconds": time.perf_counter() - started,
            })  # fmt: skip
            logger.info("%s", rows[-1])
    setting = {k: params[k] for k in ("iterations", "input_size", "labelled_batch", "unlabelled_batch", "lr", "model", "seed")}
    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / "synthetic_methods.json"
    if previous.is_file() and json.loads(previous.read_text())["setting"] == setting:  # re-run methods replace their rows
        fresh = {r["method"] for r in rows}
        kept = [r for r in json.loads(previous.read_text())["methods"] if r["method"] not in fresh]
        rows = sorted(kept + rows, key=lambda r: METHODS.index(r["method"]) if r["method"] in METHODS else len(METHODS))
    (args.out / "synthetic_methods.json").write_text(json.dumps({"setting": setting, "methods": rows}, indent=2))
    lines = [f"Setting: {json.dumps(setting)}; {rows[0]['n_labelled']} labelled, {rows[0]['n_unlabelled']} unlabelled, "
             f"{rows[0]['n_val']} val samples (fully_supervised sees every training mask).", "",
             "| method | best val Dice | at iteration | final val Dice | minutes |", "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['method']} | {r['best_val_dice']:.3f} | {r['best_iteration']} | {r['final_val_dice']:.3f} | "
              f"{r['seconds'] / 60:.1f} |" for r in rows]  # fmt: skip
    (args.out / "synthetic_methods.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
