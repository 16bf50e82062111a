"""SSL benchmark runs trained on a lent GPU machine (the workplace's ``device`` tool) and brought home.

That machine has PyTorch but not the project's Kedro and MLflow stack, and it cannot install it. So a run
there makes the library calls of the training and evaluation nodes instead of ``kedro run``:

1. ``pack`` (here) writes into a folder that travels with the working tree: the dataset's sample store
   (``store.tar.xz``), its validated manifest and the leak-aware split of each label ratio. The Kedro splitting
   pipeline makes each split in the SSL benchmark's work directory, so it is the split that the CPU runs use.
2. ``train`` (there) runs each ``ratio:method:seed`` with the parameters that ``ssl_benchmark.py`` gives
   Kedro (conf/base, the budget's, ``--set``). The CPU budget's runs stay in fp32 (no AMP, no TF32).
   Up to ``--parallel`` runs go at once until ``--deadline-s``. Each run is ``Trainer.fit``, then the evaluation
   node's ``predict_split`` and ``score_predictions`` on the test split. ``device_runs.tar.gz`` holds every
   finished run's reports and test predictions. The checkpoints stay there: an infodiv checkpoint alone is
   about 67 MB.
3. ``import`` (here) logs each run to MLflow: params, tags, per-iteration curves, test metrics and per-case
   tables. It also writes the run's cache entry in ``benchmarks/results/runs/``, marked ``trained_on``, so that
   ``ssl_benchmark.py --aggregate-only`` puts the run's accuracy in the tables. Its time and memory come from
   another machine, so they stay out of the ratios to supervised. The predictions go where a Kedro run puts
   them in the benchmark's work directory, for ``ssl_diagnosis.py``.

Run:
  .venv/bin/python benchmarks/device_runs.py pack --dataset psfhs --ratios 0.05 --out .device/psfhs
  python3 benchmarks/device_runs.py train --pack .device/psfhs --runs 0.05:infodiv:0,0.05:cotrain:1 --out "$OUT"
  .venv/bin/python benchmarks/device_runs.py import <the folder that holds device_runs.tar.gz>
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import os
import re
import shutil
import shlex
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ssl_benchmark as bench  # noqa: E402  (a script beside this one, not a package)

ROOT = bench.ROOT
logger = logging.getLogger("benchmarks.device_runs")
ARCHIVE = "device_runs.tar.gz"
STORE_ARCHIVE = "store.tar.xz"
REPORTS = ("summary.json", "history.json", "metrics.json", "metrics_per_case.csv", "biometry_per_case.csv", "run.log")


# ------------------------------------------------------------------------------------------------- params


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """``a.b.c=value`` into a nested dict; a string is parsed as YAML, as ``kedro run --params`` does (OmegaConf
    keeps YAML 1.1's ``off``/``yes`` as strings: only true and false are booleans)."""
    *parents, leaf = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    parsed = yaml.safe_load(value) if isinstance(value, str) else value
    if isinstance(parsed, bool) and isinstance(value, str) and value.strip().lower() not in ("true", "false"):
        parsed = value
    tree[leaf] = parsed


def kedro_parameters(dataset: str, run_params: Mapping[str, Any], conf: Path = ROOT / "conf") -> dict[str, Any]:
    """The parameters ``kedro run --env <dataset> --params ...`` resolves: conf/base, then the dataset's env
    merged key by key (the project's soft merge), then the run's ``--params``."""
    def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
        for key, value in extra.items():
            if isinstance(value, Mapping) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = copy.deepcopy(value)

    params: dict[str, Any] = {}
    for env in ("base", dataset):
        for path in sorted((conf / env).glob("parameters*.yml")):
            merge(params, yaml.safe_load(path.read_text()) or {})
    for key, value in run_params.items():
        set_dotted(params, key, value)
    return params


def parse_runs(text: str) -> list[tuple[float, str, int]]:
    """``0.05:infodiv:0,0.05:cotrain:1`` -> [(0.05, 'infodiv', 0), (0.05, 'cotrain', 1)]."""
    runs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            ratio, method, seed = item.split(":")
            runs.append((float(ratio), method, int(seed)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: expected ratio:method:seed, e.g. 0.05:cotrain:1") from None
        if method not in (*bench.METHODS, "fully_supervised"):
            raise argparse.ArgumentTypeError(f"{item!r}: unknown method {method!r}")
    return runs


# --------------------------------------------------------------------------------------------------- pack


def pack_store(work: Path, ratios: Sequence[float], out: Path, splits: Mapping[float, Path]) -> dict[str, Any]:
    """Write the store archive, the validated manifest and each ratio's split into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    store = work / "data" / "02_intermediate"
    with tarfile.open(out / STORE_ARCHIVE, "w:xz") as archive:
        archive.add(store, arcname="02_intermediate")
    shutil.copy2(work / "data" / "03_primary" / "manifest_validated.parquet", out / "manifest_validated.parquet")
    for ratio in ratios:
        shutil.copy2(splits[ratio], out / f"splits_{bench.ratio_key(ratio)}.csv")
    commit, dirty = bench.git_state()
    info = {"dataset": work.name, "ratios": [bench.ratio_key(r) for r in ratios], "git_commit": commit, "git_dirty": dirty,
            "packed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    bench.write_json(out / "pack.json", info)
    return info


def pack(args: argparse.Namespace) -> None:
    work = bench.Workdir(args.workdir / args.dataset, args.dataset, bench.absolute_tracking_uri(args.tracking_uri))
    with work.locked():
        work.refresh()
        work.ingest(args.data or ROOT.parent / "shared" / "data" / args.dataset)
        with tempfile.TemporaryDirectory() as tmp:
            splits = {}
            for ratio in args.ratios:
                work.split(ratio)
                splits[ratio] = Path(tmp) / f"splits_{bench.ratio_key(ratio)}.csv"
                shutil.copy2(work.path / "data" / "03_primary" / "splits.csv", splits[ratio])
            info = pack_store(work.path, args.ratios, args.out, splits)
    size = sum(f.stat().st_size for f in args.out.iterdir()) / 2**20
    logger.info("Packed %s (ratios %s) into %s: %.1f MiB", args.dataset, ", ".join(info["ratios"]), args.out, size)


# --------------------------------------------------------------------------------------------------- train


def unpack(pack_dir: Path, work: Path) -> None:
    """The store and manifest where the catalog keeps them, under ``work`` (once)."""
    if (work / "data" / "03_primary" / "manifest_validated.parquet").is_file():
        return
    (work / "data" / "03_primary").mkdir(parents=True, exist_ok=True)
    with tarfile.open(pack_dir / STORE_ARCHIVE) as archive:
        archive.extractall(work / "data", filter="data")
    shutil.copy2(pack_dir / "manifest_validated.parquet", work / "data" / "03_primary" / "manifest_validated.parquet")


def evaluation_nodes():
    """The evaluation node functions, loaded from their file: the package's ``__init__`` imports Kedro."""
    path = ROOT / "src" / "sonoseg" / "pipelines" / "evaluation" / "nodes.py"
    spec = importlib.util.spec_from_file_location("sonoseg_evaluation_nodes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def device_facts(device: str) -> dict[str, Any]:
    import torch

    facts = {"device": device, "torch": torch.__version__, "host": os.uname().nodename}
    if device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts


def train_one(work: Path, pack_dir: Path, dataset: str, ratio: float, method: str, seed: int, run_params: Mapping[str, Any],
              device: str, out: Path) -> dict[str, Any]:  # fmt: skip
    """Train and evaluate one run in ``work`` (a Kedro-like layout), as the training and evaluation nodes do;
    write its reports into ``out``."""
    import pandas as pd
    import torch

    from sonoseg.io.store import SampleStore
    from sonoseg.ssl.base import method_class
    from sonoseg.training.config import TrainerConfig
    from sonoseg.training.data import training_sets
    from sonoseg.training.trainer import Trainer, fit_summary

    # the progress bar goes to run.log, so a run stopped at the deadline still shows how far it got and how fast
    on_device = {"training.device": device, "evaluation.device": device, "training.amp": "off", "training.workers": 2,
                 "training.progress": True}  # fmt: skip
    params = kedro_parameters(dataset, {**run_params, **on_device})
    if device.startswith("cuda"):  # fp32 as on the CPU: TF32 would round the matrix products to 10-bit mantissas
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    os.chdir(work)  # the relative paths of the parameters (output_dir, predictions_dir) resolve here, as under Kedro
    store_dir = params["ingestion"]["store_dir"]
    manifest = pd.read_parquet("data/03_primary/manifest_validated.parquet")
    splits = pd.read_csv(pack_dir / f"splits_{bench.ratio_key(ratio)}.csv")
    dataset_info = json.loads(Path(store_dir, "dataset.json").read_text())
    options = params["training"]
    config = TrainerConfig.from_params(options)
    sets = training_sets(manifest, splits, SampleStore(store_dir), config.input_size, method_class(method).uses_all_labels)
    trainer = Trainer(config, options.get(method) or {}, len(dataset_info["classes"]))
    started = time.perf_counter()
    result = trainer.fit(sets)
    summary = {**fit_summary(trainer, result, sets, time.perf_counter() - started), "trained_on": device_facts(device)}
    nodes = evaluation_nodes()
    predictions = nodes.predict_split(manifest, splits, summary, params["evaluation"], store_dir)
    per_case, biometry, metrics = nodes.score_predictions(manifest, splits, predictions, dataset_info, params["evaluation"], store_dir)
    out.mkdir(parents=True, exist_ok=True)
    bench.write_json(out / "summary.json", {**summary, "params": {k: params[k] for k in ("training", "evaluation")}})
    bench.write_json(out / "history.json", {"history": result.history, "val_history": result.val_history})
    bench.write_json(out / "metrics.json", metrics)
    per_case.to_csv(out / "metrics_per_case.csv", index=False)
    biometry.to_csv(out / "biometry_per_case.csv", index=False)
    shutil.copytree(params["evaluation"]["predictions_dir"], out / "predictions")  # label PNGs, ~1 KB each
    return metrics


def last_progress(log_file: Path) -> str | None:
    """The last progress-bar update in a run's log (``1800/4000 [02:00<02:26, 15.0it/s]``), or None."""
    found = re.findall(r"\d+/\d+ \[[^\]]*\]", log_file.read_text(errors="replace")) if log_file.exists() else []
    return found[-1] if found else None


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def train(args: argparse.Namespace) -> int:
    """Run the requested runs, ``--parallel`` at a time, each in its own process, until the deadline."""
    deadline = time.monotonic() + args.deadline_s
    info = json.loads((args.pack / "pack.json").read_text())
    dataset = info["dataset"]
    work = args.work / dataset
    unpack(args.pack, work)
    params = bench.budget_params(args.budget, args.iterations, args.input_size, args.batch)
    variant = bench.variant_name(args.budget, params)
    runs_dir = args.out / "runs"
    queue, running, status = list(args.runs), {}, {}
    while (queue or running) and time.monotonic() < deadline:
        while queue and len(running) < args.parallel:
            ratio, method, seed = queue.pop(0)
            overrides = bench.overrides_for(method, args.overrides)
            key = bench.run_key(dataset, ratio, method, seed, variant, False, overrides)
            run_params = bench.run_parameters(params, overrides, ratio=ratio, method=method, seed=seed, variant=variant,
                                              key=key, tuned=False)  # fmt: skip
            request = {"work": str(work.resolve()), "pack": str(args.pack.resolve()), "dataset": dataset, "ratio": ratio,
                       "method": method, "seed": seed, "run_params": run_params, "device": args.device,
                       "out": str((runs_dir / key).resolve())}  # fmt: skip
            (runs_dir / key).mkdir(parents=True, exist_ok=True)
            bench.write_json(runs_dir / key / "request.json", {**request, "variant": variant, "overrides": overrides,
                                                                "budget": args.budget, "setting": params, "pack_info": info,
                                                                "command": args.command_line})  # fmt: skip
            log = open(runs_dir / key / "run.log", "w")
            command = [sys.executable, str(Path(__file__).resolve()), "one", str(runs_dir / key / "request.json")]
            running[key] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}),
                            log, time.monotonic())  # fmt: skip
            logger.info("started %s", key)
        time.sleep(2)
        for key, (process, log, started) in list(running.items()):
            if process.poll() is not None:
                log.close()
                status[key] = {"status": "done" if process.returncode == 0 else f"failed ({process.returncode})",
                               "seconds": time.monotonic() - started}  # fmt: skip
                logger.info("%s: %s in %.0f s", key, status[key]["status"], status[key]["seconds"])
                del running[key]
    for key, (process, log, started) in running.items():
        _stop(process)
        log.close()
        status[key] = {"status": "stopped at the deadline", "seconds": time.monotonic() - started,
                       "progress": last_progress(runs_dir / key / "run.log")}  # fmt: skip
    for ratio, method, seed in queue:
        status[f"{ratio}:{method}:{seed}"] = {"status": "not started (deadline)"}
    bench.write_json(args.out / "device_runs.json", {"pack": info, "variant": variant, "runs": status})
    with tarfile.open(args.out / ARCHIVE, "w:gz") as archive:
        for run in sorted(runs_dir.iterdir()):
            for name in ("request.json", *REPORTS, "predictions"):
                if (run / name).exists():
                    archive.add(run / name, arcname=f"{run.name}/{name}")
    shutil.rmtree(runs_dir)
    failed = [k for k, v in status.items() if v["status"] != "done"]
    logger.info("%d of %d runs done; %s", len(status) - len(failed), len(status), ", ".join(failed) or "none failed")
    return 1 if failed else 0


def one(request_file: Path) -> None:
    request = json.loads(request_file.read_text())
    metrics = train_one(Path(request["work"]), Path(request["pack"]), request["dataset"], request["ratio"], request["method"],
                        request["seed"], request["run_params"], request["device"], Path(request["out"]))  # fmt: skip
    logger.info("test Dice %.4f", metrics["dice_mean"])


# -------------------------------------------------------------------------------------------------- import


def log_to_mlflow(tracking_uri: str, key: str, request: Mapping[str, Any], summary: Mapping[str, Any],
                  history: Mapping[str, Any], metrics: Mapping[str, Any], folder: Path) -> str:  # fmt: skip
    """One MLflow run in the benchmark's experiment: tags, params, the per-iteration curves, the test metrics
    and the per-case tables, as the training and evaluation nodes log a Kedro run."""
    import mlflow
    from mlflow.entities import Metric, Param

    experiment_id = bench.ensure_experiment(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    tags = {"benchmark": bench.BENCHMARK, "dataset": request["dataset"], "label_ratio": bench.ratio_key(request["ratio"]),
            "seed": request["seed"], "budget": request["budget"], "benchmark_variant": request["variant"],
            "method": request["method"], "git_commit": request["pack_info"]["git_commit"], "runner": "benchmarks/device_runs.py",
            "trained_on": json.dumps(summary["trained_on"]), "test_split_sha256": metrics["test_split_sha256"]}  # fmt: skip
    run = client.create_run(experiment_id, run_name=key,
                            tags={k: str(v) for k, v in tags.items()})  # fmt: skip
    run_id = run.info.run_id
    flat = bench.flatten(summary["params"])
    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in flat.items()])
    now = int(time.time() * 1000)
    points = [Metric(f"train/{k}", float(v), now, int(record["iteration"]))
              for record in history["history"] for k, v in record.items() if k != "iteration"]  # fmt: skip
    points += [Metric("val/dice", float(v["val_dice"]), now, int(v["iteration"])) for v in history["val_history"]]
    points.append(Metric("best_val_dice", float(summary["best_val_dice"]), now, 0))
    points += [Metric(f"test/{k}", float(v), now, 0) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)]  # fmt: skip
    for start in range(0, len(points), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=points[start : start + 1000])
    client.log_dict(run_id, dict(metrics), "evaluation/metrics.json")
    for name in ("metrics_per_case.csv", "biometry_per_case.csv", "run.log"):
        if (folder / name).is_file():
            client.log_artifact(run_id, str(folder / name), "evaluation" if name.endswith(".csv") else "device")
    client.set_terminated(run_id)
    return run_id


def import_runs(source: Path, cache: Path, tracking_uri: str, workdir: Path) -> list[str]:
    """Every finished run of ``source``'s archive into MLflow and the cache, and its test predictions into
    ``workdir/<dataset>/`` where a Kedro run would have written them (``ssl_diagnosis.py`` reads them there);
    cached keys are left alone."""
    imported = []
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(source / ARCHIVE) as archive:
        archive.extractall(tmp, filter="data")
        for folder in sorted(Path(tmp).iterdir()):
            key = folder.name
            if not (folder / "metrics.json").is_file():
                logger.warning("%s: no metrics (the run did not finish there), not imported", key)
                continue
            if (cache / f"{key}.json").is_file():
                logger.info("%s: already cached, left alone", key)
                continue
            request, summary, history, metrics = (json.loads((folder / f"{n}.json").read_text())
                                                  for n in ("request", "summary", "history", "metrics"))  # fmt: skip
            run_id = log_to_mlflow(tracking_uri, key, request, summary, history, metrics, folder)
            if (folder / "predictions").is_dir():
                predictions = workdir / request["dataset"] / request["run_params"]["evaluation.predictions_dir"]
                shutil.rmtree(predictions, ignore_errors=True)
                shutil.copytree(folder / "predictions", predictions)
            # the val curve and the loss means stay, as in a Kedro run's entry: the findings in docs/ read them there
            training = {k: v for k, v in summary.items() if k not in ("params", "trained_on")}
            entry = {
                "key": key, "dataset": request["dataset"], "label_ratio": float(request["ratio"]), "method": request["method"],
                "seed": request["seed"], "budget": request["budget"], "iterations": int(request["run_params"]["training.iterations"]),
                "variant": request["variant"], "setting": request["setting"], "tuned": None, "overrides": request["overrides"],
                "metrics": metrics, "training": training, "resumed": False,
                "trained_on": summary["trained_on"], "git_commit": request["pack_info"]["git_commit"],
                "git_dirty": request["pack_info"]["git_dirty"], "mlflow_run_id": run_id, "mlflow_tagged": True,
                "tracking_uri": tracking_uri, "wall_seconds": summary["train_seconds"],
                "command": "benchmarks/device_runs.py one (library calls of the training and evaluation nodes)",
                # an archive from before requests kept their command line names the script only
                "benchmark_command": request.get("command") or "benchmarks/device_runs.py train",
                "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }  # fmt: skip
            bench.write_json(cache / f"{key}.json", entry)
            imported.append(key)
            logger.info("%s: test Dice %.4f, MLflow run %s", key, metrics["dice_mean"], run_id)
    return imported


# ---------------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pack", help="here: the store, manifest and splits into a folder that travels")
    p.add_argument("--dataset", choices=bench.DATASETS, default="psfhs")
    p.add_argument("--ratios", type=lambda t: [float(x) for x in t.split(",")], default=[0.05])
    p.add_argument("--data", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "work")
    p.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'mlflow.db'}")
    t = commands.add_parser("train", help="on the GPU machine: train and evaluate the runs")
    t.add_argument("--pack", type=Path, required=True)
    t.add_argument("--runs", type=parse_runs, required=True, help="ratio:method:seed,...")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sonoseg_device")
    t.add_argument("--device", default="cuda")
    t.add_argument("--budget", choices=("cpu", "gpu"), default="cpu")
    t.add_argument("--iterations", type=int)
    t.add_argument("--input-size", type=int)
    t.add_argument("--batch", type=int)
    t.add_argument("--parallel", type=int, default=4)
    t.add_argument("--deadline-s", type=float, default=3600)
    t.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[])
    o = commands.add_parser("one", help="(internal) one run, from its request file")
    o.add_argument("request", type=Path)
    i = commands.add_parser("import", help="here: the finished runs into MLflow and the benchmark's cache")
    i.add_argument("source", type=Path, help=f"the folder that holds {ARCHIVE}")
    i.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    i.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'mlflow.db'}")
    i.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "work", help="receives the test predictions")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "pack":
        pack(args)
    elif args.command == "train":
        args.overrides = bench.parse_overrides(t, args.overrides)
        args.command_line = shlex.join(["python3", "benchmarks/device_runs.py", *(sys.argv[1:] if argv is None else argv)])
        return train(args)
    elif args.command == "one":
        one(args.request)
    else:
        imported = import_runs(args.source, args.results_dir / "runs", bench.absolute_tracking_uri(args.tracking_uri),
                               args.workdir)  # fmt: skip
        logger.info("Imported %d run(s); run ssl_benchmark.py --aggregate-only for the tables", len(imported))
    return 0


if __name__ == "__main__":
    sys.exit(main())
