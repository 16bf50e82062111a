"""Real-data SSL benchmark: every method at each label ratio and seed, trained and tested through the real pipelines.

Run: ``.venv/bin/python benchmarks/ssl_benchmark.py --dataset psfhs --ratios 0.05 --methods supervised,hdc --seeds 0,1,2``
(``make ssl-benchmark ARGS="..."``). Each (dataset, label ratio, method, seed) is one
``kedro run --env <dataset> --pipelines training,evaluation --params ...`` in a work directory
(``benchmarks/work/<dataset>/``: a copy of ``pyproject.toml`` and ``conf/`` with its own ``data/``, so the
project's ``data/`` is never touched) and one MLflow run in the project's store, tagged
``benchmark=ssl_benchmark``. A finished run is cached as ``benchmarks/results/runs/<key>.json``; cached runs
are skipped, so the table fills up across sessions. A cache key names only the ``--set`` overrides, so each run
also records the method settings it trained with (``training.method_settings``): a cached run whose settings a
changed default or ``conf/`` value would now alter stops the benchmark with the differences, and the aggregation
warns of it. Then the cache is aggregated (also ``--aggregate-only``)
into ``benchmarks/results/<dataset>_<ratio>.json`` (each method -> its setting with the best mean val Dice:
``per_method``), ``benchmarks/results/ssl_benchmark.md`` and the section of ``docs/benchmarks.md`` between
``<!-- ssl-benchmark-start -->`` and ``<!-- ssl-benchmark-end -->``.

Budgets: ``cpu`` (128², small UNet, 4,000 iterations of batch 8 + 8, on the CPU) and ``gpu`` (the settings of
``conf/gpu/parameters_training.yml`` passed as ``--params``, because Kedro takes one ``--env``). Label ratio 1.0
is the fully supervised upper bound: the split at ``splitting.label_ratio=1.0`` labels every training-side
image, and only ``supervised`` (or ``fully_supervised``) runs there, as there is nothing unlabelled.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from sonoseg.sweeps import mean_and_std

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("benchmarks.ssl_benchmark")

BENCHMARK = "ssl_benchmark"
DATASETS = ("psfhs", "hc18")  # each is also the Kedro env that reads its layout
METHODS = ("supervised", "mean_teacher", "fixmatch", "cps", "hdc", "infodiv", "simcvd", "cotrain")
SUPERVISED_ONLY = ("supervised", "fully_supervised")  # the only methods that make sense without unlabelled images
RATIOS = (0.01, 0.05, 0.1, 1.0)
CPU_BUDGET: dict[str, Any] = {
    "training.device": "cpu",
    "training.input_size": 128,
    "training.model.name": "unet_small",
    "training.iterations": 4000,
    "training.labelled_batch": 8,
    "training.unlabelled_batch": 8,
    "training.val_every": 200,
    "training.checkpoint_every": 500,
    "evaluation.device": "cpu",
}
# The cpu budget at its standard settings: its results files carry no suffix (the contract names).
PRIMARY_VARIANT = "cpu-4000it"
REGISTER = {"dataset": "psfhs", "label_ratio": 0.05, "method": "hdc"}
DOCS_START, DOCS_END = "<!-- ssl-benchmark-start -->", "<!-- ssl-benchmark-end -->"
ANCHORS = """**Published anchors: numbers from elsewhere, not comparable split for split** (other splits, input sizes,
networks and often other label sets; they only place our numbers):

| source | dataset | setting | number |
|---|---|---|---|
| IUGC 2024 challenge pipeline | PSFHS-type intrapartum ultrasound | fully supervised pipeline | DSC 0.918, ΔAoP 8.90°, ΔHSD 14.35 |
| EGAD | HC18 | 5 % labels | Dice 94.57 % |
| FUGC challenge | FUGC cervix | best semi-supervised entry | mDSC 90.26 % |
"""
# (column title, aggregate key) of the main table; the key's "<key>_std" is its std over seeds.
MAIN_COLUMNS = {
    "psfhs": [("Dice PS", "dice_ps"), ("Dice FH", "dice_fh"), ("Dice mean", "dice_mean"), ("IoU mean", "iou_mean"),
              ("HD95 mean", "hd95_mean"), ("ASSD mean", "assd_mean"), ("abs ΔAoP (°)", "aop_abs_err_deg"),
              ("abs ΔHSD", "hsd_abs_err")],
    "hc18": [("Dice FH", "dice_fh"), ("IoU", "iou_mean"), ("HD95", "hd95_mean"), ("ASSD", "assd_mean"),
             ("abs ΔHC (mm)", "hc_abs_err_mm")],
}  # fmt: skip
# aggregate key -> metrics.json key (test-split means over cases)
METRIC_KEYS = {
    "dice_ps": "dice_pubic_symphysis_mean",
    "dice_fh": "dice_fetal_head_mean",
    "dice_mean": "dice_mean",
    "iou_mean": "iou_mean",
    "hd95_mean": "hd95_mean",
    "assd_mean": "assd_mean",
    "aop_abs_err_deg": "aop_abs_err_deg_mean",
    "hsd_abs_err": "hsd_abs_err_mean",
}
CLASS_METRICS = ("dice", "iou", "hd95", "assd")


class RunFailed(RuntimeError):
    """A ``kedro run`` exited non-zero or did not write what it should; ``tail`` is the end of its log."""

    def __init__(self, message: str, tail: str = "") -> None:
        super().__init__(message)
        self.tail = tail


# --------------------------------------------------------------------------------------------- settings


def ratio_key(ratio: float) -> str:
    """The label ratio as it appears in file names and JSON keys: 0.05 -> '0.05', 1 -> '1.0'."""
    return str(float(ratio))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as dotted ``--params`` keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def budget_params(budget: str, iterations: int | None, input_size: int | None, batch: int | None,
                  model: str | None = None) -> dict[str, Any]:
    """The training/evaluation ``--params`` of a budget, with the command line's overrides."""
    if budget == "cpu":
        params = dict(CPU_BUDGET)
    else:  # Kedro takes one --env (the dataset's), so conf/gpu's file goes in as --params
        gpu = yaml.safe_load((ROOT / "conf/gpu/parameters_training.yml").read_text())
        params = flatten(gpu)
    if iterations is not None:
        params["training.iterations"] = iterations
    if input_size is not None:
        params["training.input_size"] = input_size
    if batch is not None:
        params["training.labelled_batch"] = params["training.unlabelled_batch"] = batch
    if model is not None:  # another network keeps none of the budget's network options (e.g. the gpu's encoder)
        params = {k: v for k, v in params.items() if not k.startswith("training.model.")}
        params["training.model.name"] = model
    return params


def variant_name(budget: str, params: Mapping[str, Any]) -> str:
    """``<budget>-<iterations>it``, plus a short hash when other settings differ from the budget's standard ones,
    so that runs of different settings never share a cache entry, a checkpoint folder or a table."""
    iterations = int(params["training.iterations"])
    name = f"{budget}-{iterations}it"
    if dict(params) != budget_params(budget, iterations, None, None):
        name += "-" + hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return name


def overrides_suffix(overrides: Mapping[str, str]) -> str:
    """``_set-<hash>`` for runs with ``--set`` overrides, so that they never share a cache entry or checkpoints."""
    if not overrides:
        return ""
    return "_set-" + hashlib.sha256(json.dumps(dict(overrides), sort_keys=True).encode()).hexdigest()[:8]


def overrides_for(method: str, overrides: Mapping[str, str]) -> dict[str, str]:
    """The overrides that concern ``method``: all but the ``training.<other method>.*`` ones."""
    others = tuple(f"training.{m}." for m in (*METHODS, "fully_supervised") if m != method)
    return {k: v for k, v in overrides.items() if not k.startswith(others)}


def run_key(dataset: str, ratio: float, method: str, seed: int, variant: str, tuned: bool,
            overrides: Mapping[str, str] | None = None) -> str:  # fmt: skip
    return f"{dataset}_{ratio_key(ratio)}_{method}_seed{seed}_{variant}{'_tuned' if tuned else ''}{overrides_suffix(overrides or {})}"


def run_parameters(params: Mapping[str, Any], overrides: Mapping[str, str], *, ratio: float, method: str, seed: int,
                   variant: str, key: str, tuned: bool) -> dict[str, Any]:  # fmt: skip
    """The ``--params`` of one run: the budget's, the ``--set`` overrides, and where its checkpoints and
    predictions go (apart per variant, tuning, overrides, ratio, method and seed, so that none resumes another)."""
    output_dir = (f"data/06_models/runs/{variant}{'-tuned' if tuned else ''}{overrides_suffix(overrides)}/"
                  f"{ratio_key(ratio)}/{method}/seed{seed}")  # fmt: skip
    return {**params, **overrides, "training.method": method, "training.seed": seed, "training.output_dir": output_dir,
            "training.progress": False, "training.use_tuned": tuned,
            "evaluation.predictions_dir": f"data/07_model_output/runs/{key}"}  # fmt: skip


def format_params(params: Mapping[str, Any]) -> str:
    """``k=v,k=v`` for ``kedro run --params`` (OmegaConf parses each value as YAML)."""
    items = []
    for key, value in params.items():
        text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        if "," in text:
            raise ValueError(f"--params cannot carry a comma: {key}={text}")
        items.append(f"{key}={text}")
    return ",".join(items)


def absolute_tracking_uri(uri: str) -> str:
    """A relative ``sqlite:///x.db`` would land in the work directory: anchor it at the current directory."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    return uri


def git_state() -> tuple[str, bool]:
    """The commit and whether tracked files under src/ or conf/ differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no", "--", "src", "conf"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def load_tuned(files: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """method -> the tuned-params file's content (as ``kedro run --pipelines tuning`` writes it) and its path."""
    tuned: dict[str, dict[str, Any]] = {}
    for path in files:
        content = yaml.safe_load(Path(path).read_text()) or {}
        if "method" not in content or "params" not in content:
            raise SystemExit(f"{path}: not a tuned-params file (needs 'method' and 'params')")
        tuned[content["method"]] = {**content, "path": str(Path(path).resolve())}
    return tuned


# ----------------------------------------------------------------------------------------- work directory


class Workdir:
    """A Kedro project root for one dataset: copies of pyproject.toml and conf/, and its own data/."""

    def __init__(self, path: Path, dataset: str, tracking_uri: str) -> None:
        self.path, self.dataset, self.tracking_uri = path, dataset, tracking_uri
        self.reporting = path / "data" / "08_reporting"
        self.logs = path / "logs"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One benchmark process per work directory: runs share data/08_reporting."""
        from filelock import FileLock, Timeout

        self.path.mkdir(parents=True, exist_ok=True)
        try:
            lock = FileLock(self.path / ".lock", timeout=0)
            lock.acquire()
        except Timeout:
            raise SystemExit(f"{self.path} is in use by another ssl_benchmark process") from None
        try:
            yield
        finally:
            lock.release()

    def refresh(self) -> None:
        """Copy pyproject.toml and conf/ afresh (conf/local's contents stay behind) and point MLflow at the store."""
        shutil.copy2(ROOT / "pyproject.toml", self.path / "pyproject.toml")
        shutil.rmtree(self.path / "conf", ignore_errors=True)
        shutil.copytree(ROOT / "conf", self.path / "conf", ignore=lambda d, names: names if Path(d).name == "local" else [])
        (self.path / "src").mkdir(exist_ok=True)  # Kedro insists the source_dir exists; sonoseg is installed
        for folder in ("data", "logs"):
            (self.path / folder).mkdir(exist_ok=True)
        server = yaml.safe_load((ROOT / "conf/base/mlflow.yml").read_text())["server"]
        text = yaml.safe_dump({"server": {**server, "mlflow_tracking_uri": self.tracking_uri}}, sort_keys=False)
        # `kedro run --env <dataset>` reads base + that env only, never conf/local
        for env in ("local", self.dataset):
            (self.path / "conf" / env).mkdir(exist_ok=True)
            (self.path / "conf" / env / "mlflow.yml").write_text(text)

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name, value in {"KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                            "GX_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1"}.items():  # fmt: skip
            env.setdefault(name, value)
        env["KEDRO_LOGGING_CONFIG"] = str(self.path / "conf" / "logging.yml")
        env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def kedro(self, pipelines: str, params: Mapping[str, Any], log_name: str) -> tuple[list[str], float]:
        """``kedro run --env <dataset> --pipelines <pipelines> --params ...`` here, output to logs/<log_name>.log."""
        command = [sys.executable, "-m", "kedro", "run", "--env", self.dataset, "--pipelines", pipelines,
                   "--params", format_params(params)]  # fmt: skip
        log_path = self.logs / f"{log_name}.log"
        started = time.perf_counter()
        with open(log_path, "w") as log:
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
            code = subprocess.run(command, cwd=self.path, env=self.child_env(), stdout=log, stderr=subprocess.STDOUT).returncode
        if code:
            raise RunFailed(f"`kedro run --pipelines {pipelines}` exited {code} (log: {log_path})", tail(log_path))
        return command, time.perf_counter() - started

    def ingest(self, data: Path) -> None:
        """Ingestion and validation, unless the work directory already holds this data path's manifest."""
        marker, manifest = self.path / "ingested.json", self.path / "data/03_primary/manifest_validated.parquet"
        wanted = {"dataset": self.dataset, "data_path": str(data.resolve())}
        if manifest.is_file() and marker.is_file() and json.loads(marker.read_text()) == wanted:
            logger.info("%s: ingested store of %s present, ingestion skipped", self.dataset, data)
            return
        marker.unlink(missing_ok=True)
        logger.info("%s: ingesting and validating %s", self.dataset, data)
        _, seconds = self.kedro("ingestion,validation", {"ingestion.path": data.resolve()}, "ingestion")
        marker.write_text(json.dumps(wanted, indent=2))
        logger.info("%s: ingestion and validation took %.0f s", self.dataset, seconds)

    def split(self, ratio: float) -> dict[str, Any]:
        """The leak-aware split at this label ratio (the split seed is the configured one for every method)."""
        report = self.reporting / "split_report.json"
        report.unlink(missing_ok=True)
        _, seconds = self.kedro("splitting", {"splitting.label_ratio": ratio}, f"splitting_{ratio_key(ratio)}")
        content = json.loads(report.read_text())
        logger.info("%s: split at label ratio %s in %.0f s", self.dataset, ratio_key(ratio), seconds)
        return content


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI; None for any other store."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def ensure_experiment(tracking_uri: str) -> str:
    """Create the experiment before Kedro does, from the store's folder: MLflow resolves a sqlite store's
    default artifact root (./mlruns) against the current directory, which would otherwise be the work
    directory, and the runs' artifacts and registered models would live and die with it. Returns its id."""
    import mlflow

    name = yaml.safe_load((ROOT / "conf/base/mlflow.yml").read_text())["tracking"]["experiment"]["name"]
    database = sqlite_path(tracking_uri)
    folder = database.parent if database is not None else Path.cwd()
    with contextlib.chdir(folder):
        client = mlflow.MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        logger.info("Creating MLflow experiment '%s' in %s (artifacts under %s)", name, tracking_uri, folder / "mlruns")
        return client.create_experiment(name)


def tag_run(tracking_uri: str, run_id: str | None, tags: Mapping[str, Any]) -> bool:
    if not run_id:
        logger.warning("No MLflow run id in the training summary: the run cannot be tagged")
        return False
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value))
    return True


# ------------------------------------------------------------------------------------------------ one run


def write_json(path: Path, content: Any) -> None:
    """Write via a temporary file, so an interrupted write never leaves a truncated cache entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(content, indent=2, default=str) + "\n")
    os.replace(partial, path)


def host_facts(proc: Path = Path("/proc")) -> dict[str, Any]:
    """The machine a run trained on: CPU model, logical CPUs and boot id (runs with one boot id shared a
    machine, so only their times compare without a machine-speed factor)."""
    cpuinfo, boot = proc / "cpuinfo", proc / "sys/kernel/random/boot_id"
    models = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
              if line.startswith("model name")]  # fmt: skip
    return {"cpu": models[0] if models else platform.processor() or None, "logical_cpus": os.cpu_count(),
            "boot_id": boot.read_text().strip() if boot.is_file() else None}  # fmt: skip


def checkpoint_commit(checkpoints: Path, commit: str) -> str | None:
    """The commit that started the training whose checkpoints are in ``checkpoints`` (the trainer's
    ``<output_dir>/<method>``). A fresh run records ``commit`` there and returns it. A run that resumes
    returns the recorded commit (None for checkpoints older than the record) and warns when it is not
    ``commit``: the trainer takes a finished checkpoint as done, so code changed since would not be run."""
    record = checkpoints / "started_at_commit.txt"
    if not (checkpoints / "last.pt").is_file():
        checkpoints.mkdir(parents=True, exist_ok=True)
        record.write_text(commit + "\n")
        return commit
    started = record.read_text().strip() if record.is_file() else None
    if started != commit:
        logger.warning("%s: resuming a checkpoint started at commit %s, not at %s; move the folder away to train "
                       "with this code", checkpoints, started or "unknown", commit)  # fmt: skip
    return started


def run_one(
    work: Workdir, *, ratio: float, method: str, seed: int, budget: str, variant: str, params: Mapping[str, Any],
    tuned: Mapping[str, Any] | None, cache: Path, commit: str, dirty: bool, benchmark_command: str,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train and evaluate one (ratio, method, seed) through Kedro; write and return its cache entry."""
    overrides = dict(overrides or {})
    key = run_key(work.dataset, ratio, method, seed, variant, tuned is not None, overrides)
    run_params = run_parameters(params, overrides, ratio=ratio, method=method, seed=seed, variant=variant, key=key,
                                tuned=tuned is not None)  # fmt: skip
    checkpoints = work.path / run_params["training.output_dir"] / method
    resumed = (checkpoints / "last.pt").is_file()  # the trainer resumes from it
    started_at = checkpoint_commit(checkpoints, commit)
    tuned_file = work.path / "data/05_model_input/tuned_params.yml"
    if tuned is not None:
        tuned_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tuned["path"], tuned_file)
    reports = ("training_summary.json", "metrics.json", "metrics_per_case.csv", "biometry_per_case.csv")
    for name in reports:  # a failed run must not leave the previous run's reports to be read as its own
        (work.reporting / name).unlink(missing_ok=True)
    command, wall = work.kedro("training,evaluation", run_params, key)
    try:
        summary = json.loads((work.reporting / "training_summary.json").read_text())
        metrics = json.loads((work.reporting / "metrics.json").read_text())
    except (OSError, ValueError) as error:
        raise RunFailed(f"{key}: the run wrote no readable reports ({error})", tail(work.logs / f"{key}.log")) from None
    if summary.get("method") != method:
        raise RunFailed(f"{key}: training_summary.json is of method {summary.get('method')!r}")
    run_dir = work.path / "runs" / key
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in reports:
        if (work.reporting / name).is_file():
            shutil.copy2(work.reporting / name, run_dir / name)
    run_id = summary.get("mlflow_run_id")
    tags = {"benchmark": BENCHMARK, "dataset": work.dataset, "label_ratio": ratio_key(ratio), "seed": seed,
            "budget": budget, "benchmark_variant": variant}  # fmt: skip
    try:
        tagged = tag_run(work.tracking_uri, run_id, tags)
    except Exception as error:  # noqa: BLE001 - the trained and evaluated run stays valid without its tags
        logger.error("%s: tagging MLflow run %s failed: %s", key, run_id, error)
        tagged = False
    # the val curve and the first/last loss means stay: the work directory and the MLflow store are per machine
    training = {k: v for k, v in summary.items() if k != "dvc_data"}
    entry = {
        "key": key, "dataset": work.dataset, "label_ratio": float(ratio), "method": method, "seed": seed,
        "budget": budget, "iterations": int(params["training.iterations"]), "variant": variant, "setting": dict(params),
        "tuned": None if tuned is None else {k: tuned.get(k) for k in ("study_name", "trial_number", "best_value", "params")},
        "overrides": overrides,
        "metrics": metrics, "training": training, "resumed": resumed, "git_commit": commit, "checkpoint_commit": started_at, "git_dirty": dirty,
        "mlflow_run_id": run_id, "mlflow_tagged": tagged, "tracking_uri": work.tracking_uri, "wall_seconds": wall, "host": host_facts(),
        "command": shlex.join(["kedro", *command[3:]]), "benchmark_command": benchmark_command,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip
    write_json(cache / f"{key}.json", entry)
    return entry


# -------------------------------------------------------------------------------------------- aggregation


def _mean(values: Sequence[float | None]) -> float | None:
    return mean_and_std(values)[0]


def _over_seeds(values: Sequence[float | None]) -> dict[str, float | None]:
    mean, std = mean_and_std(values)
    return {"mean": mean, "std": std}


def _ratio(value: float | None, baseline: float | None) -> float | None:
    return value / baseline if value is not None and baseline else None


def _timed_whole(entry: Mapping[str, Any]) -> bool:
    """Whether a run's time covers its whole run here: a resumed run has no whole-run time, and one trained on
    another machine (device_runs.py) no comparable one."""
    return not entry.get("resumed") and not entry.get("trained_on")


def _timed_seconds(entry: Mapping[str, Any]) -> float | None:
    """A run's seconds per iteration when its whole run was timed, else None."""
    return (entry.get("training") or {}).get("seconds_per_iteration") if _timed_whole(entry) else None


def _machine(entry: Mapping[str, Any]) -> str | None:
    return (entry.get("host") or {}).get("boot_id")


def machine_baselines(supervised: Mapping[int, Mapping[str, Any]]) -> dict[str, float]:
    """Boot id -> the mean seconds per iteration of the timed ``supervised`` runs on that machine."""
    per_machine: dict[str, list[float]] = defaultdict(list)
    for entry in supervised.values():
        if _machine(entry) and (seconds := _timed_seconds(entry)) is not None:
            per_machine[_machine(entry)].append(seconds)
    return {machine: statistics.fmean(values) for machine, values in per_machine.items()}


def time_ratios(runs: Mapping[int, Mapping[str, Any]], baselines: Mapping[str, float]) -> dict[int, float]:
    """Seed -> its seconds per iteration over supervised's on the same machine. Two machines of one CPU model can
    differ in speed, so a seed without a supervised run on its machine (or without a recorded machine) has none."""
    return {seed: seconds / baselines[_machine(entry)] for seed, entry in sorted(runs.items())
            if _machine(entry) in baselines and (seconds := _timed_seconds(entry)) is not None}  # fmt: skip


def method_label(entry: Mapping[str, Any]) -> str:
    """The row of a run: its method, ``+tuned`` when it trained with tuned params, then its ``--set`` overrides
    (``training.<method>.`` left out), e.g. ``hdc [pix_average=class]``."""
    label = entry["method"] + ("+tuned" if entry.get("tuned") else "")
    prefix = f"training.{entry['method']}."
    overrides = [f"{k.removeprefix(prefix)}={v}" for k, v in sorted((entry.get("overrides") or {}).items())]
    return label + (f" [{', '.join(overrides)}]" if overrides else "")


def aggregate(entries: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], dict[str, dict[str, Any]]]:
    """Cache entries -> {(dataset, ratio key, variant): {method label: test-split means over seeds, ...}}.

    Speed and memory are ratios to ``supervised`` (untuned) of the same dataset, ratio and variant; None when
    that is missing. Speed compares each seed with supervised on its own machine (``time_ratios``) and averages
    those ratios; memory compares the means over all timed runs, as peak RSS does not follow the machine's speed.
    Resumed runs and runs trained on another machine do not count towards time and memory.
    """
    groups: dict[tuple[str, str, str], dict[str, dict[int, Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for entry in entries:
        group = (entry["dataset"], ratio_key(entry["label_ratio"]), entry["variant"])
        groups[group][method_label(entry)][int(entry["seed"])] = entry  # one entry per seed
    table: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for group, methods in sorted(groups.items()):
        rows = {label: _summarise(runs) for label, runs in methods.items()}
        base = rows.get("supervised")
        baselines = machine_baselines(methods.get("supervised", {}))
        for label, row in rows.items():
            ratios = time_ratios(methods[label], baselines)
            row["seconds_per_iter_ratio"] = _mean(list(ratios.values()))
            row["seconds_per_iter_ratio_seeds"] = list(ratios)
            memory = "peak_gpu_mb" if row["peak_gpu_mb"] is not None and base and base["peak_gpu_mb"] else "peak_rss_mb"
            row["peak_memory_ratio"] = _ratio(row[memory], base and base[memory])
            row["peak_memory_measure"] = memory
        order = {m: i for i, m in enumerate(("supervised", *METHODS[1:], "fully_supervised"))}
        table[group] = dict(sorted(rows.items(), key=lambda kv: (order.get(re.split(r"[+ ]", kv[0])[0], 99), kv[0])))
    return table


def _summarise(runs: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    seeds = sorted(runs)
    metrics = [runs[s]["metrics"] for s in seeds]
    training = [runs[s].get("training") or {} for s in seeds]
    row: dict[str, Any] = {}
    for name, key in METRIC_KEYS.items():
        row[name], row[f"{name}_std"] = mean_and_std([m.get(key) for m in metrics])
    row["dice_mean_per_seed"] = [m.get("dice_mean") for m in metrics]
    units = sorted({str(m.get("distance_unit")) for m in metrics})
    row["distance_unit"] = units[0] if len(units) == 1 else units
    row["hc_abs_err"], row["hc_abs_err_std"] = mean_and_std([m.get("hc_abs_err_mean") for m in metrics])
    in_mm = units == ["mm"]
    row["hc_abs_err_mm"], row["hc_abs_err_mm_std"] = (row["hc_abs_err"], row["hc_abs_err_std"]) if in_mm else (None, None)
    # classes in the order evaluation writes them (PS, FH, union), each metric's mean and std over seeds
    classes = dict.fromkeys(match.group(1) for m in metrics for k in m if (match := re.fullmatch(r"dice_(.+)_mean", k)))
    row["per_class"] = {cls: {metric: _over_seeds([m.get(f"{metric}_{cls}_mean") for m in metrics])
                              for metric in CLASS_METRICS} for cls in classes}  # fmt: skip
    measured = [t for s, t in zip(seeds, training) if _timed_whole(runs[s])]
    row["seconds_per_iteration"] = _mean([t.get("seconds_per_iteration") for t in measured])
    row["peak_rss_mb"] = _mean([t.get("peak_rss_mb") for t in measured])
    row["peak_gpu_mb"] = _mean([t.get("peak_gpu_mb") for t in measured])
    row["trained_on"] = {s: runs[s]["trained_on"].get("gpu") or runs[s]["trained_on"]["device"]
                         for s in seeds if runs[s].get("trained_on")}  # fmt: skip
    row["best_val_dice_per_seed"] = [t.get("best_val_dice") for t in training]
    row["n_labelled"] = sorted({t.get("n_labelled") for t in training if t.get("n_labelled") is not None})
    first = runs[seeds[0]]
    row["budget"], row["iterations"], row["seeds"] = first["budget"], first["iterations"], seeds
    setting = first.get("setting") or {}
    row["input_size"], row["model"] = setting.get("training.input_size"), setting.get("training.model.name")
    row["batch"] = [setting.get("training.labelled_batch"), setting.get("training.unlabelled_batch")]
    commits = sorted({runs[s]["git_commit"] for s in seeds})
    row["git_commit"] = commits[0] if len(commits) == 1 else commits
    row["git_dirty"] = any(runs[s].get("git_dirty") for s in seeds)
    row["method"], row["tuned"] = first["method"], first.get("tuned")
    row["overrides"] = first.get("overrides") or {}
    row["mlflow_run_ids"] = [runs[s].get("mlflow_run_id") for s in seeds]
    row["commands"] = sorted({runs[s]["benchmark_command"] for s in seeds if runs[s].get("benchmark_command")})
    return row


def per_method(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The results JSON's view of one table: each method -> the row of its setting (``--set`` overrides, tuned
    params) with the best mean val Dice, as the issue selects on val, never on test. Only the settings that ran
    the method's most seeds compete (``compared_settings``), so that a setting tried on fewer seeds can neither
    win on one seed's luck nor shrink the comparison to its seeds; they are compared on the seeds they all ran
    (``selection_seeds``), or on their own seeds when they share none. The row says which setting it is
    (``settings``), the val means (``val_dice_by_setting``; a setting that did not compete: over its own seeds),
    and keeps the method's other settings under ``other_settings``."""
    settings: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for label, row in rows.items():
        settings[row["method"]][label] = row

    view = {}
    for method, options in settings.items():
        most = max(len(row["seeds"]) for row in options.values())
        competing = [label for label, row in options.items() if len(row["seeds"]) == most]
        shared = sorted(set.intersection(*(set(options[label]["seeds"]) for label in competing)))
        compared = {label: _val_dice_on(row, shared if label in competing else []) for label, row in options.items()}
        chosen = max(competing, key=lambda label: -1.0 if compared[label] is None else compared[label])
        view[method] = {**options[chosen], "settings": chosen, "compared_settings": competing, "selection_seeds": shared,
                        "val_dice_mean": compared[chosen], "val_dice_by_setting": compared,
                        "other_settings": {label: other for label, other in options.items() if label != chosen}}  # fmt: skip
    return view


def _val_dice_on(row: Mapping[str, Any], seeds: Sequence[int]) -> float | None:
    """A row's mean best val Dice over ``seeds``, or over all of its seeds when ``seeds`` is empty."""
    per_seed = dict(zip(row["seeds"], row["best_val_dice_per_seed"]))
    return _mean([per_seed[s] for s in seeds] if seeds else list(per_seed.values()))


def results_name(dataset: str, ratio: str, variant: str) -> str:
    return f"{dataset}_{ratio}" + ("" if variant == PRIMARY_VARIANT else f"_{variant}")


def _cell(row: Mapping[str, Any], key: str, digits: int) -> str:
    value, std = row.get(key), row.get(f"{key}_std")
    if value is None:
        return "–"
    return f"{value:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _plain(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _seed_list(seeds: Sequence[int]) -> str:
    """``seed 4`` or ``seeds 0, 1, 2``."""
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def _time_cell(row: Mapping[str, Any]) -> str:
    """``4.71``, or ``4.71 (seeds 3, 4)`` when only those seeds had a supervised run on their machine."""
    seeds = row["seconds_per_iter_ratio_seeds"]
    return _plain(row["seconds_per_iter_ratio"]) + (f" ({_seed_list(seeds)})" if seeds and seeds != row["seeds"] else "")


def _selection(method: str, row: Mapping[str, Any]) -> str:
    """``hdc → `hdc [pix_dice=1.0]` (seeds 0, 1, 2: 0.8900; `hdc` 0.8700; `hdc [x=1]` 0.9100 on seed 1 only, too few
    seeds to compete)``: a method's setting chosen on val."""
    seeds = row["selection_seeds"]
    compared = _seed_list(seeds) if seeds else "no shared seed, so each on its own"
    values = row["val_dice_by_setting"]
    others = []
    for label, other in row["other_settings"].items():
        own = other["seeds"]
        too_few = "" if label in row["compared_settings"] else (
            f" on {_seed_list(own)} only, too few seeds to compete")
        others.append(f"`{label}` {_plain(values[label], 4)}{too_few}")
    return f"{method} → `{row['settings']}` ({compared}: {_plain(values[row['settings']], 4)}{''.join('; ' + o for o in others)})"


def render_markdown(
    table: Mapping[tuple[str, str, str], Mapping[str, Mapping[str, Any]]], command: str, commit: str,
    results: str = "benchmarks/results",
) -> str:  # fmt: skip
    """The benchmark's markdown section: one table per dataset, ratio and variant, then the anchors."""
    lines = [
        "## Real-data SSL benchmark (PSFHS, HC18)", "",
        f"`{command}` → `{results}/<dataset>_<ratio>.json`, `{results}/ssl_benchmark.md`", "",
        f"Aggregated at commit `{commit}`. Runs are cached (`{results}/runs/`), so a table can hold runs "
        "of earlier invocations: under each table are the commands and commits its runs came from. Every run went through "
        "`kedro run --env <dataset> --pipelines training,evaluation`, except the seeds a table's footer names as trained "
        "on another machine, on the same leak-aware split per label ratio "
        "(split seed 0), with model selection on val (best val Dice checkpoint) and the test split scored once. "
        "Values are test-split means over seeds ± their sample std (n − 1; none with one seed). Distances are in "
        "the unit of the `unit` line. Time/iter and memory are ratios to `supervised` at the same ratio and budget. "
        "Time/iter includes validation; each seed is divided by the `supervised` runs of its own machine (same boot "
        "id, recorded with each run since 2026-11-30), as machines of one CPU model differ in speed, and the cell "
        "averages those ratios, naming its seeds when not all of them have one. Memory is the peak RSS of the whole "
        "`kedro run` process on the CPU (imports included, so it understates the differences) and peak CUDA memory "
        "on a GPU, compared over all runs: it does not follow the machine's speed.", "",
    ]  # fmt: skip
    if not table:
        lines += ["No run is cached yet.", ""]
    for (dataset, ratio, variant), rows in table.items():
        first = next(iter(rows.values()))
        setting = (f"{first['budget'].upper()}: {first['input_size']}², {first['model']}, {first['iterations']} iterations "
                   f"of batch {'+'.join(map(str, first['batch']))}")  # fmt: skip
        upper = "fully supervised upper bound, " if ratio == "1.0" else ""
        lines += [f"### {dataset}, label ratio {ratio} ({upper}budget `{variant}`: {setting})", ""]
        units = {str(r["distance_unit"]) for r in rows.values()}
        lines += [f"unit: {', '.join(sorted(units))}; results: `{results}/{results_name(dataset, ratio, variant)}.json`", ""]
        commands = sorted({c for r in rows.values() for c in r["commands"]})
        commits = sorted({c for r in rows.values() for c in ([r["git_commit"]] if isinstance(r["git_commit"], str) else r["git_commit"])})
        footer = ["Runs from " + "; ".join(f"`{c}`" for c in commands) + f" at commit(s) {', '.join(f'`{c}`' for c in commits)}.", ""]
        elsewhere = {label: row["trained_on"] for label, row in rows.items() if row.get("trained_on")}
        if elsewhere:
            seeds = "; ".join(f"{label} seed(s) {', '.join(map(str, on))} on {', '.join(sorted(set(on.values())))}"
                              for label, on in elsewhere.items())  # fmt: skip
            footer += [f"Trained on another machine by `benchmarks/device_runs.py` ({seeds}): the same parameters in fp32 "
                       "through the library calls of the training and evaluation nodes, not `kedro run`; their time and "
                       "memory are left out of the ratios.", ""]  # fmt: skip
        columns = MAIN_COLUMNS.get(dataset, MAIN_COLUMNS["psfhs"])
        lines += ["| method | seeds | labelled | " + " | ".join(c for c, _ in columns) + " | time/iter ÷ sup | memory ÷ sup |",
                  "|---|---|---|" + "---|" * len(columns) + "---|---|"]  # fmt: skip
        for label, row in rows.items():
            digits = {k: (4 if k.startswith(("dice", "iou")) else 2) for _, k in columns}
            cells = [_cell(row, k, digits[k]) for _, k in columns]
            labelled = "/".join(str(n) for n in row["n_labelled"]) or "–"
            lines.append(f"| {label}{' (dirty tree)' if row['git_dirty'] else ''} | {len(row['seeds'])} | {labelled} | "
                         + " | ".join(cells) + f" | {_time_cell(row)} | {_plain(row['peak_memory_ratio'])} |")  # fmt: skip
        picks = [_selection(method, row) for method, row in per_method(rows).items() if row["other_settings"] or row["settings"] != method]
        if picks:
            lines += ["", f"In `{results_name(dataset, ratio, variant)}.json` each method is its setting with the best mean "
                      f"val Dice among its settings with the most seeds, over the seeds they share: {'; '.join(picks)}."]  # fmt: skip
        lines += ["", "<details><summary>per class and union: Dice, IoU, HD95, ASSD (mean ± std over seeds)</summary>", "",
                  "| method | class | Dice | IoU | HD95 | ASSD |", "|---|---|---|---|---|---|"]  # fmt: skip
        for label, row in rows.items():
            for cls, values in row["per_class"].items():
                cells = [_cell({"v": values[m]["mean"], "v_std": values[m]["std"]}, "v", 4 if m in ("dice", "iou") else 2)
                         for m in CLASS_METRICS]  # fmt: skip
                lines.append(f"| {label} | {cls} | " + " | ".join(cells) + " |")
        lines += ["", "</details>", "", *footer]
    lines += [ANCHORS]
    return "\n".join(lines)


def replace_docs_section(document: str, section: str) -> str:
    """``document`` with the text between the benchmark's markers replaced (markers appended when absent)."""
    block = f"{DOCS_START}\n{section.rstrip()}\n{DOCS_END}"
    start, end = document.find(DOCS_START), document.find(DOCS_END)
    if start != -1 and end > start:
        return document[:start] + block + document[end + len(DOCS_END) :]
    return document.rstrip() + "\n\n" + block + "\n"


@functools.lru_cache(maxsize=256)
def _method_settings_now(conf_source: Path, env: str | None, params_text: str, method: str) -> str:
    from kedro.config import OmegaConfigLoader
    from omegaconf import OmegaConf

    from sonoseg.settings import CONFIG_LOADER_ARGS
    from sonoseg.ssl.base import method_class

    runtime = OmegaConf.to_container(OmegaConf.from_dotlist(params_text.split(","))) if params_text else {}
    loader = OmegaConfigLoader(str(conf_source), env=env, runtime_params=runtime, **CONFIG_LOADER_ARGS)
    configured = (loader["parameters"].get("training") or {}).get(method) or {}
    return json.dumps(method_class(method).resolved_settings(configured))


def method_settings_now(conf_source: Path, env: str | None, params: Mapping[str, Any], method: str) -> dict[str, Any]:
    """The settings ``method`` trains with under ``kedro run --env <env> --params <params>`` with the
    configuration in ``conf_source`` and the code as they are now (as JSON gives them back). Only the
    ``training.<method>.*`` params reach them, so runs that differ in nothing else share one configuration load."""
    own = {key: value for key, value in params.items() if key.startswith(f"training.{method}.")}
    return json.loads(_method_settings_now(conf_source, env, format_params(own), method))


def changed_settings(entry: Mapping[str, Any], conf_source: Path = ROOT / "conf") -> dict[str, tuple[Any, Any]]:
    """``{setting: (then, now)}`` for each method setting a cached run trained with that a run of its key would
    now train with otherwise: the key holds only the ``--set`` overrides, so a changed default or configured
    value goes unseen there. Settings added since keep the earlier behaviour by default and count as unchanged.
    Runs from before ``method_settings`` was recorded, and tuned runs (the tuned file decides), give ``{}``."""
    then = (entry.get("training") or {}).get("method_settings")
    if then is None or entry.get("tuned"):
        return {}
    params = {**entry["setting"], **(entry.get("overrides") or {})}
    now = method_settings_now(conf_source, entry["dataset"], params, entry["method"])
    return {name: (value, now[name]) for name, value in sorted(then.items()) if name in now and now[name] != value}


def describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{name} {then!r} then, {now!r} now" for name, (then, now) in changes.items())


def load_entries(cache: Path) -> list[dict[str, Any]]:
    entries = []
    for path in sorted(cache.glob("*.json")):
        try:
            entries.append(json.loads(path.read_text()))
        except ValueError as error:
            logger.warning("Skipping unreadable cache entry %s: %s", path, error)
    return entries


def write_outputs(results: Path, docs: Path | None, command: str, commit: str) -> None:
    """Aggregate every cache entry into the per-(dataset, ratio) JSON, the markdown and the docs section."""
    entries = load_entries(results / "runs")
    for entry in entries:
        if changes := changed_settings(entry):
            logger.warning("%s: trained with %s settings the configuration no longer gives (%s); it stays in the "
                           "tables until its JSON moves to benchmarks/results/superseded/", entry["key"], entry["method"],
                           describe_changes(changes))  # fmt: skip
    table = aggregate(entries)
    results.mkdir(parents=True, exist_ok=True)
    for (dataset, ratio, variant), rows in table.items():
        write_json(results / f"{results_name(dataset, ratio, variant)}.json", per_method(rows))
    shown = results.resolve()
    markdown = render_markdown(table, command, commit, str(shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown))
    (results / "ssl_benchmark.md").write_text(markdown)
    logger.info("Wrote %d table(s) to %s", len(table), results)
    if docs is not None:
        docs.write_text(replace_docs_section(docs.read_text() if docs.is_file() else "", markdown))
        logger.info("Updated the ssl-benchmark section of %s", docs)


# -------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    def items(kind):
        return lambda text: [kind(part) for part in text.split(",") if part.strip()]

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=items(str), default=["psfhs"], help="psfhs and/or hc18, comma-separated")
    parser.add_argument("--ratios", type=items(float), default=list(RATIOS), help="label ratios; 1.0 is the upper bound")
    parser.add_argument("--methods", type=items(str), default=list(METHODS), help=f"default: {','.join(METHODS)}")
    parser.add_argument("--seeds", type=items(int), default=[0, 1, 2], help="training seeds (the split is the same)")
    parser.add_argument("--data", type=Path, help="the dataset's folder (one dataset only); default ../shared/data/<dataset>")
    parser.add_argument("--budget", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--iterations", type=int, help="default: the budget's (cpu 4000, gpu conf/gpu)")
    parser.add_argument("--input-size", type=int)
    parser.add_argument("--batch", type=int, help="labelled and unlabelled batch")
    parser.add_argument("--model", help="network of the methods that train the configured one (default: the budget's; "
                                        "infodiv's CNN is training.infodiv.cnn)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "work", help="holds <dataset>/, a Kedro project root")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results", help="runs/ cache, JSON, markdown")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md", help="the file whose marked section is replaced")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'mlflow.db'}")
    parser.add_argument("--tuned", type=Path, action="append", default=[], help="a tuned_params.yml; its method trains with it")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                        help="a training/evaluation parameter for these runs, e.g. training.hdc.pix_average=class; "
                             "the runs get their own cache entries and table rows")  # fmt: skip
    parser.add_argument("--aggregate-only", action="store_true")
    parser.add_argument("--register-best", nargs="?", const="", metavar="SETTING",
                        help="register the hdc run of psfhs 0.05 with the best val Dice through the registry pipeline, among "
                             "the runs of SETTING, a table row such as 'hdc [pix_dice=1.0]' (or of this command's --set and "
                             "--tuned for hdc); default: the setting the results JSON selects on val")  # fmt: skip
    args = parser.parse_args(argv)
    known = set(METHODS) | {"fully_supervised"}
    for name, values, allowed in (("dataset", args.dataset, set(DATASETS)), ("methods", args.methods, known)):
        if unknown := sorted(set(values) - allowed):
            parser.error(f"--{name}: unknown {unknown}; choose from {sorted(allowed)}")
    if args.data and len(args.dataset) != 1:
        parser.error("--data needs exactly one --dataset")
    if any(not 0 < r <= 1 for r in args.ratios):
        parser.error("--ratios must lie in (0, 1]")
    args.overrides = parse_overrides(parser, args.overrides)
    args.tracking_uri = absolute_tracking_uri(args.tracking_uri)
    return args


# parameters the benchmark sets itself, per budget or per run
RESERVED = {*CPU_BUDGET, "training.method", "training.seed", "training.output_dir", "training.progress",
            "training.use_tuned", "evaluation.predictions_dir"}  # fmt: skip


def parse_overrides(parser: argparse.ArgumentParser, items: Sequence[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.startswith(("training.", "evaluation.")) or not value.strip():
            parser.error(f"--set {item!r}: expected training.<key>=<value> or evaluation.<key>=<value>")
        if key in RESERVED:
            parser.error(f"--set {key}: the benchmark sets it (use --iterations, --input-size, --batch, --model or --budget)")
        overrides[key] = value.strip()
    return overrides


def plan_runs(args: argparse.Namespace, dataset: str, variant: str, tuned: Mapping[str, Any], cache: Path) -> list[tuple[float, str, int]]:
    """The (ratio, method, seed) still to run; cached ones and SSL methods at ratio 1.0 are left out. A cached run
    whose method settings differ from those it would train with now stops the benchmark (see ``changed_settings``)."""
    plan, stale = [], []
    for ratio in args.ratios:
        for method in args.methods:
            if ratio >= 1.0 and method not in SUPERVISED_ONLY:
                logger.info("%s at label ratio 1.0: skipped, nothing is unlabelled", method)
                continue
            for seed in args.seeds:
                key = run_key(dataset, ratio, method, seed, variant, method in tuned, overrides_for(method, args.overrides))
                path = cache / f"{key}.json"
                if not path.is_file():
                    plan.append((ratio, method, seed))
                elif changes := changed_settings(json.loads(path.read_text())):
                    stale.append(f"{path}: {describe_changes(changes)}")
                else:
                    logger.info("%s: cached", key)
    if stale:
        raise SystemExit(
            "These cached runs trained with method settings that the configuration or code no longer gives, and a "
            "cache key holds only the --set overrides:\n  " + "\n  ".join(stale) + "\nTo run them again, move their "
            "JSON to benchmarks/results/superseded/<reason>/; to keep them, give the old values back (--set or conf/)."
        )  # fmt: skip
    return plan


def registry_inputs(work_path: Path, entry: Mapping[str, Any]) -> list[Path]:
    """The run's reports the registry pipeline reads, once its checkpoint and they are all found in ``work_path``;
    otherwise RunFailed names every missing file, before anything is copied (a run cached on another machine has none)."""
    reports = [work_path / "runs" / entry["key"] / name for name in ("training_summary.json", "metrics.json")]
    missing = [path for path in (*reports, work_path / entry["training"]["best_checkpoint"]) if not path.is_file()]
    if missing:
        raise RunFailed(f"--register-best chose {entry['key']} (best val Dice {entry['training']['best_val_dice']:.4f}), "
                        f"but {', '.join(map(str, missing))} {'is' if len(missing) == 1 else 'are'} not here; "
                        f"re-run it into a scratch cache (--results-dir) on this machine, then register again")  # fmt: skip
    return reports


def rerun_drift(reports: Sequence[Path], entry: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """Val and test Dice where the work directory's reports (``registry_inputs``' order) differ from the cached
    entry's: a re-train on another CPU model need not reproduce the cached run bit for bit."""
    summary, metrics = (json.loads(path.read_text()) for path in reports)
    pairs = {"best_val_dice": (entry["training"]["best_val_dice"], summary.get("best_val_dice")),
             "dice_mean": (entry["metrics"]["dice_mean"], metrics.get("dice_mean"))}  # fmt: skip
    return {name: {"cached": cached, "registered": here} for name, (cached, here) in pairs.items() if cached != here}


def named_setting(register_best: str, tuned: bool, overrides: Mapping[str, str]) -> str | None:
    """The setting a ``--register-best`` command names, by its SETTING or by its ``--set``/``--tuned`` for the
    registered method; None leaves the choice to val. RunFailed when the two name different settings."""
    by_options = method_label({"method": REGISTER["method"], "tuned": tuned, "overrides": overrides}) if tuned or overrides else None
    if register_best and by_options and register_best != by_options:
        raise RunFailed(f"--register-best names {register_best!r} but --set/--tuned name {by_options!r}; name one of them")
    return register_best or by_options


def registry_runs(entries: Sequence[Mapping[str, Any]], variant: str, setting: str | None) -> tuple[str, list[Mapping[str, Any]]]:
    """The setting to register from (``setting``, a table row label, or else the one the results JSON selects on val)
    and its cached runs of the registered dataset, ratio and method; RunFailed lists the cached settings when it has none."""
    group = (REGISTER["dataset"], ratio_key(REGISTER["label_ratio"]), variant)
    runs = [e for e in entries if e["method"] == REGISTER["method"] and (e["dataset"], ratio_key(e["label_ratio"]), e["variant"]) == group]
    if setting is None and runs:
        setting = per_method(aggregate(runs)[group])[REGISTER["method"]]["settings"]
    chosen = [e for e in runs if method_label(e) == setting]
    if not chosen:
        cached = sorted({method_label(e) for e in runs})
        raise RunFailed(f"--register-best: no cached run of {setting or REGISTER['method']!r} at {' '.join(group)}; "
                        f"cached settings: {cached or 'none'}")  # fmt: skip
    return setting, chosen


def register_best(args: argparse.Namespace, variant: str, tuned: Mapping[str, Any], cache: Path) -> None:
    """Copy the chosen run's reports back into the psfhs work directory and run the registry pipeline there."""
    import mlflow

    named = named_setting(args.register_best, REGISTER["method"] in tuned, overrides_for(REGISTER["method"], args.overrides))
    setting, candidates = registry_runs(load_entries(cache), variant, named)
    logger.info("--register-best: setting %r, %s", setting, "as named" if named else "selected on val by the results JSON")
    best = max(candidates, key=lambda e: e["training"]["best_val_dice"])  # chosen on val, never on test
    work = Workdir(args.workdir / REGISTER["dataset"], REGISTER["dataset"], args.tracking_uri)
    with work.locked():
        work.refresh()
        reports = registry_inputs(work.path, best)
        if drift := rerun_drift(reports, best):
            logger.warning("%s: the run in %s differs from its cache entry (%s, trained on %s); registering the run here",
                           best["key"], work.path, drift, (best.get("host") or {}).get("cpu", "an unrecorded CPU"))  # fmt: skip
        for report in reports:
            shutil.copy2(report, work.reporting / report.name)
        logger.info("Registering %s (cached val Dice %.4f, test Dice %.4f)", best["key"], best["training"]["best_val_dice"],
                    best["metrics"]["dice_mean"])  # fmt: skip
        work.kedro("registry", {"splitting.label_ratio": REGISTER["label_ratio"]}, f"registry_{best['key']}")
        promotion = json.loads((work.reporting / "promotion.json").read_text())
    version = mlflow.MlflowClient(args.tracking_uri).get_model_version(promotion["model_name"], str(promotion["challenger_version"]))
    tags = {k: version.tags.get(k) for k in ("dataset", "method", "label_ratio")}
    logger.info("Registered %s v%s: tags %s; gate: %s (%s)", promotion["model_name"], promotion["challenger_version"], tags,
                promotion["decision"], promotion["reason"])  # fmt: skip
    write_json(args.results_dir / "ssl_benchmark_registered.json",
               {"run": best["key"], "setting": setting, "setting_chosen": "named" if named else "on val", "tags": tags,
                "differs_from_cached": drift, "promotion": promotion})  # fmt: skip


def run_dataset(
    args: argparse.Namespace, work: Workdir, data: Path, plan: Sequence[tuple[float, str, int]], *, params: Mapping[str, Any],
    variant: str, tuned: Mapping[str, Any], cache: Path, commit: str, dirty: bool, command: str,
) -> list[str]:  # fmt: skip
    """Ingest once, split per ratio, then train and evaluate each planned run; return what failed."""
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        work.ingest(data)
    except RunFailed as error:
        logger.error("%s: %s\n%s", work.dataset, error, error.tail)
        return [f"{work.dataset} ingestion"]
    failures = []
    with logging_redirect_tqdm(), tqdm(total=len(plan), desc=f"{work.dataset} runs", unit="run") as progress:
        for ratio in sorted({r for r, _, _ in plan}):
            runs = [(method, seed) for r, method, seed in plan if r == ratio]
            try:
                split = work.split(ratio)
            except RunFailed as error:
                logger.error("%s ratio %s: %s\n%s", work.dataset, ratio_key(ratio), error, error.tail)
                failures.append(f"{work.dataset} split {ratio_key(ratio)}")
                progress.update(len(runs))
                continue
            logger.info("%s ratio %s: split counts %s", work.dataset, ratio_key(ratio), split.get("counts"))
            for method, seed in runs:
                overrides = overrides_for(method, args.overrides)
                key = run_key(work.dataset, ratio, method, seed, variant, method in tuned, overrides)
                logger.info("%s: training and evaluating", key)
                try:
                    entry = run_one(work, ratio=ratio, method=method, seed=seed, budget=args.budget, variant=variant,
                                    params=params, tuned=tuned.get(method), cache=cache, commit=commit, dirty=dirty,
                                    benchmark_command=command, overrides=overrides)  # fmt: skip
                    logger.info("%s: test Dice %.4f, best val Dice %.4f, %.3f s/iteration, %.0f s wall", key,
                                entry["metrics"]["dice_mean"], entry["training"]["best_val_dice"],
                                entry["training"].get("seconds_per_iteration") or float("nan"), entry["wall_seconds"])  # fmt: skip
                except RunFailed as error:
                    logger.error("%s failed: %s\n%s", key, error, error.tail)
                    failures.append(key)
                progress.update(1)
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    commit, dirty = git_state()
    command = shlex.join([".venv/bin/python", "benchmarks/ssl_benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    cache = args.results_dir / "runs"
    params = budget_params(args.budget, args.iterations, args.input_size, args.batch, args.model)
    variant = variant_name(args.budget, params)
    tuned = load_tuned(args.tuned)
    failures: list[str] = []
    if not args.aggregate_only:
        for dataset in args.dataset:
            data = args.data or ROOT.parent / "shared" / "data" / dataset
            if not data.is_dir():
                logger.warning("%s: no data at %s, skipped (pass --data)", dataset, data)
                continue
            plan = plan_runs(args, dataset, variant, tuned, cache)
            if not plan:
                logger.info("%s: every requested run is cached", dataset)
                continue
            work = Workdir(args.workdir / dataset, dataset, args.tracking_uri)
            with work.locked():
                work.refresh()
                ensure_experiment(args.tracking_uri)
                failures += run_dataset(args, work, data, plan, params=params, variant=variant, tuned=tuned, cache=cache,
                                        commit=commit, dirty=dirty, command=command)  # fmt: skip
    if args.register_best is not None:  # also with --aggregate-only: it needs only the cache and the work directory
        try:
            register_best(args, variant, tuned, cache)
        except RunFailed as error:
            logger.error("%s\n%s", error, error.tail)
            failures.append("register-best")
    write_outputs(args.results_dir, None if args.no_docs else args.docs, command, commit)
    if failures:
        logger.error("%d failed: %s", len(failures), ", ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
