"""Experiment sweeps on DVC: one ``dvc exp run`` per combination of parameter values and seed, then
mean ± std over the seeds, because one seed is an anecdote.

Each experiment runs the whole DVC flow in the workspace, so it re-runs only the stages downstream of the
parameters it changes, records itself for ``dvc exp show``, and logs to the project's MLflow store as a
plain ``dvc repro`` does. Afterwards the workspace is put back as it was (params files, ``dvc.lock`` and,
through ``dvc checkout``, the outputs). Library code: no Kedro.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

PARAMS_GLOB = "conf/base/parameters_*.yml"
METRICS_FILE = "data/08_reporting/metrics.json"
SEED_KEY = "training.seed"


class SweepError(RuntimeError):
    """A sweep cannot start or an experiment failed; the message says which and why."""


@dataclass(frozen=True)
class SweepRun:
    """One finished experiment: the values it set, its seed, its DVC name and its test metrics."""

    values: dict[str, str]
    seed: int
    name: str
    metrics: dict[str, Any] = field(repr=False)


def parse_grid(assignments: Sequence[str]) -> dict[str, list[str]]:
    """``["splitting.label_ratio=0.05,0.1", "training.method=hdc"]`` → ``{key: [values]}``, in order."""
    grid: dict[str, list[str]] = {}
    for item in assignments:
        key, sep, values = item.partition("=")
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not choices:
            raise SweepError(f"cannot read '{item}': write KEY=VALUE[,VALUE...], e.g. training.method=supervised,hdc")
        if key.strip() in grid:
            raise SweepError(f"'{key.strip()}' is given twice; list all its values in one KEY=V1,V2")
        grid[key.strip()] = choices
    return grid


def params_file(key: str, project: Path) -> Path:
    """The Kedro parameters file (``conf/base/parameters_*.yml``) that defines ``key`` (dotted)."""
    head, *rest = key.split(".")
    for path in sorted(project.glob(PARAMS_GLOB)):
        node: Any = yaml.safe_load(path.read_text()) or {}
        for part in (head, *rest):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            return path
    raise SweepError(f"no {PARAMS_GLOB} file under {project} defines '{key}'")


def experiment_name(prefix: str, values: Mapping[str, str], seed: int) -> str:
    """A git-ref-safe name: ``<prefix>-<last key part>_<value>...-seed<k>``."""
    parts = [f"{key.rsplit('.', 1)[-1]}_{value}" for key, value in values.items()]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join([prefix, *parts, f"seed{seed}"])).replace("..", ".")


def _dvc(args: Sequence[str], project: Path, dvc: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([dvc, *args], cwd=project, capture_output=True, text=True)
    if result.returncode != 0:
        raise SweepError(f"`dvc {' '.join(args)}` failed in {project} (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return result


def run_sweep(
    grid: Mapping[str, Sequence[str]],
    repeats: int = 1,
    project: Path | str = ".",
    seed_key: str = SEED_KEY,
    prefix: str | None = None,
    dvc: str = "dvc",
    progress: bool = True,
) -> list[SweepRun]:
    """Run every combination of ``grid`` with seeds ``0 .. repeats-1`` as DVC experiments, one at a time.

    Args:
        grid: dotted Kedro parameter → the values to try (strings, read as YAML by DVC).
        repeats: seeds per combination; the seed goes to ``seed_key``.
        project: the DVC and Kedro project root.
        prefix: the experiments' name prefix (default ``sweep-<UTC time>``).
        dvc: the dvc executable (with kedro on its PATH).
    """
    project = Path(project).resolve()
    if repeats < 1:
        raise SweepError(f"repeats must be >= 1, got {repeats}")
    if seed_key in grid:
        raise SweepError(f"'{seed_key}' is set by repeats; remove it from the grid")
    files = {key: params_file(key, project) for key in [*grid, seed_key]}
    prefix = prefix or time.strftime("sweep-%Y%m%d-%H%M%S", time.gmtime())
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    saved = {path: path.read_text() for path in {*files.values(), project / "dvc.lock"} if path.is_file()}
    runs: list[SweepRun] = []
    try:
        with tqdm(total=len(combos) * repeats, desc="sweep", unit="exp", disable=not progress) as bar:
            for values, seed in itertools.product(combos, range(repeats)):
                name = experiment_name(prefix, values, seed)
                sets = [f"{files[k].relative_to(project)}:{k}={v}" for k, v in {**values, seed_key: str(seed)}.items()]
                logger.info("Experiment %s: %s", name, ", ".join(sets))
                _dvc(["exp", "run", "--name", name, *itertools.chain.from_iterable(("-S", s) for s in sets)], project, dvc)
                metrics = json.loads((project / METRICS_FILE).read_text())
                runs.append(SweepRun(dict(values), seed, name, metrics))
                bar.set_postfix_str(f"{name}: dice_mean {metrics.get('dice_mean', float('nan')):.3f}")
                bar.update()
    finally:
        for path, text in saved.items():
            path.write_text(text)
        if saved:
            _dvc(["checkout", "--quiet"], project, dvc)  # the outputs of the restored dvc.lock, from the cache
    return runs


def mean_and_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1) of the finite values; None where there are too few."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return (statistics.fmean(finite) if finite else None), (statistics.stdev(finite) if len(finite) > 1 else None)


def summarise(runs: Sequence[SweepRun]) -> list[dict[str, Any]]:
    """Per combination: its values, seeds, and for every numeric ``*_mean`` test metric the mean over seeds
    (``<metric>``), the sample standard deviation (``<metric>_std_over_seeds``, null for one seed) and
    the per-seed values (``<metric>_per_seed``). Non-finite values (an unmeasurable HD95) are left out."""
    groups: dict[tuple[tuple[str, str], ...], list[SweepRun]] = {}
    for run in runs:
        groups.setdefault(tuple(run.values.items()), []).append(run)
    rows = []
    for values, members in groups.items():
        row: dict[str, Any] = {**dict(values), "seeds": [m.seed for m in members], "experiments": [m.name for m in members]}
        keys = list(dict.fromkeys(k for m in members for k, v in m.metrics.items()
                                  if k.endswith("_mean") and isinstance(v, (int, float))))  # fmt: skip
        for key in keys:
            per_seed = [m.metrics.get(key) for m in members]
            row[key], row[f"{key}_std_over_seeds"] = mean_and_std(per_seed)
            row[f"{key}_per_seed"] = per_seed
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]], grid_keys: Sequence[str], metric_keys: Sequence[str]) -> str:
    """A markdown table: the grid's values, the number of seeds, and mean ± std per metric."""

    def cell(row: Mapping[str, Any], key: str) -> str:
        mean, std = row.get(key), row.get(f"{key}_std_over_seeds")
        if mean is None:
            return "n/a"
        return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"

    header = [*grid_keys, "seeds", *metric_keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join([*(str(row[k]) for k in grid_keys), str(len(row["seeds"])),
                                         *(cell(row, k) for k in metric_keys)]) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"
