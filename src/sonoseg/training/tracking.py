"""Where the trainer reports metrics. The library stays independent of Kedro; MLflow is optional."""

from __future__ import annotations

from typing import Protocol


class Tracker(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def flush(self) -> None: ...


class NullTracker:
    """Reports nothing (tests, benchmarks, ranks other than 0)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def flush(self) -> None:
        pass


class MlflowTracker:
    """Logs to the run ``run_id`` (default: the active MLflow run), batching steps so that a sqlite
    store is not hit every step."""

    def __init__(self, flush_every: int = 25, run_id: str | None = None) -> None:
        self.flush_every = flush_every
        self.run_id = run_id
        self._pending: list = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(key, float(value), now, step) for key, value in metrics.items()]
        if len(self._pending) >= self.flush_every * max(1, len(metrics)):
            self.flush()

    def flush(self) -> None:
        import mlflow

        run = mlflow.active_run()
        run_id = self.run_id or (run.info.run_id if run is not None else None)
        if run_id is not None and self._pending:
            mlflow.MlflowClient().log_batch(run_id, metrics=self._pending)
        self._pending = []
