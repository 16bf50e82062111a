"""Registry: the evaluated model becomes a registered version; the promotion gate picks the champion."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
