"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


# Run only when asked for (`kedro run --pipelines tuning`): a study costs many trainings.
OPT_IN = frozenset({"tuning"})


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines; the default runs all but the opt-in ones, in dependency order."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(p for name, p in pipelines.items() if name not in OPT_IN)
    return pipelines
