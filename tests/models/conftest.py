"""Shared pieces for the model-factory tests: tiny inputs, deterministic seeds."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def image() -> torch.Tensor:
    """A batch of two 1-channel 64x64 images."""
    return torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
