"""Evaluation: any registered semi-supervised method on the current splits."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
