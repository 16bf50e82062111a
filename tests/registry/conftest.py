"""A tiny trained checkpoint for the whole session and an MLflow store per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.registry import temporary_store
from support.training import train


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``best.pt`` of a 4-iteration supervised run at 32 px with 3 classes."""
    root = tmp_path_factory.mktemp("trained")
    _, result = train("supervised", root / "store", root / "models")
    return result.best_checkpoint


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    """The tracking URI of a fresh sqlite store in ``tmp_path`` (runs and artifacts stay there)."""
    with temporary_store(tmp_path) as uri:
        yield uri
