"""Project-specific Kedro datasets."""

from __future__ import annotations

from typing import Any

from kedro_datasets.yaml import YAMLDataset


class OptionalYAMLDataset(YAMLDataset):
    """A YAML file that may not exist yet: loading a missing file gives ``{}``.

    The tuned-params file is written by the opt-in tuning pipeline, but it is an input of the training
    node, and Kedro loads every input of a node before running it. A plain ``YAMLDataset`` would make
    training fail on a project that never tuned; with this one the node receives ``{}`` and decides
    (``training.use_tuned: true`` with ``{}`` is a clear error there, ``false`` ignores it).
    """

    def load(self) -> dict[str, Any]:
        if not self._exists():
            return {}
        return super().load() or {}
