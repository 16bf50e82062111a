"""The ``tuning`` parameters (``conf/base/parameters_tuning.yml``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sonoseg.tuning.space import SearchSpace
from sonoseg.tuning.study import WorkerSettings


DEFAULT_N_TRIALS = 20


@dataclass(frozen=True)
class TuningConfig:
    """Args:
    method: the method to tune (its search space is ``search_spaces[method]``).
    trial_iterations: training iterations of one trial (its budget).
    val_every: a trial validates (and reports to the pruner, and checkpoints) every N iterations.
    storage: sqlite URL, journal file (``.log``/``.journal``) or PostgreSQL URL (see ``tuning.storage``).
    study_name: the study's name in the storage (null: ``sonoseg-<method>``).
    pruner: median | hyperband | none, or ``{name: ..., median: {...}, hyperband: {...}}``.
    worker: n_trials, seed, startup_trials, heartbeat_interval, grace_period, max_retry, max_failed_trials
        and progress, given flat in the parameters: see :class:`~sonoseg.tuning.study.WorkerSettings`.
    trials_dir: trials train in ``<trials_dir>/<study_name>/trial_NNNN``.
    keep_checkpoints: keep finished trials' checkpoints (default: removed).
    torch_threads: CPU threads of this worker's torch (null: torch's default, all cores). With N
        workers on one machine give each cores / N, or they oversubscribe the cores and crawl.
    search_spaces: one search space per method (see :mod:`sonoseg.tuning.space`).
    """

    method: str = "hdc"
    worker: WorkerSettings = field(default_factory=lambda: WorkerSettings(n_trials=DEFAULT_N_TRIALS))
    trial_iterations: int = 150
    val_every: int = 25
    storage: str = "sqlite:///data/06_models/tuning/optuna.db"
    study_name: str | None = None
    pruner: Any = "median"
    trials_dir: str = "data/06_models/tuning/trials"
    keep_checkpoints: bool = False
    torch_threads: int | None = None
    search_spaces: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"tuning.torch_threads must be null or >= 1, got {self.torch_threads}")
        if self.trial_iterations < 1 or self.val_every < 1:
            raise ValueError("tuning.trial_iterations and tuning.val_every must be >= 1")
        if self.method not in self.search_spaces:
            raise ValueError(
                f"tuning.search_spaces has no entry for tuning.method '{self.method}': "
                f"add one (spaces exist for {', '.join(sorted(self.search_spaces)) or 'no method'})"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TuningConfig:
        worker_keys = {f.name for f in fields(WorkerSettings)}
        known = {f.name for f in fields(cls)} - {"worker"} | worker_keys
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"tuning has unknown settings {sorted(unknown)}; known: {sorted(known)}")
        worker = WorkerSettings(**{"n_trials": DEFAULT_N_TRIALS, **{k: v for k, v in params.items() if k in worker_keys}})
        return cls(worker=worker, **{k: v for k, v in params.items() if k not in worker_keys})

    @property
    def name(self) -> str:
        """The study name."""
        return self.study_name or f"sonoseg-{self.method}"

    @property
    def study_dir(self) -> Path:
        return Path(self.trials_dir) / self.name

    def search_space(self) -> SearchSpace:
        return SearchSpace.from_config(self.search_spaces[self.method], where=f"tuning.search_spaces.{self.method}")
