"""Tuning throughput: trials per hour with 1 worker and with 2 workers on one journal-storage study.

Run: ``.venv/bin/python benchmarks/tuning.py`` (about three minutes on 2 cores). Writes
``benchmarks/results/tuning.json`` and ``.md``.

Both settings run the same budget: ``--trials`` hdc trials of ``--iterations`` iterations at 64² (the CPU
default size) on a synthetic store, with the project's hdc search space, no pruning (every trial does the
full work), and ``startup_trials`` = ``--trials`` so that every trial is drawn at random from a seed and its
number: both settings train exactly the same trials. Each worker is a fresh process with one torch thread,
so the 1-worker run leaves a core idle and the 2-worker run uses both; that is the fair comparison for
"N workers with cores / N threads each". A third run, 1 worker with 2 threads, is the alternative use of
the same two cores. Workers run the tuning node itself (``tune_hyperparameters``).

Two rates per setting: over the trial phase (first trial start to last trial end, from the study's own
timestamps) and over the wall clock of the whole command (process start-up and imports included).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("benchmarks.tuning")
CLASSES = ["background", "ps", "fh"]


def make_store(root: Path, n_images: int, size: int) -> None:
    """A synthetic store with fixed splits: a quarter labelled, half unlabelled, an eighth each val and test."""
    import pandas as pd

    from sonoseg.io.readers import SyntheticReader
    from sonoseg.io.store import SampleStore, ingest

    manifest, _ = ingest(SyntheticReader(n_images, {"size": size, "seed": 3}), SampleStore(root), progress=False)
    cycle = ["labelled"] * 2 + ["unlabelled"] * 4 + ["val", "test"]
    splits = pd.DataFrame({"sample_id": manifest["sample_id"], "split": [cycle[i % 8] for i in range(len(manifest))]})
    manifest.to_parquet(root / "manifest.parquet")
    splits.to_csv(root / "splits.csv", index=False)


def worker(config_path: str) -> None:
    """One tuning worker (runs in its own process)."""
    import pandas as pd

    from sonoseg.pipelines.tuning.nodes import tune_hyperparameters

    config = json.loads(Path(config_path).read_text())
    store = Path(config["store_dir"])
    tune_hyperparameters(pd.read_parquet(store / "manifest.parquet"), pd.read_csv(store / "splits.csv"),
                         {"classes": CLASSES}, config["training"], config["tuning"], str(store))  # fmt: skip


def parameters(args: argparse.Namespace, work: Path, storage: str, threads: int) -> tuple[dict, dict]:
    import yaml

    training = yaml.safe_load((ROOT / "conf/base/parameters_training.yml").read_text())["training"]
    tuning = yaml.safe_load((ROOT / "conf/base/parameters_tuning.yml").read_text())["tuning"]
    training.update(device="cpu", input_size=args.size, progress=False, output_dir=str(work / "models"))
    tuning.update(method="hdc", n_trials=args.trials, trial_iterations=args.iterations, val_every=args.iterations // 2,
                  storage=storage, pruner="none", seed=0, startup_trials=args.trials, torch_threads=threads,
                  progress=False, trials_dir=str(work / "trials"))  # fmt: skip
    return training, tuning


def run_setting(workers: int, threads: int, args: argparse.Namespace, store: Path, work: Path) -> dict:
    import optuna

    from sonoseg.tuning import make_storage

    name = f"{workers}x{threads}"
    journal = work / f"study_{name}.journal"
    training, tuning = parameters(args, work / name, str(journal), threads)
    config = work / f"config_{name}.json"
    config.write_text(json.dumps({"training": training, "tuning": tuning, "store_dir": str(store)}))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    command = [sys.executable, __file__, "--worker", str(config)]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for _ in range(workers)]  # fmt: skip
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"a worker failed:\n{err[-3000:]}")
    wall = time.perf_counter() - started
    trials = optuna.load_study(study_name="sonoseg-hdc", storage=make_storage(str(journal))).trials
    states = {t.state.name for t in trials}
    if states != {"COMPLETE"} or len(trials) != args.trials:
        raise RuntimeError(f"expected {args.trials} complete trials, got {[t.state.name for t in trials]}")
    phase = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return {
        "workers": workers,
        "threads_per_worker": threads,
        "trials": len(trials),
        "trial_phase_s": round(phase, 1),
        "wall_s": round(wall, 1),
        "trials_per_hour_trial_phase": round(len(trials) * 3600 / phase, 1),
        "trials_per_hour_wall": round(len(trials) * 3600 / wall, 1),
        "mean_trial_s": round(sum(t.duration.total_seconds() for t in trials) / len(trials), 2),
        "trials_per_worker": sorted(
            sum(1 for t in trials if t.user_attrs["worker"] == w) for w in {t.user_attrs["worker"] for t in trials}
        ),
    }


def markdown(result: dict) -> str:
    lines = [
        f"Setting: {json.dumps(result['setting'])}",
        "",
        "| workers × torch threads | trials | trial phase (s) | trials/hour (trial phase) | wall (s) | trials/hour (wall) "
        "| mean trial (s) | trials per worker |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        lines.append(f"| {run['workers']} × {run['threads_per_worker']} | {run['trials']} | {run['trial_phase_s']} | "
                     f"{run['trials_per_hour_trial_phase']} | {run['wall_s']} | {run['trials_per_hour_wall']} | "
                     f"{run['mean_trial_s']} | {run['trials_per_worker']} |")  # fmt: skip
    lines += ["", f"2 workers ÷ 1 worker (one thread each): **{result['ratio_trial_phase']}×** over the trial phase, "
              f"{result['ratio_wall']}× over the wall clock. 2 workers × 1 thread ÷ 1 worker × 2 threads: "
              f"{result['ratio_vs_two_threads']}× over the trial phase."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_store(work / "store", args.images, args.size)
        runs = []
        for workers, threads in ((1, 1), (2, 1), (1, 2)):
            runs.append(run_setting(workers, threads, args, work / "store", work))
            logger.info("%d worker(s) x %d thread(s): %s", workers, threads, runs[-1])
    result = {
        "setting": {"method": "hdc", "trials": args.trials, "trial_iterations": args.iterations, "input_size": args.size,
                    "images": args.images, "storage": "journal file", "pruner": "none",
                    "cpu_count": os.cpu_count()},  # fmt: skip
        "runs": runs,
        "ratio_trial_phase": round(runs[1]["trials_per_hour_trial_phase"] / runs[0]["trials_per_hour_trial_phase"], 2),
        "ratio_wall": round(runs[1]["trials_per_hour_wall"] / runs[0]["trials_per_hour_wall"], 2),
        "ratio_vs_two_threads": round(runs[1]["trials_per_hour_trial_phase"] / runs[2]["trials_per_hour_trial_phase"], 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tuning.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "tuning.md").write_text(markdown(result))
    sys.stdout.write(markdown(result))


if __name__ == "__main__":
    main()
