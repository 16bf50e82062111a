"""Ingestion: a source becomes the standardized sample store."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
