"""Splitting: leak-aware labelled/unlabelled/val/test assignment."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
