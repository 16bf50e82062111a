"""Running one study from any number of worker processes, each calling :func:`run_worker`.

The budget: ``n_trials`` counts COMPLETE and PRUNED trials, whichever worker ran them. Failed trials
(a diverged loss, out of memory, an interrupted or killed worker) are recorded with their reason and do
not use the budget, so N workers together finish exactly ``n_trials`` trials; a worker gives up when
the study holds ``max_failed_trials`` failures (something is wrong with every trial, not one).

Workers never hand out more than the budget: a worker asks for a new trial only while
finished + running + waiting trials are fewer than ``n_trials``; if two workers race past that check,
the trial with the higher number sees that the budget was taken (it counts the live trials numbered
below it) and closes itself as FAIL with ``surplus`` set, before it trains.

Killed workers: every running trial stamps a ``heartbeat`` user attribute every
``heartbeat_interval`` seconds from a background thread. Any worker that finds a RUNNING trial whose
last stamp (or start) is older than ``grace_period`` fails it and enqueues a retry with the same
params (``RetryHeartbeatStaleTrialCallback``); the retry resumes from the dead trial's checkpoint
folder. One mechanism for RDB and journal storages alike (Optuna's own heartbeat is RDB-only).
Ctrl-C fails the running trial as ``interrupted``, enqueues its retry the same way and re-raises, so
the next ``kedro run --pipelines tuning`` resumes it. While the rest of the budget is running
elsewhere a worker waits (polling every ``heartbeat_interval``) instead of leaving, so a study whose
last trials die with their workers still finishes as long as one worker lives.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from sonoseg.tuning.storage import display_storage, make_storage

__all__ = [
    "HEARTBEAT",
    "StudyCounts",
    "WorkerSettings",
    "fail_stale_trials",
    "make_pruner",
    "open_study",
    "run_worker",
    "study_counts",
]

logger = logging.getLogger(__name__)

HEARTBEAT = "heartbeat"  # user attribute: the time (s since the epoch) a running trial last showed life
FAIL_REASON = "fail_reason"
SURPLUS = "surplus"
STUDY_UID = "study_uid"  # study user attribute
WORKER = "worker"  # user attribute: host:pid of the worker that ran the trial
PRUNERS = ("median", "hyperband", "none")


@dataclass(frozen=True)
class WorkerSettings:
    """How one worker runs its share of the study.

    Args:
        n_trials: the study's budget of COMPLETE + PRUNED trials, over all workers.
        seed: the sampler of trial k is seeded with ``seed + k`` (null: random), so workers never share
            a random stream and one worker's study is reproducible.
        startup_trials: TPE's random trials before it models the results.
        heartbeat_interval: seconds between a running trial's heartbeats (and between polls while waiting).
        grace_period: seconds without a heartbeat after which a RUNNING trial counts as dead.
        max_retry: how many times a dead or interrupted trial is retried.
        max_failed_trials: stop when the study holds this many failures (null: ``n_trials``).
        progress: show a progress bar over the study's trials.
    """

    n_trials: int
    seed: int | None = 0
    startup_trials: int = 5
    heartbeat_interval: float = 10.0
    grace_period: float = 60.0
    max_retry: int = 2
    max_failed_trials: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise ValueError(f"tuning.n_trials must be >= 1, got {self.n_trials}")
        if not 0 < self.heartbeat_interval < self.grace_period:
            raise ValueError(
                f"tuning.heartbeat_interval ({self.heartbeat_interval}) must be > 0 and below "
                f"tuning.grace_period ({self.grace_period}), or live trials would be failed as dead"
            )


@dataclass(frozen=True)
class StudyCounts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    surplus: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def finished(self) -> int:
        """Trials that used the budget."""
        return self.complete + self.pruned


def make_pruner(spec: str | Mapping[str, Any], max_resource: int) -> optuna.pruners.BasePruner:
    """median | hyperband | none, as a name or ``{name: ..., median: {...}, hyperband: {...}}``.

    The named block's options go to ``MedianPruner`` or ``HyperbandPruner``; steps are training
    iterations. Hyperband's ``max_resource`` defaults to the trial budget (``max_resource``).
    """
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, Mapping) and "name" in spec:
        name, options = spec["name"], dict(spec.get(spec["name"]) or {})
        unknown = set(spec) - {"name", *PRUNERS}
        if unknown:
            raise ValueError(f"tuning.pruner has unknown keys {sorted(unknown)}: expected name and {', '.join(PRUNERS)}")
    else:
        raise ValueError(f"tuning.pruner must be a name ({', '.join(PRUNERS)}) or a mapping with 'name', got {spec!r}")
    if name not in PRUNERS:
        raise ValueError(f"tuning.pruner.name is '{name}': expected one of {', '.join(PRUNERS)}")
    if name == "none":
        return optuna.pruners.NopPruner()
    kind = optuna.pruners.MedianPruner if name == "median" else optuna.pruners.HyperbandPruner
    if name == "hyperband":
        options.setdefault("max_resource", max_resource)
    try:
        return kind(**options)
    except (TypeError, ValueError) as error:
        raise ValueError(f"tuning.pruner.{name} options {options} are invalid: {error}") from None


def make_sampler(seed: int | None, trial_number: int, startup_trials: int) -> optuna.samplers.TPESampler:
    # constant_liar: a worker treats the other workers' running trials as bad, so it samples elsewhere
    return optuna.samplers.TPESampler(
        seed=None if seed is None else seed + trial_number, n_startup_trials=startup_trials, constant_liar=True
    )


def open_study(storage: str, study_name: str, pruner: optuna.pruners.BasePruner, method: str) -> optuna.Study:
    """Create the study or load it (every worker calls this); a study of another method is refused."""
    study = optuna.create_study(
        storage=make_storage(storage), study_name=study_name, direction="maximize", pruner=pruner, load_if_exists=True
    )
    tuned = study.user_attrs.get("method")
    if tuned is None:
        study.set_user_attr("method", method)
        # tells this study from an older one of the same name (e.g. in a deleted storage); when two
        # workers create the study at once the last write wins, and readers see it from then on
        study.set_user_attr(STUDY_UID, uuid.uuid4().hex)
    elif tuned != method:
        raise ValueError(
            f"study '{study_name}' in {display_storage(storage)} tunes '{tuned}', not '{method}': "
            "choose another tuning.study_name"
        )
    return study


def study_counts(study: optuna.Study) -> StudyCounts:
    counts: Counter[str] = Counter()
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.FAIL:
            counts["surplus" if trial.user_attrs.get(SURPLUS) else "failed"] += 1
        else:
            counts[trial.state.name.lower()] += 1
    return StudyCounts(**{k: counts[k] for k in ("complete", "pruned", "failed", "surplus", "running", "waiting")})


def _retry(study: optuna.Study, number: int, max_retry: int) -> None:
    """Queue a copy of failed trial ``number`` (params, user attributes, reports) unless it was retried enough."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = RetryHeartbeatStaleTrialCallback(max_retry=max_retry, inherit_intermediate_values=True)
    callback(study, study.trials[number])


def retried_trial_number(trial: FrozenTrial) -> int | None:
    """The number of the trial that ``trial`` retries, if any."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def _fail(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """Fail a RUNNING trial with ``reason``; False when another worker finished it first."""
    try:
        # Trials of other (dead) workers have no Trial object here; the storage is the only way in.
        study._storage.set_trial_user_attr(trial._trial_id, FAIL_REASON, reason)
        study.tell(trial.number, state=TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
        return False
    return True


def fail_stale_trials(study: optuna.Study, grace_period: float, max_retry: int) -> list[int]:
    """Fail RUNNING trials without a heartbeat for ``grace_period`` s and enqueue their retries."""
    now = time.time()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
        silent = now - max(float(trial.user_attrs.get(HEARTBEAT, 0.0)), started)
        if silent > grace_period and _fail(study, trial, f"no heartbeat for {silent:.0f} s: its worker died"):
            logger.warning("Trial %d had no heartbeat for %.0f s; failed it and queued a retry", trial.number, silent)
            _retry(study, trial.number, max_retry)
            failed.append(trial.number)
    return failed


class _Heartbeat:
    """Stamps ``HEARTBEAT`` on a trial every ``interval`` seconds from a daemon thread."""

    def __init__(self, trial: optuna.Trial, interval: float) -> None:
        self.trial, self.interval = trial, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial.number}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.trial.set_user_attr(HEARTBEAT, time.time())
            except Exception:  # noqa: BLE001 - a missed beat must not kill the trial; the next one retries
                logger.warning("Trial %d: heartbeat failed", self.trial.number, exc_info=True)

    def __enter__(self) -> _Heartbeat:
        self.trial.set_user_attr(HEARTBEAT, time.time())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _live_below(study: optuna.Study, number: int) -> int:
    """Trials numbered below ``number`` that hold or may still take a share of the budget."""
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return sum(1 for t in study.get_trials(deepcopy=False, states=live) if t.number < number)


def _run_one(
    study: optuna.Study,
    trial: optuna.Trial,
    objective: Callable[[optuna.Trial], float],
    catch: tuple[type[BaseException], ...],
    settings: WorkerSettings,
) -> TrialState:
    """Run the objective under a heartbeat and record the outcome."""
    try:
        with _Heartbeat(trial, settings.heartbeat_interval):
            value = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    except KeyboardInterrupt:
        trial.set_user_attr(FAIL_REASON, "interrupted (Ctrl-C); a retry is queued")
        study.tell(trial, state=TrialState.FAIL)
        _retry(study, trial.number, settings.max_retry)
        raise
    except catch as error:
        logger.warning("Trial %d failed: %s: %s", trial.number, type(error).__name__, error)
        trial.set_user_attr(FAIL_REASON, f"{type(error).__name__}: {error}")
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    except BaseException as error:  # a bug, not a bad trial: record it, then stop this worker
        trial.set_user_attr(FAIL_REASON, f"{type(error).__name__}: {error}")
        study.tell(trial, state=TrialState.FAIL)
        raise
    if not math.isfinite(value):
        trial.set_user_attr(FAIL_REASON, f"the objective is {value}")
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    study.tell(trial, value)
    return TrialState.COMPLETE


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    settings: WorkerSettings,
    catch: tuple[type[BaseException], ...] = (),
    description: str = "tune",
) -> int:
    """Run trials of ``study`` until it holds ``n_trials`` finished ones; returns how many this worker ran.

    ``catch``: exception types that fail one trial (recorded, the study goes on); any other exception
    fails the trial and propagates. The objective may raise ``optuna.TrialPruned``.
    """
    from tqdm.auto import tqdm

    counts = study_counts(study)
    limit = settings.max_failed_trials if settings.max_failed_trials is not None else settings.n_trials
    bar = tqdm(total=settings.n_trials, initial=min(counts.finished, settings.n_trials), desc=description,
               unit="trial", disable=not settings.progress)  # fmt: skip
    ran = 0
    try:
        while True:
            fail_stale_trials(study, settings.grace_period, settings.max_retry)
            counts = study_counts(study)
            bar.n = min(counts.finished, settings.n_trials)
            if counts.complete:
                bar.set_postfix(best=f"{study.best_value:.4f}", failed=counts.failed, refresh=False)
            bar.refresh()
            if counts.finished >= settings.n_trials:
                break
            if counts.failed >= limit and counts.waiting == 0:  # a queued retry still gets its chance
                logger.error("Study '%s' has %d failed trials (limit %d): stopping; see the fail reasons in the report",
                             study.study_name, counts.failed, limit)  # fmt: skip
                break
            if counts.waiting == 0 and counts.finished + counts.running >= settings.n_trials:
                time.sleep(settings.heartbeat_interval)  # the rest of the budget runs elsewhere: wait for it
                continue
            trial = study.ask()
            study.sampler = make_sampler(settings.seed, trial.number, settings.startup_trials)
            if _live_below(study, trial.number) >= settings.n_trials:
                trial.set_user_attr(SURPLUS, True)
                trial.set_user_attr(FAIL_REASON, "surplus: other workers had taken the whole budget")
                study.tell(trial, state=TrialState.FAIL)
                continue
            trial.set_user_attr(WORKER, f"{socket.gethostname()}:{os.getpid()}")
            _run_one(study, trial, objective, catch, settings)
            ran += 1
    finally:
        bar.close()
    return ran
