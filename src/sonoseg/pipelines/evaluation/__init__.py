"""Evaluation: the test split, predicted once with the best-on-val checkpoint and scored."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
