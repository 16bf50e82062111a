"""Validation: GX expectations on the manifest and pixel checks; quarantine or fail."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
