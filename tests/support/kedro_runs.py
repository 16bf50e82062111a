"""Running sliced Kedro pipelines on in-memory catalogs, as Kedro's starters test them."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def copy_project(root: Path, files: tuple[str, ...] = ("pyproject.toml",)) -> Path:
    """A copy of the project's ``files``, ``conf/`` (no credentials) and ``src/`` at ``root``, so Kedro,
    DVC or kedro-airflow can run there without writing into the checkout."""
    root.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copy(PROJECT_ROOT / name, root / name)
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("credentials.yml"))
    shutil.copytree(PROJECT_ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return root


def base_parameters() -> dict[str, Any]:
    """All ``conf/base/parameters_*.yml`` blocks, as Kedro would load them."""
    params: dict[str, Any] = {}
    for path in sorted((PROJECT_ROOT / "conf" / "base").glob("parameters*.yml")):
        params.update(yaml.safe_load(path.read_text()) or {})
    return copy.deepcopy(params)


def param_datasets(params: dict[str, Any], prefix: str = "params:") -> dict[str, Any]:
    """``params:x`` and ``params:x.y`` entries for every key, like Kedro's catalog does."""
    entries = {}
    for key, value in params.items():
        entries[f"{prefix}{key}"] = value
        if isinstance(value, dict):
            entries.update(param_datasets(value, prefix=f"{prefix}{key}."))
    return entries


class FixedS3Settings:
    """Stands in for the credentials hook's lazy settings with known values."""

    def __init__(self, settings: Any) -> None:
        self._settings = settings

    def resolve(self) -> Any:
        if isinstance(self._settings, Exception):
            raise self._settings
        return self._settings


class KeptDataset(MemoryDataset):
    """A memory dataset the runner cannot release, so tests can read intermediate outputs."""

    def _release(self) -> None:
        pass


def run_in_memory(pipeline: Pipeline, inputs: dict[str, Any]) -> dict[str, Any]:
    """Run ``pipeline`` with every input held in memory; return every output's data."""
    catalog = DataCatalog({name: MemoryDataset(value, copy_mode="assign") for name, value in inputs.items()})
    outputs = {name: KeptDataset(copy_mode="assign") for name in pipeline.all_outputs()}
    for name, dataset in outputs.items():
        catalog[name] = dataset
    SequentialRunner().run(pipeline, catalog)
    return {name: dataset.load() for name, dataset in outputs.items()}
